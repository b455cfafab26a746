"""Harness for the 1:1 engine tests: seeded devices over ``Store.memory()`` and a fake Directory.

No network: frames returned by ``Engine.send`` are routed by inbox subject by the tests.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chatcore.engine import Engine, OutFrame, OwnIdentity, Peer, Received, SendResult
from chatcore.errors import UnknownContact, UntrustedIdentity
from chatcore.keys import InstallationKeys, PeerKeys, SignedPrekey
from chatcore.payload import ContentType
from chatcore.store import Store

T0 = 1_800_000_000_000  # 2027: after the payload sent-at epoch (2025)


class SeededRng:
    def __init__(self, seed: int) -> None:
        self._r = random.Random(seed)

    def __call__(self, n: int) -> bytes:
        return self._r.randbytes(n)


class Clock:
    """Milliseconds; every read moves on by 1 ms so sent_at values differ."""

    def __init__(self, start: int = T0) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now


class FakeDirectory:
    """identity -> installations (PeerKeys from ``InstallationKeys.peer_keys``), with revocation."""

    def __init__(self) -> None:
        self.installations: dict[bytes, list[PeerKeys]] = {}
        self.names: dict[bytes, str] = {}
        self.revoked: set[bytes] = set()
        self.checks = 0

    def register(self, identity: bytes, pk: PeerKeys) -> None:
        self.installations.setdefault(identity, []).append(pk)

    def peer(self, identity_id: bytes) -> Peer:
        active = [
            p
            for p in self.installations.get(identity_id, [])
            if p.installation_id not in self.revoked
        ]
        if not active:
            raise UnknownContact("nobody")
        return Peer(identity_id, self.names.get(identity_id), tuple(active))

    def check_installation(
        self, identity_id: bytes, installation_id: bytes, ik_x25519: bytes
    ) -> None:
        self.checks += 1
        if installation_id in self.revoked:
            raise UntrustedIdentity("revoked")
        for p in self.installations.get(identity_id, []):
            if p.installation_id == installation_id:
                if p.ik_x25519 != ik_x25519:
                    raise UntrustedIdentity("wrong key")
                return
        raise UntrustedIdentity("not registered")


@dataclass
class Device:
    identity: bytes
    keys: InstallationKeys
    spk: SignedPrekey
    store: Store
    engine: Engine
    seq: int = 0  # the inbox's stream sequence, as a delivery network would number frames
    got: list[Received] = field(default_factory=list)

    @property
    def inst(self) -> bytes:
        return self.keys.installation_id

    @property
    def peer_keys(self) -> PeerKeys:
        return self.keys.peer_keys(self.spk)

    def receive(self, frame: bytes) -> Received | None:
        self.seq += 1
        r = self.engine.receive(frame, cursor=(self.engine.inbox, self.seq))
        if r is not None:
            self.got.append(r)
        return r


class World:
    def __init__(self, seed: int = 1) -> None:
        self.rng = SeededRng(seed)
        self.clock = Clock()
        self.directory = FakeDirectory()
        self.people: dict[bytes, list[Device]] = {}

    def person(self, n_devices: int = 1, name: str | None = None) -> bytes:
        identity = self.rng(32)
        self.people[identity] = []
        if name:
            self.directory.names[identity] = name
        for _ in range(n_devices):
            self.add_device(identity)
        return identity

    def make_device(self, identity: bytes, *, register: bool = True) -> Device:
        keys = InstallationKeys.generate(self.rng)
        spk = SignedPrekey.generate(self.rng, 1, T0 + 10**10)
        store = Store.memory()
        store.put_secret("spk:0000000001", spk.to_bytes())
        engine = Engine(store, OwnIdentity(identity, keys), self.directory, self.rng, self.clock)
        dev = Device(identity, keys, spk, store, engine)
        if register:
            self.directory.register(identity, dev.peer_keys)
        return dev

    def add_device(self, identity: bytes) -> Device:
        dev = self.make_device(identity)
        self.people[identity].append(dev)
        return dev

    def dev(self, identity: bytes, i: int = 0) -> Device:
        return self.people[identity][i]

    def all_devices(self) -> Iterable[Device]:
        for devs in self.people.values():
            yield from devs

    def restart(self, dev: Device) -> None:
        """A new Engine over the same Store (the process crashed; the database survived)."""
        dev.engine = Engine(
            dev.store, OwnIdentity(dev.identity, dev.keys), self.directory, self.rng, self.clock
        )

    def send(
        self, sender: bytes, to: bytes, text: str | bytes, *, device: int = 0, sync: bool = True
    ) -> SendResult:
        d = self.dev(sender, device)
        body = text.encode() if isinstance(text, str) else text
        own = self.directory.peer(sender).installations if sync else ()
        return d.engine.send(self.directory.peer(to), ContentType.TEXT, body, own)

    def frames_for(self, res: SendResult, dev: Device) -> list[OutFrame]:
        return [f for f in res.frames if f.subject == dev.engine.inbox]

    def frame_for(self, res: SendResult, dev: Device) -> bytes:
        fs = self.frames_for(res, dev)
        assert len(fs) == 1, f"expected one frame for the device, got {len(fs)}"
        return fs[0].frame

    def deliver(self, res: SendResult) -> list[Received | None]:
        """Deliver every frame of a send to the device whose inbox it names."""
        by_inbox = {d.engine.inbox: d for d in self.all_devices()}
        out = []
        for f in res.frames:
            out.append(by_inbox[f.subject].receive(f.frame))
        return out


def snapshot(store: Store) -> dict[str, list[Any]]:
    """Every row of every table (to prove that a rejected frame changed nothing but the cursor)."""
    db = store._db
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return {
        t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
        for t in tables
        if t not in ("sqlite_sequence", "cursors")
    }


def texts(store: Store, conv: bytes) -> list[str]:
    return [m.body.decode() for m in store.history(conv, limit=10_000)]


def drop_schema_14(conn: Any) -> None:
    """Undo what store schema 14 added (a test making a store of an older schema)."""
    for trigger in ("group_reading_on_insert", "group_reading_on_update"):
        conn.execute(f"DROP TRIGGER {trigger}")


def drop_schema_13(conn: Any) -> None:
    """Undo what store schema 13 added, and 14 (a test making a store of an older schema)."""
    drop_schema_14(conn)
    conn.execute("DROP TABLE group_reading")
    conn.execute("DELETE FROM meta WHERE key = 'group_reading_todo'")


def drop_schema_12(conn: Any) -> None:
    """Undo what store schema 12 added, and 13 (a test making a store of an older schema)."""
    drop_schema_13(conn)
    for trigger in ("contacts_changed_on_insert", "contacts_changed_on_update"):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DROP TABLE contact_changes")
    conn.execute("ALTER TABLE contacts DROP COLUMN changed")
