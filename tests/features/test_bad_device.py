"""A device whose published keys no session can use (found by a review).

Anyone can register an extra installation whose signed bundle carries a low-order X25519
signed prekey (or a malformed ML-KEM key). ``Session.initiate`` refuses it with
HandshakeError, and nothing caught that per recipient: every 1:1 send to that identity, every
group change, and the device refresh each member's ``Client.sync()`` runs before reading
raised. Now that device is skipped (and logged); everyone else is served. (Resolving such a
bundle from the chain rejects it too: tests/discovery/test_records.py.)"""

from __future__ import annotations

from dataclasses import replace

import pytest

from chatcore.engine import direct_conversation_id, inbox_subject
from chatcore.errors import HandshakeError
from chatcore.payload import ContentType
from tests.features import FWorld

LOW_ORDER = bytes(32)  # the X25519 point 0 (order 1): DH with it is all zero


def poison(w: FWorld, who: bytes) -> bytes:
    """``who`` registers another device whose bundle has a low-order signed prekey."""
    dev = w.add_device(who)
    pk = w.directory.installations[who][-1]
    w.directory.installations[who][-1] = replace(pk, spk_pub=LOW_ORDER)
    return dev.inst


def test_1to1_send_skips_the_unusable_device_only() -> None:
    w = FWorld(seed=9)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    bad = poison(w, bob)
    res = w.send_text(alice, bob, "hello")
    subjects = {f.subject for f in res.frames}
    assert subjects == {w.dev(bob).engine.inbox}
    assert inbox_subject(bad) not in subjects
    got = w.route(res.frames)
    assert [r.text for r in got] == ["hello"]
    # bob's good device acknowledges: the message is complete, nothing waits for the bad one
    w.flush_all()
    conv = direct_conversation_id(alice, bob)
    assert w.dev(alice).store.message(conv, res.message_id).status in ("delivered", "read")
    # and bob's reply comes back, a retransmission round has nothing to fail on
    w.route(w.send_text(bob, alice, "hi").frames)
    w.clock.now += 3_600_000
    w.f(alice).retransmit()


def test_1to1_send_to_an_identity_with_only_unusable_devices_fails() -> None:
    w = FWorld(seed=12)
    alice, bob = w.person(name="alice"), w.person(n_devices=0, name="bob")
    poison(w, bob)
    with pytest.raises(HandshakeError):
        w.send_text(alice, bob, "hello")
    assert w.dev(alice).store.history(direct_conversation_id(alice, bob), 10) == []


def test_a_member_with_an_unusable_device_blocks_no_group_change() -> None:
    w = FWorld(seed=10)
    alice, bob, carol, mallory = (w.person(name=n) for n in ("alice", "bob", "carol", "mallory"))
    gid = w.group(alice, [bob, mallory])
    poison(w, mallory)
    ga = w.node(alice).groups
    w.route(ga.add(gid, carol), frm=w.node(alice))
    w.route(ga.remove(gid, mallory), frm=w.node(alice))
    res = ga.send(gid, ContentType.TEXT, b"hi all")
    got = w.route(res.frames, frm=w.node(alice))
    assert sorted(r.text for r in got if r.content_type == ContentType.TEXT) == ["hi all"] * 2
    for who in (bob, carol):
        assert mallory not in w.node(who).groups.load(gid).members()


def test_a_member_with_an_unusable_device_breaks_nobodys_device_refresh() -> None:
    """client.sync() calls groups.refresh_devices(gid) for every group before reading."""
    w = FWorld(seed=11)
    alice, bob, mallory = (w.person(name=n) for n in ("alice", "bob", "mallory"))
    gid = w.group(alice, [bob, mallory])
    poison(w, mallory)
    for who in (alice, bob):
        w.route(w.node(who).groups.refresh_devices(gid), frm=w.node(who))
    # the group goes on: mallory's good device reads a message sent after the refresh
    res = w.node(bob).groups.send(gid, ContentType.TEXT, b"still here")
    got = w.route(res.frames, frm=w.node(bob))
    assert sorted(r.text for r in got if r.content_type == ContentType.TEXT) == ["still here"] * 2
