"""Scenarios: who talks to whom, when, and which faults hit them. Sizes scale with ``scale``.

Every scenario draws the base link faults from the seed (:func:`base_faults`: drop up to 50 %,
duplicates, a delay tail, reordering, tampering) and adds its own fault on top. All times are
virtual offsets from the start of the run; :func:`sim.runner.run` heals everything at the end of
the activity window and drains until every message is delivered and acknowledged.

Adding a scenario: write ``def build(w: World, r: random.Random, scale: float) -> None`` and
register it in :data:`SCENARIOS`. Group scenarios drive the real GroupChat through
``w.group_create / group_change / group_send`` (see :class:`sim.node.Device`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from chatcore.group.consts import RETIRED_CHAIN_MS
from sim.network import Faults
from sim.runner import DAY_MS, Scenario, User, World

__all__ = ["SCENARIOS", "ScenarioSpec", "base_faults"]


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    name: str
    summary: str
    build: Scenario | None
    unavailable: str = ""
    sweep: bool = True  # part of `sim sweep` without --scenario


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
    """Group chats (real GroupChat + Engine): 2 x scale groups of 3-12 members drawn from 16 x
    scale users (30 % with 2 installations), ~20 messages per group, and membership changes:
    a promotion, two admins changing membership concurrently (an add and a removal within
    0.3 s), a leave, and a change while a member is partitioned. Base link faults plus crashes,
    a store restart and the partition."""
    w.net.faults = base_faults(r)
    pool = [w.add_user(f"u{i:02d}", 2 if r.random() < 0.3 else 1) for i in range(_n(16, scale))]
    window = 150_000
    for g in range(_n(2, scale)):
        label = f"g{g}"
        members = r.sample(pool, r.randrange(3, 13))
        outsiders = [u for u in pool if u not in members]
        r.shuffle(outsiders)
        creator, second = members[0], members[1]
        t = r.randrange(500, 3_000)
        w.group_create(t, r.choice(creator.devices), label, members[1:])
        senders: list[tuple[User, int]] = [(m, t) for m in members]  # (who, from when)
        # a promotion: two admins from here on (if it reached `second` in time)
        t += r.randrange(3_000, 15_000)
        w.group_change(t, r.choice(creator.devices), label, "promote", second)
        # two admins change membership concurrently: an add and a removal within 0.3 s
        t += r.randrange(5_000, 20_000)
        removed: list[User] = []
        if outsiders:
            j = outsiders.pop()
            w.group_change(t, r.choice(creator.devices), label, "add", j)
            senders.append((j, t + 5_000))
        if len(members) >= 4:
            k = members[-1]
            removed.append(k)
            at = t + r.randrange(0, 300)
            w.group_change(at, r.choice(second.devices), label, "remove", k)
            # it keeps its state and posts after the hour members keep its chain (+10 min:
            # every member has applied the removal by then)
            w.group_stale_sender(at - 1, k.devices[0], label, RETIRED_CHAIN_MS + 600_000)
        # a member leaves
        t += r.randrange(3_000, 15_000)
        if len(members) >= 5:
            leaver = members[2]
            w.group_change(t, r.choice(leaver.devices), label, "leave")
            removed.append(leaver)
        # a change while a member is partitioned (its devices cut from the store)
        t += r.randrange(3_000, 15_000)
        stay = [m for m in members[2:] if m not in removed]
        if stay:
            p = r.choice(stay)
            cut = r.randrange(20_000, 90_000)
            w.partition(t - 2_000, p.devices, cut)
            if outsiders and r.random() < 0.5:
                j2 = outsiders.pop()
                w.group_change(t, r.choice(creator.devices), label, "add", j2)
                senders.append((j2, t + 5_000))
            elif len(stay) >= 2:
                victim = r.choice([m for m in stay if m is not p])
                w.group_change(t, r.choice(creator.devices), label, "remove", victim)
        for _ in range(_n(20, scale)):
            who, since = r.choice(senders)
            at = since + 1_000 + r.randrange(max(1, window - since))
            w.group_send(at, r.choice(who.devices), label, _body(r))
        w.group_hostile(r.randrange(20_000, window), label)
    devs = [d for u in pool for d in u.devices]
    for d in r.sample(devs, 2):
        w.crash(r.randrange(window), d, r.randrange(100, 20_000))
    w.store_restart(r.randrange(10_000, window), r.randrange(500, 15_000))


def group_adversary(w: World, r: random.Random, scale: float) -> None:
    """Removed members who keep their state and keys and fight back: 2 x scale groups of 4-8
    members from 10 x scale users (30 % with 2 installations). In each, the creator makes
    ``x`` an admin; ``x`` adds someone, promotes a member, renames the group, maybe removes
    someone; the creator then removes ``x`` (and, in half the groups, a plain member ``y``).
    After their removal ``x`` and ``y`` sign 3-8 ops each on pasts they hold
    (``World.group_adversary``: adds of 1-2 accomplices, removals, promotions, renames,
    leaves dated back to the create op) and send them pairwise to random member devices and
    to the group topic at random times, some at once (before members read the removal).
    Honest admins keep changing the group and members keep writing. Base link faults plus a
    partition around the removal, crashes of honest devices and a store restart."""
    w.net.faults = base_faults(r)
    pool = [w.add_user(f"u{i:02d}", 2 if r.random() < 0.3 else 1) for i in range(_n(10, scale, 6))]
    window = 150_000
    honest_devs: list = []  # type: ignore[type-arg]
    bad: set[str] = set()
    for g in range(_n(2, scale)):
        label = f"g{g}"
        members = r.sample(pool, r.randrange(4, min(9, len(pool) + 1)))
        outsiders = [u for u in pool if u not in members]
        r.shuffle(outsiders)
        creator, x, h = members[0], members[1], members[2]
        crew = [w.add_user(f"a{g}{i}") for i in range(r.randrange(1, 3))]
        t = r.randrange(500, 3_000)
        w.group_create(t, r.choice(creator.devices), label, members[1:])
        senders: list[tuple[User, int, int]] = []  # (who, from, until)
        t += r.randrange(3_000, 10_000)
        w.group_change(t, r.choice(creator.devices), label, "promote", x)
        # x acts as an admin
        tx = t + r.randrange(5_000, 15_000)
        if outsiders:
            j = outsiders.pop()
            w.group_change(tx, x.devices[0], label, "add", j)
            senders.append((j, tx + 5_000, window))
        w.group_change(tx + r.randrange(200, 5_000), x.devices[0], label, "promote", h)
        w.group_change(tx + r.randrange(200, 5_000), x.devices[0], label, "rename", name="x's")
        y = members[-1] if len(members) >= 5 and r.random() < 0.5 else None
        rest = [m for m in members[3:] if m is not y]
        if len(rest) >= 2 and r.random() < 0.5:
            gone = rest.pop()
            w.group_change(tx + r.randrange(200, 5_000), x.devices[0], label, "remove", gone)
        # the creator removes x (and y); a member is cut off around it
        tr = tx + r.randrange(8_000, 20_000)
        w.group_change(tr, r.choice(creator.devices), label, "remove", x)
        w.group_adversary(tr - 1, x.devices[0], label, crew, _times(r, tr, window))
        bad.add(x.name)
        senders.append((x, t, tr + 3_000))
        if y is not None:
            ty = tr + r.randrange(0, 5_000)
            w.group_change(ty, r.choice(creator.devices), label, "remove", y)
            w.group_adversary(ty - 1, y.devices[0], label, crew, _times(r, ty, window))
            bad.add(y.name)
            senders.append((y, t, ty + 3_000))
        if rest:
            p = r.choice(rest)
            w.partition(tr - r.randrange(0, 5_000), p.devices, r.randrange(5_000, 60_000))
        # honest admins go on: the junior admin h (made admin by x), then the creator
        th = tr + r.randrange(2_000, 20_000)
        if outsiders:
            j = outsiders.pop()
            w.group_change(th, r.choice(h.devices), label, "add", j)
            senders.append((j, th + 5_000, window))
        elif rest:
            w.group_change(th, r.choice(h.devices), label, "promote", r.choice(rest))
        w.group_change(th + r.randrange(1_000, 20_000), r.choice(creator.devices), label,
                       "rename", name=f"group {g}")  # fmt: skip
        senders += [(m, t, window) for m in members if m.name not in bad]
        for _ in range(_n(20, scale)):
            who, since, until = r.choice(senders)
            at = since + 1_000 + r.randrange(max(1, until - since))
            w.group_send(at, r.choice(who.devices), label, _body(r))
        honest_devs += [d for m in members if m.name not in bad for d in m.devices]
        w.group_hostile(r.randrange(20_000, window), label)
    honest = sorted(
        {d.name: d for d in honest_devs if d.user not in bad}.values(), key=lambda d: d.name
    )
    for d in r.sample(honest, min(2, len(honest))):
        w.crash(r.randrange(window), d, r.randrange(100, 20_000))
    w.store_restart(r.randrange(10_000, window), r.randrange(500, 15_000))


def _times(r: random.Random, removed_at: int, window: int) -> list[int]:
    """When a removed member publishes its forgeries: half within 20 s of its removal (often
    before members read it), the rest until the end of the window."""
    n = r.randrange(3, 9)
    return [
        removed_at + (r.randrange(200, 20_000) if i % 2 else r.randrange(200, window))
        for i in range(n)
    ]


def group_201(w: World, r: random.Random, scale: float) -> None:
    """One group of 200 x scale + 1 members (one installation each), 10 active senders,
    5 messages each over a minute once the group is set up; 10 % loss, no other faults but
    delay/duplicates/reordering. Reports delivery, latency and bytes on the wire."""
    w.net.faults = Faults(
        drop=0.10, duplicate=0.02, delay_base_ms=20, delay_mean_ms=50.0, reorder=0.05,
        reorder_ms=500, tamper=0.0,
    )  # fmt: skip
    w.cfg.group_member_check = False  # one extra state load per delivery: too slow at 201
    members = [w.add_user(f"m{i:03d}") for i in range(_n(200, scale, 2) + 1)]
    w.group_create(1_000, members[0].devices[0], "big", members[1:])
    active = r.sample(members, min(10, len(members)))
    for m in active:
        for _ in range(_n(5, scale if scale < 1 else 1)):
            w.group_send(60_000 + r.randrange(60_000), m.devices[0], "big", _body(r))


def _talk(w: World, r: random.Random, users: list[User], n: int, window_ms: int) -> None:
    """``n`` messages each way around a ring of users, each from the device the sender uses
    at that moment (devices are linked, rotated and revoked during these scenarios)."""
    for i, a in enumerate(users):
        b = users[(i + 1) % len(users)]
        for src, dst in ((a, b), (b, a)):
            for _ in range(n):
                w.send_from(r.randrange(window_ms), src, dst.name, _body(r))


def rotation(w: World, r: random.Random, scale: float) -> None:
    """Signed prekeys rotate mid-conversation, and 1-2 installations are replaced: the new
    one is registered, the old one is revoked once everything it sent was acknowledged."""
    w.net.faults = base_faults(r)
    users = [w.add_user(n, r.randrange(1, 3)) for n in ("alice", "bob", "carol")]
    window = 120_000
    _talk(w, r, users, _n(6, scale), window)
    devs = [d for u in users for d in u.devices]
    for d in r.sample(devs, min(len(devs), r.randrange(2, 5))):
        w.rotate_prekey(r.randrange(window), d)
    for d in r.sample(devs, r.randrange(1, 3)):
        w.replace_device(r.randrange(10_000, 90_000), d)
    if r.random() < 0.5:
        w.crash(r.randrange(window), r.choice(devs), r.randrange(100, 20_000))


def recovery(w: World, r: random.Random, scale: float) -> None:
    """A user loses every device: all are revoked at once (what they sent and had not yet
    delivered is lost with them) and a new installation is registered 1-60 s later, with
    an empty store; the conversation goes on with it."""
    w.net.faults = base_faults(r)
    users = [w.add_user("alice", r.randrange(1, 3)), w.add_user("bob"), w.add_user("carol", 2)]
    window = 120_000
    _talk(w, r, users, _n(6, scale), window)
    w.recover(r.randrange(20_000, 60_000), users[0], r.randrange(1_000, 60_000))


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
        ScenarioSpec("groups", "group chats with membership changes under every fault", groups),
        ScenarioSpec(
            "group-adversary",
            "removed members sign dated-back membership ops and publish them",
            group_adversary,
        ),
        ScenarioSpec(
            "rotation", "prekeys rotate, installations replaced and revoked mid-chat", rotation
        ),
        ScenarioSpec("recovery", "a user loses every device and recovers on a new one", recovery),
        ScenarioSpec(
            "group-201",
            "one 201-member group, 10 senders, 10 % loss (slow: not in the default sweep)",
            group_201,
            sweep=False,
        ),
    )
}


def available() -> list[str]:
    return [n for n, s in SCENARIOS.items() if s.build is not None]


def default_sweep() -> list[str]:
    return [n for n, s in SCENARIOS.items() if s.build is not None and s.sweep]
