# Logos Chat developer entry points. Everything is idempotent.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/logos-chat
STAMP  := $(VENV)/.setup-stamp
DEMO_DIR ?= $(CURDIR)/.demo

.PHONY: setup demo test bench lint contracts clean devnet-down

setup: $(STAMP) node_modules/.stamp

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

package-lock.json: package.json
	npm install --package-lock-only --no-audit --no-fund --loglevel=error

demo: setup
	bash scripts/demo.sh "$(DEMO_DIR)"

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: setup
	$(PY) -m bench

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

contracts: setup
	$(PY) -m contracts.build

devnet-down:
	-LOGOS_CHAT_DEVNET_DIR="$(DEMO_DIR)/devnet" $(CLI) devnet down

clean:
	rm -rf $(VENV) node_modules .demo .pytest_cache
