"""Small helpers for the benchmarks: timing and a 'figure | target | ok' table (or --json)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    figure: float
    unit: str
    target: str
    ok: bool | None  # None = informational


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--n", type=int, default=0, help="iterations (0 = default)")
    return p.parse_args()


def best_rate(fn: Callable[[int], None], n: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` operations per second of ``fn(n)`` (which performs n operations)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t0)
    return n / best


def report(
    title: str, rows: list[Row], as_json: bool, extra: dict[str, object] | None = None
) -> None:
    if as_json:
        doc: dict[str, object] = {"bench": title, "rows": [asdict(r) for r in rows]}
        if extra:
            doc.update(extra)
        print(json.dumps(doc, indent=2))
        return
    print(title)
    w = max(len(r.name) for r in rows)
    for r in rows:
        status = "" if r.ok is None else ("ok" if r.ok else "MISS")
        fig = f"{r.figure:,.2f} {r.unit}" if r.unit == "×" else f"{r.figure:,.1f} {r.unit}"
        print(f"  {r.name:<{w}} | {fig:>18} | {r.target:<28} | {status}")
