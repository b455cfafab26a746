"""A long-lived group's op log outgrows one pairwise payload: its welcome goes in parts."""

from __future__ import annotations

import hashlib

import pytest

from chatcore.errors import MalformedMessage
from chatcore.group.consts import KIND_WELCOME
from chatcore.groupchat import (
    _BODY_BUDGET,
    KIND_WELCOME_PART,
    MAX_CONTROL_ITEMS,
    decode_control,
    pack_control,
    welcome_parts,
)
from chatcore.payload import ContentType
from tests.engine import texts
from tests.features import FWorld


def _welcome(size: int, gid: bytes = b"\x07" * 32) -> bytes:
    return bytes((KIND_WELCOME,)) + gid + hashlib.shake_256(b"w").digest(size - 33)


def test_pack_control_keeps_every_body_under_the_cap_and_the_order() -> None:
    ops = [bytes((0x14,)) + bytes([i % 251]) * (200 + 37 * i) for i in range(120)]
    big = _welcome(3 * 60 * 1024 + 5)
    bodies = pack_control([ops[0], big, *ops[1:]])
    assert all(len(b) <= _BODY_BUDGET for b in bodies)
    items = [i for b in bodies for i in decode_control(b)]
    assert all(len(decode_control(b)) <= MAX_CONTROL_ITEMS for b in bodies)
    parts = [i for i in items if i[0] == KIND_WELCOME_PART]
    assert len(parts) == 4 and parts == welcome_parts(big)
    assert [i for i in items if i[0] != KIND_WELCOME_PART] == ops  # in order, none lost
    assert items.index(parts[0]) == 1


def test_welcome_parts_over_the_bound_are_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        welcome_parts(_welcome(64 * 60 * 1024 + 1))


def _churn(w: FWorld, admin: bytes, gid: bytes, extra: bytes, rounds: int) -> None:
    n = w.node(admin)
    for _ in range(rounds):
        w.route(n.groups.add(gid, extra), frm=n)
        w.route(n.groups.remove(gid, extra), frm=n)


def test_a_newcomer_joins_a_group_whose_log_outgrew_one_payload() -> None:
    w = FWorld()
    a, b, x, c = w.person(), w.person(), w.person(), w.person()
    gid = w.group(a, [b])
    _churn(w, a, gid, x, 160)  # 321 ops: about 80 KB of log
    assert len(w.node(a).groups.load(gid).welcome()) > _BODY_BUDGET  # type: ignore[union-attr]
    na = w.node(a)
    w.route(na.groups.add(gid, c), frm=na)
    st = w.node(c).groups.load(gid)
    assert st is not None and st.is_member and c in st.members()
    assert st.ops.keys() == w.node(a).groups.load(gid).ops.keys()  # type: ignore[union-attr]
    assert not [p for p in w.dev(c).store.group_pending(gid) if p[2][0] == KIND_WELCOME_PART]
    s = w.f(b).send_group_message(gid, ContentType.TEXT, b"welcome, c")
    w.route(s.frames, frm=w.node(b))
    assert "welcome, c" in texts(w.dev(c).store, gid)


def test_bad_welcome_parts_are_refused_and_change_nothing() -> None:
    w = FWorld()
    a, b, x, c = w.person(), w.person(), w.person(), w.person()
    gid = w.group(a, [b])
    _churn(w, a, gid, x, 160)
    welcome = w.node(a).groups.load(gid).welcome()  # type: ignore[union-attr]
    parts = welcome_parts(welcome)
    nc = w.node(c)
    sender, inst = a, w.dev(a).inst
    # a part whose bytes were changed: the whole does not match its digest
    bad = parts[-1][:-1] + bytes((parts[-1][-1] ^ 1,))
    for p in parts[:-1]:
        assert nc.groups._apply_item(gid, sender, inst, p) == ([], [])
    with pytest.raises(MalformedMessage, match="do not make it up"):
        nc.groups._apply_item(gid, sender, inst, bad)
    assert nc.groups.load(gid) is None and nc.dev.store.group_pending(gid) == []
    # bad numbering
    for mangled in (parts[0][:65] + b"\x05\x02" + b"x", parts[0][:65] + b"\x00\x41" + b"x"):
        with pytest.raises(MalformedMessage):
            nc.groups._apply_item(gid, sender, inst, mangled)
    # parts from two senders are never mixed
    other = w.dev(b).inst
    for p in parts[:-1]:
        nc.groups._apply_item(gid, sender, inst, p)
    assert nc.groups._apply_item(gid, b, other, parts[-1]) == ([], [])
    assert nc.groups.load(gid) is None
