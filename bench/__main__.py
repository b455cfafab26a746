"""Run every benchmark in turn: ``python -m bench`` (``make bench``).

Each one prints its figures beside their targets; see docs/benchmarks.md for what each
measures and for single-benchmark commands.
"""

from __future__ import annotations

import subprocess
import sys

BENCHES = [
    "bench.ratchet",
    "bench.session_setup",
    "bench.chat_wire",
    "bench.transport_latency",
    "bench.chat_latency",
    "bench.gas",
    "bench.group",
    "bench.discovery_scale",
    "bench.identity",
    "bench.store_scale",
]


def main() -> int:
    failed = []
    for name in BENCHES:
        print(f"\n### {name}", flush=True)
        rc = subprocess.call([sys.executable, "-m", name, *sys.argv[1:]])
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
