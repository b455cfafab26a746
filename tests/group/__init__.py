"""Test harness for the group core: a seeded in-memory world that routes Outgoing values."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from chatcore.errors import GroupError
from chatcore.group import GroupState, InstallationKey, Outgoing, Publish, SendTo
from chatcore.group.consts import KIND_DISTRIBUTION, KIND_GROUP_OP, KIND_WELCOME


class SeededRng:
    """``rng(n) -> bytes`` from a seed (deterministic tests)."""

    def __init__(self, seed: int) -> None:
        self._r = random.Random(seed)

    def __call__(self, n: int) -> bytes:
        return self._r.randbytes(n)


@dataclass
class Device:
    identity: bytes
    key: InstallationKey
    state: GroupState | None = None
    held: list[tuple[bytes, bytes]] = field(default_factory=list)  # pairwise before joining
    online: bool = True
    inbox: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # while offline

    @property
    def inst(self) -> bytes:
        return self.key.public


class World:
    """Identities with devices, a directory, and a router for Outgoing values."""

    def __init__(self, seed: int = 1, *, clock: bool = False) -> None:
        # clock=True: receivers pass ``now_ms`` (as GroupChat does), so a leaver's chains
        # are retired rather than dropped; False keeps the clock-less core behaviour
        self.clock = clock
        self.rng = SeededRng(seed)
        self.directory: dict[bytes, list[bytes]] = {}
        self.devices: dict[bytes, Device] = {}
        self.now = 1_700_000_000_000
        self.published: list[bytes] = []

    def person(self, n_devices: int = 1) -> bytes:
        identity = self.rng(32)
        self.directory[identity] = []
        for _ in range(n_devices):
            self.add_device(identity)
        return identity

    def add_device(self, identity: bytes) -> Device:
        dev = Device(identity, InstallationKey.generate(self.rng))
        self.directory[identity].append(dev.inst)
        self.devices[dev.inst] = dev
        return dev

    @property
    def t(self) -> int | None:
        return self.now if self.clock else None

    def owner(self, inst: bytes) -> bytes:
        return self.devices[inst].identity

    def dev(self, identity: bytes, i: int = 0) -> Device:
        return self.devices[self.directory[identity][i]]

    def create(self, creator: bytes, members: list[bytes], name: str = "g") -> bytes:
        d = self.dev(creator)
        d.state, out = GroupState.create(
            self.rng(32), name, creator, d.key, members, self.directory, self.rng, self.now
        )
        self.route(d.inst, out)
        return d.state.group_id

    def act(self, identity: bytes, method: str, *args: object, device: int = 0) -> None:
        """Run a membership change on one device and deliver what it produces."""
        d = self.dev(identity, device)
        assert d.state is not None
        d.state, out = getattr(d.state, method)(*args, d.key, self.directory, self.rng, self.now)
        self.route(d.inst, out)

    def route(self, sender: bytes, out: list[Outgoing]) -> None:
        queue: deque[tuple[bytes, Outgoing]] = deque((sender, o) for o in out)
        while queue:
            src, o = queue.popleft()
            if isinstance(o, Publish):
                self.published.append(o.payload)
                for d in self.devices.values():
                    if d.inst != src and d.state is not None:
                        queue.extend(self._deliver(d, src, None, o.payload))
            else:
                assert isinstance(o, SendTo)
                queue.extend(self._deliver(self.devices[o.installation], src, src, o.payload))

    def _deliver(
        self, d: Device, src: bytes, pairwise_from: bytes | None, payload: bytes
    ) -> list[tuple[bytes, Outgoing]]:
        if not d.online:
            d.inbox.append((pairwise_from, payload))
            return []
        kind = payload[0]
        out: list[Outgoing] = []
        if kind == KIND_WELCOME:
            if d.state is None:
                d.state, out = GroupState.join(
                    payload, d.identity, d.inst, self.directory, self.rng
                )
                for frm, held in d.held:
                    d.state = d.state.receive_distribution(
                        frm, held, from_identity=self.owner(frm), now_ms=self.t
                    )
                d.held.clear()
        elif kind == KIND_DISTRIBUTION:
            assert pairwise_from is not None
            if d.state is None:
                d.held.append((pairwise_from, payload))
            else:
                try:
                    d.state = d.state.receive_distribution(
                        pairwise_from, payload, from_identity=self.owner(src), now_ms=self.t
                    )
                except GroupError:
                    pass  # e.g. we were removed meanwhile
        elif kind == KIND_GROUP_OP and d.state is not None:
            try:
                d.state, out = d.state.apply_op(payload, self.directory, self.rng, self.t)
            except GroupError:
                pass  # replays / ops we already made
        return [(d.inst, o) for o in out]

    def go_online(self, d: Device) -> None:
        """Catch up: ops as one shuffled batch, then pairwise payloads in order."""
        d.online = True
        inbox, d.inbox = d.inbox, []
        ops = [p for frm, p in inbox if frm is None and p[0] == KIND_GROUP_OP]
        random.Random(7).shuffle(ops)
        assert d.state is not None
        d.state, out, _rejected = d.state.apply_ops(ops, self.directory, self.rng, self.t)
        self.route(d.inst, out)
        for frm, p in inbox:
            if frm is not None:
                self.route(frm, [SendTo(d.inst, p)])

    def send(self, identity: bytes, text: bytes, device: int = 0) -> bytes:
        d = self.dev(identity, device)
        assert d.state is not None
        d.state, frame = d.state.encrypt(text)
        return frame

    def read(self, identity: bytes, frame: bytes, device: int = 0) -> bytes:
        d = self.dev(identity, device)
        assert d.state is not None
        d.state, _sid, _sinst, pt = d.state.decrypt(frame, self.t)
        return pt
