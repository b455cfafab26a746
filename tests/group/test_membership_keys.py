"""Removal secrecy, late joiners, offline catch-up, device changes."""

from __future__ import annotations

import pytest

from chatcore.errors import ChatCoreError, DecryptionError, GroupError
from chatcore.group import SendTo
from chatcore.group.consts import KIND_DISTRIBUTION

from . import World


def test_removed_member_reads_nothing_after_removal() -> None:
    w = World()
    a, b, c = w.person(), w.person(), w.person(2)
    w.create(a, [b, c])
    before = w.send(b, b"before")
    assert w.read(c, before) == b"before"
    c_old = w.dev(c).state  # what c holds at the moment of removal (never applies the op)
    assert c_old is not None
    sent_to_c: list[bytes] = []
    orig_route = w.route

    def spy(sender: bytes, out: list) -> None:  # type: ignore[type-arg]
        sent_to_c.extend(
            o.payload for o in out if isinstance(o, SendTo) and o.installation in w.directory[c]
        )
        orig_route(sender, out)

    w.route = spy  # type: ignore[method-assign]
    w.act(a, "remove_member", c)
    # Every remaining member rotated, and no new key went to any of c's installations.
    assert not any(p[0] == KIND_DISTRIBUTION for p in sent_to_c)
    for sender in (a, b):
        frame = w.send(sender, b"secret after removal")
        for reader in {a, b} - {sender}:
            assert w.read(reader, frame) == b"secret after removal"
        with pytest.raises(ChatCoreError):
            c_old.decrypt(frame)  # old state: unknown (rotated) sender key
        for i in range(2):
            cs = w.dev(c, i).state
            assert cs is not None and not cs.is_member
            with pytest.raises(GroupError):
                cs.decrypt(frame)
    # and c can no longer inject messages
    c_frame = c_old.encrypt(b"still here?")[1]
    sb = w.dev(b).state
    assert sb is not None
    with pytest.raises(GroupError):
        sb.decrypt(c_frame)


def test_late_joiner_reads_nothing_sent_before_joining() -> None:
    w = World()
    a, b = w.person(), w.person()
    w.create(a, [b])
    early = [w.send(a, b"early 1"), w.send(b, b"early 2")]
    d = w.person()
    w.act(a, "add_member", d)
    just_before = w.send(b, b"b's last pre-join send")  # b has not re-keyed: same chain
    # (b's chain was handed to d at its current position, so d can read it from here on)
    later = [w.send(a, b"later 1"), w.send(b, b"later 2")]
    st = w.dev(d).state
    assert st is not None and st.members() == {a, b, d}
    for f in early:
        with pytest.raises((GroupError, DecryptionError)):
            st.decrypt(f)
    assert w.read(d, just_before) == b"b's last pre-join send"
    assert [w.read(d, f) for f in later] == [b"later 1", b"later 2"]
    assert w.read(a, w.send(d, b"hello")) == b"hello"


def test_added_member_gets_current_chain_position_only() -> None:
    w = World()
    a, b = w.person(), w.person()
    w.create(a, [b])
    first = w.send(a, b"one")
    d = w.person()
    w.act(a, "add_member", d)
    # a's chain is at iteration 1 now; d cannot go back to iteration 0 (the same epoch
    # window would otherwise accept the tag).
    st = w.dev(d).state
    assert st is not None
    with pytest.raises((GroupError, DecryptionError)):
        st.decrypt(first)


def test_offline_member_catches_up_with_op_log_and_distributions() -> None:
    w = World()
    a, b, c, e = w.person(), w.person(), w.person(), w.person()
    w.create(a, [b, c, e])
    off = w.dev(c)
    off.online = False
    f, g = w.person(), w.person()
    w.act(a, "add_member", f)
    w.act(a, "promote", b)
    w.act(b, "remove_member", e)
    w.act(b, "add_member", g)
    w.act(a, "rename", "renamed")
    msgs = [w.send(s, b"while c was away " + s[:2]) for s in (a, b, f, g)]
    w.go_online(off)
    sc, sa = off.state, w.dev(a).state
    assert sc is not None and sa is not None
    assert (sc.members(), sc.admins(), sc.epoch, sc.name) == (
        sa.members(),
        sa.admins(),
        sa.epoch,
        sa.name,
    )
    assert e not in sc.members()
    for m, s in zip(msgs, (a, b, f, g), strict=True):
        assert w.read(c, m) == b"while c was away " + s[:2]
    reply = w.send(c, b"back")
    for r in (a, b, f, g):
        assert w.read(r, reply) == b"back"


def test_revoked_device_triggers_rotation_and_new_device_gets_key() -> None:
    w = World()
    a, b = w.person(), w.person(2)
    w.create(a, [b])
    lost = w.dev(b, 1)
    lost_state = lost.state
    assert lost_state is not None
    w.directory[b].remove(lost.inst)
    new = w.add_device(b)
    for ident in (a, b):
        d = w.dev(ident)
        assert d.state is not None
        d.state, out = d.state.sync_devices(w.directory, w.rng)
        w.route(d.inst, out)
    # the new device needs the op log: the engine hands it a welcome from a sibling
    sb = w.dev(b).state
    assert sb is not None
    w.route(w.dev(b).inst, [SendTo(new.inst, sb.welcome())])
    frame = w.send(a, b"after revoke")
    assert w.read(b, frame) == b"after revoke"
    assert w.read(b, frame, device=1) == b"after revoke"  # the new device (index 1 now)
    with pytest.raises(ChatCoreError):
        lost_state.decrypt(frame)
