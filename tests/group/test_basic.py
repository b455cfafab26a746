from __future__ import annotations

import pytest

import chatcore.group as group
from chatcore.errors import GroupError
from chatcore.group import GroupState, Publish, SendTo
from chatcore.group.consts import KIND_DISTRIBUTION, KIND_WELCOME

from . import World


def test_all_is_exported() -> None:
    for name in group.__all__:
        assert hasattr(group, name)


def test_three_members_everyone_reads_everyone() -> None:
    w = World()
    a, b, c = w.person(), w.person(), w.person()
    w.create(a, [b, c], name="friends")
    for sender in (a, b, c):
        frame = w.send(sender, b"hi from " + sender[:2])
        for reader in {a, b, c} - {sender}:
            assert w.read(reader, frame) == b"hi from " + sender[:2]
    st = w.dev(b).state
    assert st is not None
    assert st.members() == {a, b, c} and st.admins() == {a} and st.name == "friends"
    assert st.epoch == 1


def test_create_outgoing_shape() -> None:
    w = World()
    a, b = w.person(), w.person(2)
    d = w.dev(a)
    st, out = GroupState.create(w.rng(32), "x", a, d.key, [b], w.directory, w.rng, w.now)
    assert isinstance(out[0], Publish)
    pairwise = [o for o in out if isinstance(o, SendTo)]
    assert {o.installation for o in pairwise} == set(w.directory[b])
    kinds = [o.payload[0] for o in pairwise]
    assert kinds.index(KIND_WELCOME) < kinds.index(KIND_DISTRIBUTION)  # welcome first
    assert len(pairwise[-1].payload) == 173
    assert "chain_key" not in repr(st) and "secret" not in repr(st.own)


def test_multi_device_members() -> None:
    w = World()
    a, b = w.person(2), w.person(3)
    w.create(a, [b])
    frame = w.send(a, b"from a0")
    assert w.read(a, frame, device=1) == b"from a0"  # our own other device
    for i in range(3):
        assert w.read(b, frame, device=i) == b"from a0"
    frame = w.send(b, b"from b2", device=2)
    st = w.dev(b, 0).state
    assert st is not None
    _st2, sid, sinst, pt = st.decrypt(frame)
    assert (sid, sinst, pt) == (b, w.directory[b][2], b"from b2")


def test_wire_overhead_under_100_bytes() -> None:
    w = World()
    a, b = w.person(), w.person()
    w.create(a, [b])
    frame = w.send(a, b"x" * 200)
    assert len(frame) - 200 <= 100
    assert frame[0] == 0x13


def test_state_roundtrip() -> None:
    w = World()
    a, b, c = w.person(), w.person(2), w.person()
    w.create(a, [b, c])
    f1, f2, f3 = (w.send(a, b"m%d" % i) for i in range(3))
    w.read(b, f2)  # leaves a skipped key for f1
    st = w.dev(b).state
    assert st is not None
    blob = st.to_bytes()
    again = GroupState.from_bytes(blob)
    assert again.to_bytes() == blob
    assert again.members() == st.members() and again.epoch == st.epoch
    assert again.decrypt(f1)[3] == b"m0"
    assert again.decrypt(f3)[3] == b"m2"
    again, frame = again.encrypt(b"after reload")
    assert w.read(a, frame) == b"after reload"


def test_rename_and_promote_and_leave() -> None:
    w = World()
    a, b, c = w.person(), w.person(), w.person()
    w.create(a, [b, c])
    w.act(a, "rename", "new name")
    w.act(a, "promote", b)
    st = w.dev(c).state
    assert st is not None and st.name == "new name" and st.admins() == {a, b}
    w.act(a, "leave")
    for who in (b, c):
        s = w.dev(who).state
        assert s is not None and s.members() == {b, c} and s.admins() == {b}
    sa = w.dev(a).state
    assert sa is not None and not sa.is_member
    with pytest.raises(GroupError):
        sa.encrypt(b"x")
    frame = w.send(b, b"without a")
    assert w.read(c, frame) == b"without a"
    with pytest.raises(GroupError):
        sa.decrypt(frame)


def test_last_admin_leaving_promotes_smallest_member() -> None:
    w = World()
    a, b, c = w.person(), w.person(), w.person()
    w.create(a, [b, c])
    w.act(a, "leave")
    st = w.dev(b).state
    assert st is not None and st.admins() == {min(b, c)}
