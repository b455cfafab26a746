"""Fixtures for CLI tests: run ``logos-chat`` as a real console script (subprocess) or in process
(click's CliRunner, for the fast error matrix), against a devnet in a temporary directory.

    run_cli(*args, env={...}, inproc=False) -> CliResult(code, out, err, doc)
    devnet_dir   module: a devnet directory; whatever runs in it is stopped at teardown
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devnet.manager import Devnet

CLI = Path(sys.executable).parent / "logos-chat"
PASSPHRASE = "test passphrase"


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def doc(self) -> Any:
        return json.loads(self.out)

    def assert_one_line_error(self, code: int | None = None, contains: str | None = None) -> None:
        """Failed with a single ``error: ...`` line on stderr and no traceback."""
        assert self.code != 0, (self.out, self.err)
        if code is not None:
            assert self.code == code, (self.code, self.err)
        assert "Traceback" not in self.err and "Traceback" not in self.out, self.err
        lines = [ln for ln in self.err.splitlines() if ln.strip()]
        assert len(lines) == 1, self.err
        assert lines[0].startswith("error: "), lines[0]
        if contains is not None:
            assert contains.lower() in lines[0].lower(), lines[0]


RunCli = Callable[..., CliResult]


def base_env(devnet_dir: Path, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGOS_CHAT_")}
    env.update(
        LOGOS_CHAT_DEVNET_DIR=str(devnet_dir),
        LOGOS_CHAT_PASSPHRASE=PASSPHRASE,
        # a home that does not exist: lookups without --home read the chain directly
        LOGOS_CHAT_HOME=str(tmp / "no-home"),
    )
    return env


def make_runner(devnet_dir: Path, tmp: Path) -> RunCli:
    def run(*args: str, env: dict[str, str] | None = None, inproc: bool = False) -> CliResult:
        full_env = base_env(devnet_dir, tmp)
        full_env.update(env or {})
        if inproc:
            from click.testing import CliRunner

            from cli.main import cli

            unset = {k: None for k in os.environ if k.startswith("LOGOS_CHAT_")}
            r = CliRunner().invoke(
                cli, list(args), env={**unset, **full_env}, prog_name="logos-chat"
            )
            if r.exception is not None and not isinstance(r.exception, SystemExit):
                raise r.exception
            return CliResult(r.exit_code, r.stdout, r.stderr)
        p = subprocess.run(
            [str(CLI), *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        return CliResult(p.returncode, p.stdout, p.stderr)

    return run


@pytest.fixture(scope="module")
def devnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("devnet")
    try:
        yield d
    finally:
        Devnet(d).down()  # stops exactly the pids recorded in d/devnet.json


@pytest.fixture(scope="module")
def run_cli(devnet_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunCli:
    return make_runner(devnet_dir, tmp_path_factory.mktemp("cli"))
