"""``sim``: the deterministic simulator's commands (register with ``cli.add_command(sim)``).

    sim scenarios                                   list scenarios
    sim run --scenario NAME --seed N [--json]       one run; a failing run prints its seed
    sim sweep [--scenario NAME] --seeds N [--json]  N seeds of one or every scenario
    sim scale [--users N] [--devices N] [--json]    FURPS traffic measured with real clients

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


#: bounds of ``sim scale`` (every user is a real client in this process: 100,000,000 ran
#: until it was killed)
MAX_SCALE_USERS = 20_000
MAX_SCALE_MINUTES = 24 * 60


@sim.command("scale")
@click.option("--users", type=int, default=200, show_default=True, help="Simulated population.")
@click.option("--minutes", type=float, default=10.0, show_default=True, help="Measured window.")
@click.option("--devices", type=int, default=1, show_default=True, help="Installations per user.")
@click.option("--group-share", type=float, default=0.3, show_default=True)
@click.option("--group-size", type=int, default=10, show_default=True)
@click.option("--no-read-receipts", is_flag=True, help="Users switched read receipts off.")
@click.option("--typing", is_flag=True, help="A typing indicator before every message.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def scale_cmd(
    ctx: click.Context,
    users: int,
    minutes: float,
    devices: int,
    group_share: float,
    group_size: int,
    no_read_receipts: bool,
    typing: bool,
    seed: int,
    as_json: bool,
) -> None:
    """FURPS traffic, measured: real clients on a lossless shard, scaled to 10K users sending
    a 100-character message 4 times a minute."""
    from sim.traffic import TrafficModel, measure

    if not (1 <= devices <= 3 and 0 <= group_share <= 1 and 2 <= group_size <= users):
        raise click.BadParameter("devices 1-3, group share 0..1, 2 <= group size <= users")
    if not (0 < minutes <= MAX_SCALE_MINUTES and 6 <= users <= MAX_SCALE_USERS):
        raise click.BadParameter(
            f"0 < minutes <= {MAX_SCALE_MINUTES} and 6 to {MAX_SCALE_USERS:,} users (real clients"
            " in this process: 10,000 users take minutes; the figures scale to 10K users)"
        )
    doc = measure(
        TrafficModel(
            users=users,
            minutes=minutes,
            devices_per_user=devices,
            group_share=group_share,
            group_size=group_size,
            read_receipts=not no_read_receipts,
            typing=typing,
            seed=seed,
        )
    )
    if _json_wanted(ctx, as_json):
        _emit(doc)
        return
    click.echo(
        f"{doc['messages']} messages from {users} users over {minutes:g} min (virtual), "
        f"delivery {doc['delivery_rate']:.4f}"
    )
    for kind, k in doc["by_kind"].items():
        click.echo(
            f"  {kind:10s} {k['frames_per_message']:6.3f} frames/message, "
            f"mean {k['mean_frame_bytes']:6.1f} B, in {k['ingress_bytes_per_message']:7.1f} B, "
            f"out {k['egress_bytes_per_message']:7.1f} B per message"
        )
    click.echo(
        f"at {doc['furps_messages_per_s']} msg/s (10K users): "
        f"ingress {doc['ingress_mbps']:.2f} Mbps (target 2: "
        f"{'ok' if doc['ingress_ok'] else 'MISS'}), ingress+egress "
        f"{doc['ingress_plus_egress_mbps']:.2f} Mbps (budget 10: "
        f"{'ok' if doc['total_within_budget'] else 'MISS'}), with NATS framing "
        f"{doc['with_nats_framing_mbps']:.2f} Mbps (budget 10: "
        f"{'ok' if doc['framed_within_budget'] else 'MISS'})"
    )
