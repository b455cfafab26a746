"""Scenarios: who talks to whom, when, and which faults hit them. Sizes scale with ``scale``.

Every scenario draws the base link faults from the seed (:func:`base_faults`: drop up to 50 %,
duplicates, a delay tail, reordering, tampering) and adds its own fault on top. All times are
virtual offsets from the start of the run; :func:`sim.runner.run` heals everything at the end of
the activity window and drains until every message is delivered and acknowledged.

Adding a scenario: write ``def build(w: World, r: random.Random, scale: float) -> None`` and
register it in :data:`SCENARIOS`. Groups: see :func:`groups` (the hook waits for chatcore.group).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sim.network import Faults
from sim.runner import DAY_MS, Scenario, User, World

__all__ = ["SCENARIOS", "ScenarioSpec", "base_faults"]


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    name: str
    summary: str
    build: Scenario | None
    unavailable: str = ""


def base_faults(r: random.Random, *, max_drop: float = 0.5) -> Faults:
    return Faults(
        drop=r.uniform(0.0, max_drop),
        duplicate=r.uniform(0.0, 0.2),
        delay_base_ms=r.randrange(5, 80),
        delay_mean_ms=r.choice((10.0, 50.0, 200.0, 1_000.0)),
        reorder=r.uniform(0.0, 0.3),
        reorder_ms=r.choice((500, 2_000, 10_000)),
        tamper=r.uniform(0.0, 0.03),
    )


def _n(base: int, scale: float, lo: int = 1) -> int:
    return max(lo, round(base * scale))


def _body(r: random.Random) -> bytes:
    return bytes(r.randrange(97, 123) for _ in range(r.randrange(1, 100)))


def _chat(
    w: World, r: random.Random, a: User, b: User, n: int, window_ms: int, start: int = 0
) -> None:
    """``n`` messages each way between ``a`` and ``b`` at random times, from random devices."""
    for src, dst in ((a, b), (b, a)):
        for _ in range(n):
            dev = r.choice(src.devices)
            w.send(start + r.randrange(window_ms), dev, dst.name, _body(r))


def one_to_one(w: World, r: random.Random, scale: float) -> None:
    w.net.faults = base_faults(r)
    a, b = w.add_user("alice"), w.add_user("bob")
    _chat(w, r, a, b, _n(25, scale), 60_000)


def multi_device(w: World, r: random.Random, scale: float) -> None:
    w.net.faults = base_faults(r)
    a = w.add_user("alice", r.randrange(2, 4))
    b = w.add_user("bob", r.randrange(2, 4))
    _chat(w, r, a, b, _n(12, scale), 60_000)


def many_pairs(w: World, r: random.Random, scale: float) -> None:
    w.net.faults = base_faults(r, max_drop=0.3)
    users = [w.add_user(f"u{i}") for i in range(_n(40, scale, 2))]
    window = 60_000
    for i, u in enumerate(users):  # each user talks to ~2 others: a sparse random graph
        for _ in range(2):
            j = r.randrange(len(users) - 1)
            v = users[j if j < i else j + 1]
            w.send(r.randrange(window), u.devices[0], v.name, _body(r))
            w.send(r.randrange(window), v.devices[0], u.name, _body(r))


def offline_days(w: World, r: random.Random, scale: float) -> None:
    w.net.faults = base_faults(r, max_drop=0.3)
    a = w.add_user("alice")
    b = w.add_user("bob", 2)  # bob/0 is the phone that goes away; bob/1 stays online
    away = r.randrange(DAY_MS, 5 * DAY_MS)  # within the store's 7-day retention
    w.offline(10_000, b.devices[0], away)
    _chat(w, r, a, b, _n(6, scale), 60_000)  # before and while going offline
    for _ in range(_n(10, scale)):  # spread over the days bob/0 is gone
        t = 10_000 + r.randrange(away)
        if r.random() < 0.6:
            w.send(t, a.devices[0], "bob", _body(r))
        else:
            w.send(t, b.devices[1], "alice", _body(r))
    w.net.faults.tamper = 0.0 if r.random() < 0.5 else w.net.faults.tamper


def crash_restart(w: World, r: random.Random, scale: float) -> None:
    w.net.faults = base_faults(r)
    users = [w.add_user(n, r.randrange(1, 3)) for n in ("alice", "bob", "carol")]
    for i in range(3):
        for j in range(i + 1, 3):
            _chat(w, r, users[i], users[j], _n(6, scale), 60_000)
    for u in users:
        for d in u.devices:
            for _ in range(r.randrange(1, 4)):
                w.crash(r.randrange(60_000), d, r.randrange(100, 30_000))


def store_restart(w: World, r: random.Random, scale: float) -> None:
    w.net.faults = base_faults(r)
    a, b = w.add_user("alice", r.randrange(1, 3)), w.add_user("bob")
    _chat(w, r, a, b, _n(15, scale), 60_000)
    t = 0
    for _ in range(r.randrange(1, 4)):
        t += r.randrange(2_000, 20_000)
        down = r.randrange(500, 30_000)
        w.store_restart(t, down)
        t += down


def partition(w: World, r: random.Random, scale: float) -> None:
    w.net.faults = base_faults(r)
    users = [w.add_user(n, r.randrange(1, 3)) for n in ("alice", "bob", "carol", "dave")]
    for i in range(4):
        j = (i + 1) % 4
        _chat(w, r, users[i], users[j], _n(5, scale), 90_000)
    devs = [d for u in users for d in u.devices]
    for _ in range(r.randrange(1, 4)):
        side = r.sample(devs, r.randrange(1, len(devs)))
        w.partition(r.randrange(60_000), side, r.randrange(5_000, 120_000))


def chaos(w: World, r: random.Random, scale: float) -> None:
    """Every fault at once: crashes, an offline device, store restarts and partitions."""
    w.net.faults = base_faults(r)
    users = [w.add_user(n, r.randrange(1, 3)) for n in ("alice", "bob", "carol")]
    for i in range(3):
        _chat(w, r, users[i], users[(i + 1) % 3], _n(6, scale), 90_000)
    devs = [d for u in users for d in u.devices]
    for d in r.sample(devs, 2):
        w.crash(r.randrange(90_000), d, r.randrange(100, 20_000))
    w.offline(r.randrange(30_000), r.choice(devs), r.randrange(60_000, 3_600_000))
    w.store_restart(r.randrange(10_000, 80_000), r.randrange(500, 15_000))
    w.partition(r.randrange(90_000), r.sample(devs, 2), r.randrange(5_000, 60_000))


def groups(w: World, r: random.Random, scale: float) -> None:
    """Hook for group chat (chatcore.group is not ready yet).

    To add it: give :class:`sim.node.Device` a ``send_group(group, body)`` that calls the group
    engine and publishes its one ciphertext to the group topic (``group_subject``), subscribe
    every member device to that topic (``w.store.listeners`` + a cursor per subject), register
    each group message with ``w.oracle.sent`` (expected = every member installation except the
    sender, plus the sender's other installations), and route group frames in
    ``Device._process``. The invariants in :func:`sim.report.check` already apply per
    conversation; add a membership invariant (nothing shown after removal, nothing from a
    removed member). Sizes: 201 members at scale 1.
    """
    raise NotImplementedError("groups: waiting for chatcore.group")


SCENARIOS: dict[str, ScenarioSpec] = {
    s.name: s
    for s in (
        ScenarioSpec("one-to-one", "2 users, ~25 messages each way, lossy network", one_to_one),
        ScenarioSpec(
            "multi-device", "2 users with 2-3 installations each, sync copies", multi_device
        ),
        ScenarioSpec("many-pairs", "40 clients x scale in a sparse random graph", many_pairs),
        ScenarioSpec(
            "offline-days", "a phone offline 1-5 days, catching up from the store", offline_days
        ),
        ScenarioSpec(
            "crash-restart", "3 users, devices crash and restart from their stores", crash_restart
        ),
        ScenarioSpec(
            "store-restart", "the delivery store restarts 1-3 times mid-traffic", store_restart
        ),
        ScenarioSpec("partition", "devices cut off from the store, then healed", partition),
        ScenarioSpec("chaos", "all faults together", chaos),
        ScenarioSpec("groups", "group chat (hook)", None, "chatcore.group is not ready yet"),
    )
}


def available() -> list[str]:
    return [n for n, s in SCENARIOS.items() if s.build is not None]
