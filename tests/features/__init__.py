"""Harness for the chat-feature tests: the engine World with GroupChat + Features on every device,
and a tiny router that delivers frames (inbox and group topics) the way a client would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from chatcore.engine import OutFrame, Received, SendResult
from chatcore.errors import ChatCoreError, UnknownContact
from chatcore.features import Features
from chatcore.groupchat import GroupChat
from chatcore.keys import PeerKeys
from chatcore.payload import ContentType
from tests.engine import Device, World


@dataclass
class Node:
    dev: Device
    groups: GroupChat
    f: Features
    seqs: dict[str, int] = field(default_factory=dict)
    errors: list[ChatCoreError] = field(default_factory=list)
    got: list[Received] = field(default_factory=list)


class FWorld(World):
    """People whose devices run Features; ``route`` delivers frames, collecting what was shown."""

    def __init__(self, seed: int = 1) -> None:
        super().__init__(seed)
        self.nodes: dict[bytes, Node] = {}  # installation id -> node
        self.dropped: set[str] = set()  # inbox subjects whose frames are lost (a "network fault")
        self.deaf: set[bytes] = set()  # installations that get nothing at all (offline)

    def devices_of(self, identity: bytes) -> tuple[PeerKeys, ...]:
        try:
            return self.directory.peer(identity).installations
        except UnknownContact:
            return ()

    def add_device(self, identity: bytes) -> Device:
        dev = super().add_device(identity)
        self._attach(dev)
        return dev

    def _attach(self, dev: Device) -> None:
        g = GroupChat(dev.engine, self.devices_of)
        dev.engine.control_handler = g.handle_control
        f = Features(dev.engine, g)
        dev.engine.content_handler = f.handle
        self.nodes[dev.inst] = Node(dev, g, f)

    def restart(self, dev: Device) -> None:
        super().restart(dev)
        self._attach(dev)

    def node(self, identity: bytes, i: int = 0) -> Node:
        return self.nodes[self.dev(identity, i).inst]

    def f(self, identity: bytes, i: int = 0) -> Features:
        return self.node(identity, i).f

    def own(self, identity: bytes) -> tuple[PeerKeys, ...]:
        return self.devices_of(identity)

    def route(
        self, frames: Iterable[OutFrame], *, strict: bool = False, frm: Node | None = None
    ) -> list[Received]:
        """Deliver frames (and whatever the receivers produce as side effects) to their targets.

        ``frm``: the sending device (it does not read its own group frames back)."""
        shown: list[Received] = []
        queue = [(fr, frm) for fr in frames]
        while queue:
            fr, src = queue.pop(0)
            for n in self.nodes.values():
                if n is src or n.dev.inst in self.deaf:
                    continue
                eng = n.dev.engine
                if fr.subject == eng.inbox:
                    if fr.subject in self.dropped:
                        continue
                    fn = eng.receive
                elif fr.subject in n.dev.store.group_subjects() and fr.subject in (
                    n.groups.subjects()  # the groups it reads (not those it is out of)
                ):

                    def fn(
                        d: bytes, cursor: tuple[str, int], n: Node = n, s: str = fr.subject
                    ) -> Received | None:
                        return n.groups.receive(s, d, cursor)
                else:
                    continue
                seq = n.seqs.get(fr.subject, 0) + 1
                n.seqs[fr.subject] = seq
                try:
                    r = fn(fr.frame, cursor=(fr.subject, seq))
                except ChatCoreError as exc:
                    if strict:
                        raise
                    n.errors.append(exc)
                    r = None
                ev, side = eng.drain()
                queue += [(x, n) for x in side]
                for x in [*ev, *([r] if r is not None else [])]:
                    n.got.append(x)
                    shown.append(x)
        return shown

    def flush_all(self) -> list[Received]:
        """Every device publishes its queued receipts / due retransmissions; deliver them."""
        shown: list[Received] = []
        for n in list(self.nodes.values()):
            shown += self.route(n.f.flush(), frm=n)
        return shown

    def send_text(self, sender: bytes, to: bytes, text: str, device: int = 0) -> SendResult:
        n = self.node(sender, device)
        return n.f.send_message(
            self.directory.peer(to), ContentType.TEXT, text.encode(), self.own(sender)
        )

    def group(self, admin: bytes, members: list[bytes], name: str = "g") -> bytes:
        n = self.node(admin)
        gid, frames = n.groups.create(name, members)
        self.route(frames, strict=True, frm=n)
        return gid


def status(w: FWorld, who: bytes, conv: bytes, mid: bytes, dev: int = 0) -> str:
    """The stored status of a message on one device of ``who``."""
    m = w.dev(who, dev).store.message(conv, mid)
    assert m is not None
    return m.status
