"""``sim``: the deterministic simulator's commands (register with ``cli.add_command(sim)``).

    sim scenarios                                   list scenarios
    sim run --scenario NAME --seed N [--json]       one run; a failing run prints its seed
    sim sweep [--scenario NAME] --seeds N [--json]  N seeds of one or every scenario
    sim scale [--devices N] [--json]                FURPS bandwidth estimate from real frames

Exit status: 0 when every run met every invariant, 1 otherwise (2 for bad usage).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

__all__ = ["sim"]


def _json_wanted(ctx: click.Context, flag: bool) -> bool:
    parent = ctx.find_root().obj
    return flag or bool(getattr(parent, "json", False))


def _emit(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


@click.group()
def sim() -> None:
    """Deterministic simulation: the real 1:1 and group engines on a faulty simulated network."""


@sim.command("scenarios")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def scenarios_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the scenarios."""
    from sim.scenarios import SCENARIOS

    doc = [
        {
            "name": s.name,
            "summary": s.summary,
            "available": s.build is not None,
            "unavailable": s.unavailable or None,
        }
        for s in SCENARIOS.values()
    ]
    if _json_wanted(ctx, as_json):
        _emit({"scenarios": doc})
        return
    for s in doc:
        mark = "" if s["available"] else f"  (unavailable: {s['unavailable']})"
        click.echo(f"{s['name']:15s} {s['summary']}{mark}")


def _check_scenario(name: str) -> None:
    from sim.scenarios import SCENARIOS

    if name not in SCENARIOS:
        raise click.BadParameter(f"unknown scenario {name!r}; see `sim scenarios`")
    if SCENARIOS[name].build is None:
        raise click.BadParameter(f"{name}: {SCENARIOS[name].unavailable}")


@sim.command("run")
@click.option("--scenario", "name", required=True, help="Scenario name (see `sim scenarios`).")
@click.option("--seed", type=int, required=True, help="The seed; the same seed replays exactly.")
@click.option("--scale", type=float, default=1.0, show_default=True, help="Size multiplier.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def run_cmd(ctx: click.Context, name: str, seed: int, scale: float, as_json: bool) -> None:
    """Run one scenario with one seed."""
    from sim.runner import run

    _check_scenario(name)
    r = run(name, seed, scale)
    if _json_wanted(ctx, as_json):
        _emit(r.as_dict())
    else:
        status = "OK" if r.ok else "FAILED"
        click.echo(
            f"{status} {name} seed={seed} scale={scale}: delivery {r.delivery_rate:.4f} "
            f"({r.deliveries}/{r.expected_deliveries}), {r.messages} messages, "
            f"{r.devices} devices, {r.bytes_on_wire} bytes on the wire, latency p50/p90/p99 "
            f"{r.latency_ms['p50']}/{r.latency_ms['p90']}/{r.latency_ms['p99']} ms virtual, "
            f"{r.virtual_ms} ms simulated in {r.wall_s:.2f} s"
        )
        click.echo(f"digest {r.digest}")
        for v in r.violations:
            click.echo(f"  violation: {v}")
    if not r.ok:
        click.echo(
            f"failing seed: {seed} (replay: sim run --scenario {name} --seed {seed} "
            f"--scale {scale})",
            err=True,
        )
        sys.exit(1)


@sim.command("sweep")
@click.option("--scenario", "name", default=None, help="One scenario (default: every one).")
@click.option("--seeds", type=int, required=True, help="Seeds per scenario: 0..N-1.")
@click.option("--first-seed", type=int, default=0, show_default=True)
@click.option("--scale", type=float, default=1.0, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True, help="Processes.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def sweep_cmd(
    ctx: click.Context,
    name: str | None,
    seeds: int,
    first_seed: int,
    scale: float,
    workers: int,
    as_json: bool,
) -> None:
    """Run many seeds; report totals and every failing seed."""
    from sim.runner import sweep
    from sim.scenarios import default_sweep

    if seeds < 1:
        raise click.BadParameter("--seeds must be >= 1")
    if name is not None:
        _check_scenario(name)
    names = [name] if name else default_sweep()  # group-201 only with --scenario
    doc = sweep(names, seeds, scale=scale, workers=workers, first_seed=first_seed)
    if _json_wanted(ctx, as_json):
        _emit(doc)
    else:
        for n, p in doc["scenarios"].items():
            click.echo(
                f"{n:15s} runs={p['runs']} violations={p['violations']} "
                f"delivery min/mean={p['delivery_rate_min']:.4f}/{p['delivery_rate_mean']:.4f} "
                f"p99max={p['p99_max_ms']} ms cpu={p['wall_s']} s failed={p['failed_seeds'][:10]}"
            )
        click.echo(f"{doc['runs']} runs, {doc['violations']} violations, {doc['wall_s']} s")
    for f in doc["failed_seeds"]:
        click.echo(f"failing seed: {f['scenario']} {f['seed']}", err=True)
    if doc["failed_seeds"]:
        sys.exit(1)


@sim.command("scale")
@click.option("--devices", type=int, default=1, show_default=True, help="Installations per user.")
@click.option("--group-share", type=float, default=0.3, show_default=True)
@click.option("--group-members", type=int, default=10, show_default=True)
@click.option("--no-receipts", is_flag=True, help="Leave delivered-receipts out.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def scale_cmd(
    ctx: click.Context,
    devices: int,
    group_share: float,
    group_members: int,
    no_receipts: bool,
    as_json: bool,
) -> None:
    """FURPS estimate: 10K users on one shard, a 100-character message 4 times a minute."""
    from sim.scale import Assumptions, estimate

    if devices not in (1, 2, 3) or not 0 <= group_share <= 1 or group_members < 2:
        raise click.BadParameter("devices 1-3, group share 0..1, group members >= 2")
    doc = estimate(
        Assumptions(
            devices_per_user=devices,
            group_share=group_share,
            group_members=group_members,
            receipts=not no_receipts,
        )
    )
    if _json_wanted(ctx, as_json):
        _emit(doc)
        return
    m = doc["measured_frames"]
    click.echo(
        f"measured: steady 1:1 frame {m['steady_frame']} B, {m['frames_per_message']} frame(s) "
        f"/ message = {m['steady_bytes_per_message']} B; first contact {m['first_contact_bytes']} B"
    )
    click.echo(
        f"{doc['messages_per_s']} msg/s: ingress {doc['ingress_bps'] / 1e6:.2f} Mbps, "
        f"ingress+egress {doc['ingress_plus_egress_bps'] / 1e6:.2f} Mbps, with NATS framing "
        f"{doc['with_nats_framing_bps'] / 1e6:.2f} Mbps "
        f"({doc['bytes_per_message_total']} B/message; budget 1875)"
    )
