"""What reaches a device between its approval and its own bundle is forwarded to it.

Eleventh session's finding: until a new device publishes its own bundle, peers do not count it
as a device of its identity (its pairing bundle names none), so what they send then reaches the
approving device only. That device forwards, over their pairwise session, what it stored after
the handover's cut (``chatcore.identity.forward_parts`` as device-sync payloads); the new device
takes it as it takes the handover's history."""

from __future__ import annotations

import base64
import json
import zlib
from types import SimpleNamespace
from typing import Any

import pytest

from chatcore import content
from chatcore.content import ContactState, SyncHistory, decode_sync, encode_sync
from chatcore.engine import direct_conversation_id
from chatcore.errors import ContentError, GroupError, MalformedMessage
from chatcore.groupchat import keep_welcome
from chatcore.identity import (
    FORWARD_PART_BYTES,
    LINK_FORWARD,
    LINK_FORWARD_SLACK_MS,
    LINK_FORWARD_TTL_MS,
    LINKED_AT,
    forward_linked_history,
    forward_parts,
    link_cut,
    restore_snapshot,
    snapshot,
)
from chatcore.payload import MAX_BODY, ContentType
from chatcore.store import Store, StoredMessage
from tests.engine import Device, drop_schema_12

from . import FWorld, Node

TEXT = ContentType.TEXT


def _shown(f_store: Store, node: Node, conv: bytes) -> list[tuple[bytes, str, bool]]:
    return [
        (m.message_id, (v := node.f.view(m)).text, v.deleted)
        for m in reversed(f_store.history(conv, 1000))
    ]


def _reactions(store: Store) -> list[tuple[object, ...]]:
    rows = store._x("SELECT * FROM reactions ORDER BY message_id, reactor").fetchall()
    return [tuple(r) for r in rows]


def _approve(w: FWorld, a: bytes) -> tuple[Device, int, int]:
    """A second device of ``a``, approved: it has the handover, peers do not know it yet."""
    a1 = w.dev(a)
    a2 = w.make_device(a, register=False)
    w.people[a].append(a2)
    w._attach(a2)
    cut = (a1.store.next_seq() - 1, w.clock.now)
    restore_snapshot(a2.store, snapshot(a1.store, 2000))
    with a2.store.transaction():  # as finish_link keeps them
        a2.store.set_meta("linked_from", a1.inst)
        a2.store.set_meta(LINKED_AT, str(w.clock.now).encode())
    return a2, *cut


def test_what_peers_sent_before_the_new_device_had_its_bundle_reaches_it_once() -> None:
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    w.route(w.f(a).set_contact(b, ContactState.CONTACT))
    gid = w.group(a, [b])
    before = w.send_text(b, a, "before")
    w.route(before.frames, strict=True)
    dm = direct_conversation_id(a, b)
    peer_b, peer_a = w.directory.peer(b), w.directory.peer(a)
    thumbs = content.encode_reaction(before.message_id, "👍")
    w.route(w.f(a).send_op(peer_b, ContentType.REACTION, thumbs, w.own(a)).frames, strict=True)
    a2, seq, since = _approve(w, a)
    n1, n2 = w.node(a), w.node(a, 1)
    assert _shown(a2.store, n2, dm) == _shown(w.dev(a).store, n1, dm)
    # between the approval and the new device's own bundle: nothing of this reaches it
    window = [
        w.send_text(b, a, "between, 1:1"),
        w.send_text(a, b, "mine, between"),
        w.send_text(c, a, "a stranger writes"),
        w.f(b).send_group_message(gid, TEXT, b"between, group"),
        w.f(b).send_op(
            peer_a, ContentType.EDIT, content.encode_edit(before.message_id, "edited"), w.own(b)
        ),
        w.f(a).send_op(
            peer_b, ContentType.REACTION, content.encode_reaction(before.message_id, ""), w.own(a)
        ),
    ]
    for res in window:
        w.route(res.frames, strict=True)
    assert n2.got == []
    w.directory.register(a, a2.peer_keys)  # its own bundle, published by finish_link
    parts = forward_parts(w.dev(a).store, seq, since)
    frames = [f for p in parts for f in n1.f.forward_history(a2.peer_keys, p)]
    shown = w.route(frames, strict=True, frm=n1)
    assert {r.text for r in shown} >= {
        "between, 1:1", "mine, between", "a stranger writes", "between, group"
    }  # fmt: skip
    for conv in (dm, gid, direct_conversation_id(a, c)):
        assert _shown(a2.store, n2, conv) == _shown(w.dev(a).store, n1, conv)
    assert ("edited" in [t for _m, t, _d in _shown(a2.store, n2, dm)]) is True
    assert _reactions(a2.store) == _reactions(w.dev(a).store) == []  # taken back there
    assert n2.f.contact_state(c) == ContactState.REQUEST
    assert a2.store.conversation(direct_conversation_id(a, c)).unread == 1  # type: ignore[union-attr]
    # forwarded again (a process killed before it forgot the cut): nothing doubles
    again = forward_parts(w.dev(a).store, seq, since)
    assert w.route([f for p in again for f in n1.f.forward_history(a2.peer_keys, p)]) == []
    for conv in (dm, gid):
        assert _shown(a2.store, n2, conv) == _shown(w.dev(a).store, n1, conv)


def test_a_history_sync_is_taken_only_from_our_own_devices() -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    w.route(w.send_text(b, a, "hi").frames, strict=True)
    a2, _seq, since = _approve(w, a)
    w.directory.register(a, a2.peer_keys)
    forged = {
        "v": 1,
        "conversations": [],
        "messages": forward_parts(w.dev(a).store, 0, since)[0]["messages"],
    }
    frames = w.f(b).forward_history(a2.peer_keys, forged)
    with pytest.raises(ContentError):
        w.route(frames, strict=True)
    assert len(a2.store.history(direct_conversation_id(a, b), 10)) == 1  # the handover's


def test_a_long_window_goes_in_parts_each_within_one_payload() -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    a2, seq, since = _approve(w, a)
    big = "x" * 15_000
    for i in range(12):
        w.route(w.send_text(b, a, f"{i} {big}").frames, strict=True)
    parts = forward_parts(w.dev(a).store, seq, since)
    assert len(parts) > 1
    for p in parts:
        assert len(json.dumps(p, separators=(",", ":"))) <= FORWARD_PART_BYTES
        body = encode_sync(SyncHistory(p))
        assert len(body) <= MAX_BODY and decode_sync(body) == SyncHistory(p)
    assert sum(len(p["messages"]) for p in parts) == 12
    w.directory.register(a, a2.peer_keys)
    n1 = w.node(a)
    w.route([f for p in parts for f in n1.f.forward_history(a2.peer_keys, p)], strict=True)
    dm = direct_conversation_id(a, b)
    assert [m.body for m in a2.store.history(dm, 100)] == [
        m.body for m in w.dev(a).store.history(dm, 100)
    ]


def test_a_malformed_history_sync_is_refused() -> None:
    with pytest.raises(MalformedMessage):
        decode_sync(bytes((content.SyncOp.HISTORY,)) + b"not zlib")
    with pytest.raises(MalformedMessage):  # a bomb: more than MAX_SYNC_HISTORY_JSON unpacked
        decode_sync(
            bytes((content.SyncOp.HISTORY,))
            + zlib.compress(b'{"v":1,"x":"' + b"x" * content.MAX_SYNC_HISTORY_JSON + b'"}')
        )
    w = FWorld()
    a = w.person()
    a2, _seq, _since = _approve(w, a)
    w.directory.register(a, a2.peer_keys)
    for bad in ({"v": 1, "messages": [{"c": "zz"}]}, {"v": 2}, {"messages": []}):
        with pytest.raises(MalformedMessage):
            w.route(w.f(a).forward_history(a2.peer_keys, bad), strict=True)


def _contacts_forwarded(node: Node) -> list[str]:
    """The identities (hex) of the contacts each forward from ``node`` sends, appended as
    the forwards go."""
    sent: list[str] = []
    forward = node.f.forward_history

    def spy(device: Any, part: dict[str, Any]) -> Any:
        sent.extend(k["identity"] for k in part.get("contacts", ()))
        return forward(device, part)

    node.f.forward_history = spy  # type: ignore[method-assign]
    return sent


class _Client(SimpleNamespace):
    """What ``forward_linked_history`` uses of a Client, over a device of the FWorld."""

    def __init__(self, w: FWorld, who: bytes, revoked: set[bytes]) -> None:
        node = w.node(who)
        dev = node.dev
        super().__init__(
            store=dev.store, features=node.f, groups=node.groups, identity_id=who,
            installation_id=dev.inst, clock_ms=w.clock,
            directory=SimpleNamespace(own_devices=w.devices_of),
            index=SimpleNamespace(by_id=lambda _i: SimpleNamespace(installations=[
                SimpleNamespace(installation_id=i, revoked=True) for i in revoked
            ])),
        )  # fmt: skip


def test_the_approving_device_forwards_once_the_new_one_is_active_then_only_late_arrivals() -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    revoked: set[bytes] = set()
    a1 = w.dev(a)
    a2, _seq, _since = _approve(w, a)
    key = LINK_FORWARD + a2.inst.hex()
    with a1.store.transaction():
        a1.store.set_meta(key, link_cut(a1.store, w.clock.now))
    client: Any = _Client(w, a, revoked)
    dm = direct_conversation_id(a, b)
    w.route(w.send_text(b, a, "between").frames, strict=True)
    late = w.send_text(b, a, "sent between, arrives late")  # (b's outbox, offline)
    assert forward_linked_history(client) == []  # not active yet: the cut is kept
    assert a1.store.get_meta(key) is not None
    w.directory.register(a, a2.peer_keys)
    shown = w.route(forward_linked_history(client), strict=True)
    assert [r.text for r in shown] == ["between"]
    # after: sent to both devices, not forwarded; one sent before but arriving only now is
    w.clock.now += LINK_FORWARD_SLACK_MS + 2_000  # (sent-at travels in whole seconds)
    after = w.send_text(b, a, "after")  # (not yet at the new device: on its way there)
    w.route([f for f in after.frames if f.subject != a2.engine.inbox], strict=True)
    w.route([f for f in late.frames if f.subject == a1.engine.inbox], strict=True)
    frames = forward_linked_history(client)
    assert len(frames) == 1  # (what went to both devices stays out of it)
    active = json.loads(a1.store.get_meta(key) or b"")["active"]
    by = active + LINK_FORWARD_SLACK_MS
    texts = [base64.b64decode(m["b"]) for m in forward_parts(a1.store, 0, 0, by)[0]["messages"]]
    assert b"after" not in texts and b"sent between, arrives late" in texts
    shown = w.route(frames, strict=True)
    assert [r.text for r in shown] == ["sent between, arrives late"]
    w.route([f for f in after.frames if f.subject == a2.engine.inbox], strict=True)
    assert [m.body for m in a2.store.history(dm, 10)] == [m.body for m in a1.store.history(dm, 10)]
    assert forward_linked_history(client) == []
    # revoked, or approved too long ago: the cut goes
    revoked.add(a2.inst)
    forward_linked_history(client)
    assert a1.store.get_meta(key) is None
    with a1.store.transaction():
        a1.store.set_meta(LINK_FORWARD + "00" * 32, link_cut(a1.store, w.clock.now))
    w.clock.now += LINK_FORWARD_TTL_MS + 1
    assert forward_linked_history(client) == []
    assert a1.store.meta_with_prefix(LINK_FORWARD) == []


def test_a_device_active_with_nothing_to_forward_gets_only_late_arrivals_after() -> None:
    """Nothing arrived between the approval and the new device's bundle: the first sync
    that sees it active forwards nothing, but from then on only what was sent before it was
    active comes (what peers send later goes to both devices: theirs to deliver)."""
    w = FWorld()
    a, b = w.person(), w.person()
    a1 = w.dev(a)
    a2, _seq, _since = _approve(w, a)
    key = LINK_FORWARD + a2.inst.hex()
    with a1.store.transaction():
        a1.store.set_meta(key, link_cut(a1.store, w.clock.now))
    client: Any = _Client(w, a, set())
    w.directory.register(a, a2.peer_keys)
    assert forward_linked_history(client) == []  # active now: nothing to forward
    w.clock.now += LINK_FORWARD_SLACK_MS + 2_000
    after = w.send_text(b, a, "after")  # (not yet at the new device: on its way there)
    w.route([f for f in after.frames if f.subject != a2.engine.inbox], strict=True)
    shown = w.route(forward_linked_history(client), strict=True)
    assert [r.text for r in shown] == []  # (b's request, as a contact, may come along)
    assert a1.store.get_meta(key) is not None  # kept (for late arrivals) until it expires
    to_a2 = [f for f in after.frames if f.subject == a2.engine.inbox]
    assert [r.text for r in w.route(to_a2, strict=True)] == ["after"]  # peers deliver it


def test_an_edit_received_in_the_millisecond_of_the_cut_is_forwarded() -> None:
    """``since`` is the time the cut was taken, before the snapshot: a change received in
    that same millisecond may have missed the snapshot, so it counts as after the cut."""
    w = FWorld()
    a, b = w.person(), w.person()
    before = w.send_text(b, a, "before")
    w.route(before.frames, strict=True)
    a1 = w.dev(a)
    seq = a1.store.next_seq() - 1
    edit = content.encode_edit(before.message_id, "edited")
    w.route(w.f(b).send_op(w.directory.peer(a), ContentType.EDIT, edit, w.own(b)).frames)
    ((at,),) = a1.store._x("SELECT received_at FROM content_ops").fetchall()
    parts = forward_parts(a1.store, seq, int(at))
    assert [m["m"] for p in parts for m in p["messages"]] == [before.message_id.hex()]
    assert forward_parts(a1.store, seq, int(at) + 1) == []


_BAD_FIELDS: list[tuple[str, str, object]] = [
    ("messages", "l", -1),  # a number below 0
    ("messages", "r", True),  # (a bool is an int to Python)
    ("messages", "l", 2**70),  # past SQLite's 64 bits: OverflowError, out of the sync
    ("messages", "s", float("inf")),  # (JSON's Infinity)
    ("messages", "t", 2**64),
    ("messages", "st", None),  # stored as it came
    ("messages", "st", [1]),
    ("messages", "o", "false"),  # a true value: shown as ours
    ("messages", "c", "00"),  # a conversation not in the part
    ("messages", "m", "01"),
    ("messages", "rx", [["00" * 32, "x", 2**70]]),
    ("messages", "e", 5),
    ("messages", "d", "yes"),
    ("conversations", "kind", 5),
    ("conversations", "title", {"x": 1}),
    ("conversations", "created_at", 2**70),
    ("peers", "display", [1]),
    ("contacts", "state", 2**70),
    ("contacts", "at", 2**70),
    ("contacts", "alias", [1]),
    # text with a lone surrogate (JSON's "\ud800"): SQLite raised UnicodeEncodeError, out
    # of the sync (a group's title too)
    ("conversations", "title", "\ud800"),
    ("peers", "display", "a\udc00"),
    ("contacts", "alias", "\udfff"),
    ("messages", "rx", [["00" * 32, "\ud83d", 1]]),
]


@pytest.mark.parametrize(("kind", "key", "value"), _BAD_FIELDS)
def test_a_history_sync_with_a_field_of_the_wrong_type_or_range_is_malformed(
    kind: str, key: str, value: object
) -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    w.route(w.f(a).set_contact(b, ContactState.CONTACT))
    w.route(w.send_text(b, a, "hi").frames, strict=True)
    a2, seq, since = _approve(w, a)
    w.directory.register(a, a2.peer_keys)
    w.route(w.send_text(b, a, "between").frames, strict=True)
    w.route(w.f(a).set_contact(b, ContactState.CONTACT, "bee"))
    (part,) = forward_parts(w.dev(a).store, seq, since)
    assert part[kind], kind
    part[kind][0][key] = value
    before = a2.store.history(direct_conversation_id(a, b), 10)
    with pytest.raises(MalformedMessage):
        w.route(w.f(a).forward_history(a2.peer_keys, part), strict=True)
    assert a2.store.history(direct_conversation_id(a, b), 10) == before


def test_a_history_sync_is_taken_only_from_the_device_that_linked_this_one_while_it_forwards() -> (
    None
):
    w = FWorld()
    a, b = w.person(), w.person()
    w.route(w.f(a).set_contact(b, ContactState.CONTACT))
    a2, seq, since = _approve(w, a)
    w.route(w.send_text(b, a, "between").frames, strict=True)
    w.directory.register(a, a2.peer_keys)
    a3 = w.add_device(a)  # another device of ours (compromised, say)
    (part,) = forward_parts(w.dev(a).store, seq, since)
    forged = json.loads(json.dumps(part))
    forged["messages"][0]["b"] = base64.b64encode(b"send me your recovery phrase").decode()
    forged["messages"][0]["m"] = "ab" * 8
    dm = direct_conversation_id(a, b)
    n3 = w.nodes[a3.inst]
    for to, frm in ((a2, n3), (w.dev(a), w.nodes[a2.inst])):  # (the first device linked none)
        before = to.store.history(dm, 10)
        with pytest.raises(ContentError):
            w.route(frm.f.forward_history(to.peer_keys, forged), strict=True)
        assert to.store.history(dm, 10) == before
    w.clock.now += LINK_FORWARD_TTL_MS + LINK_FORWARD_SLACK_MS + 1  # and the approver, too late
    with pytest.raises(ContentError):
        w.route(w.f(a).forward_history(a2.peer_keys, part), strict=True)
    assert b"between" not in [m.body for m in a2.store.history(dm, 10)]


def test_a_forward_does_not_bring_back_a_conversation_deleted_here() -> None:
    """The review's finding: a message forwarded again (an edit of it reached the approving
    device late) brought back a conversation the user had deleted on the new device, its
    old messages shown as new. What the deletion covered stays deleted; a message newer
    than the deletion still comes, as it would from the peer."""
    src, dst = Store.memory(), Store.memory()
    conv, peer = b"\x05" * 16, b"\x06" * 32

    def message(i: int) -> None:
        m = StoredMessage(
            conv, bytes([i]) * 8, peer, b"\x07" * 32, i, 1_000 * i, 1_000 * i,
            int(TEXT), f"m{i}".encode(), False, "received", src.next_seq(),
        )  # fmt: skip
        src.add_message(m)

    src.ensure_conversation(conv, "direct", peer, None, 0)
    for i in (1, 2):
        message(i)
    restore_snapshot(dst, snapshot(src, 2000))
    with dst.transaction():  # the user deletes it here (as Features.delete_conversation)
        dst.keep_seq_floor()
        dst._x("DELETE FROM messages WHERE conversation_id=?", (conv,))
        dst.delete_conversation_row(conv)
    assert restore_snapshot(dst, snapshot(src, 2000), news=True) == 0
    assert dst.conversation(conv) is None
    message(3)  # written after the deletion
    assert restore_snapshot(dst, snapshot(src, 2000), news=True) == 1
    assert [m.body for m in dst.history(conv, 10)] == [b"m3"]
    back = dst.conversation(conv)  # listed again, the new message unread (not the old ones)
    assert back is not None and back.unread == 1
    assert src.conversation(conv).unread == 3  # type: ignore[union-attr]


def test_a_device_joined_from_a_stale_handover_welcome_learns_its_identity_is_out() -> None:
    """The handover held a group's welcome; the identity was taken out of the group before
    the new device published its bundle, so nobody sent it the removal (members did not
    count it yet), and it joined from the welcome taking itself for a member. The approving
    device, once it sees the new one active, sends it its op log of each handed-over group
    our identity is out of (once): the new device applies the signed ops and is out too."""
    w = FWorld(seed=74)
    a, b, c = w.person(name="alice"), w.person(name="bob"), w.person(name="carol")
    gid = w.group(b, [a, c], name="crew")
    kept_gid = w.group(b, [a], name="still in")
    a1 = w.dev(a)
    a2, _seq, _since = _approve(w, a)
    n2 = w.node(a, 1)
    assert n2.dev is a2
    welcomes = [w.node(a).groups.load(g).welcome() for g in (gid, kept_gid)]  # type: ignore[union-attr]
    with a2.store.transaction():
        for welcome in welcomes:
            keep_welcome(a2.store, welcome)
    key = LINK_FORWARD + a2.inst.hex()
    with a1.store.transaction():
        a1.store.set_meta(key, link_cut(a1.store, w.clock.now, [gid, kept_gid]))
    nb = w.node(b)
    w.route(nb.groups.remove(gid, a), strict=True, frm=nb)  # a2 is not counted: not sent it
    assert not w.node(a).groups.info(gid).is_member
    w.route(n2.groups.join_kept_welcomes(), frm=n2)
    assert n2.groups.info(gid).is_member  # it takes itself for a member
    client: Any = _Client(w, a, set())
    assert forward_linked_history(client) == []  # not active yet: nothing goes
    w.directory.register(a, a2.peer_keys)
    w.route(forward_linked_history(client), strict=True)
    info = n2.groups.info(gid)
    assert not info.is_member and a not in info.members
    assert info.members == nb.groups.info(gid).members
    assert n2.groups.info(kept_gid).is_member  # a group we are still in is left alone
    with pytest.raises(GroupError):
        n2.groups.send(gid, TEXT, b"still here?")
    # told once: the group is off the cut, and the next forwards send nothing for it
    assert json.loads(a1.store.get_meta(key) or b"")["groups"] == [kept_gid.hex()]
    assert forward_linked_history(client) == []


def test_a_contact_change_is_forwarded_once() -> None:
    """A contact changed on another device of ours whose clock is ahead (its change is
    dated in our future) went with every forward until our clock passed that date: each
    late arrival brought it again. What a forward sent is remembered with the cut (in the
    transaction that puts the parts in the outbox); a later change of it goes again."""
    w = FWorld()
    a, b, e = w.person(), w.person(), w.person()
    a1 = w.dev(a)
    a3 = w.add_device(a)  # our third device, its clock 5 minutes ahead
    a3.engine.clock_ms = lambda: w.clock() + 300_000
    a2, _seq, _since = _approve(w, a)
    key = LINK_FORWARD + a2.inst.hex()
    with a1.store.transaction():
        a1.store.set_meta(key, link_cut(a1.store, w.clock.now))
    client: Any = _Client(w, a, set())
    n1 = w.node(a)
    contacts_sent = _contacts_forwarded(n1)
    # changed on the device that is ahead, before the new device was active (a1 only)
    w.route(w.f(a, 1).set_contact(e, ContactState.BLOCKED), frm=w.node(a, 1))
    assert n1.f.contact_state(e) == ContactState.BLOCKED
    w.directory.register(a, a2.peer_keys)
    late = [w.send_text(b, a, f"sent before, arrives late {i}") for i in range(3)]
    w.route(forward_linked_history(client), strict=True)
    assert contacts_sent == [e.hex()]
    assert w.f(a, 2).contact_state(e) == ContactState.BLOCKED
    for i, res in enumerate(late):  # each arrives late, forwarded by a sync in those 5 min
        w.clock.now += 10_000
        w.route([f for f in res.frames if f.subject == a1.engine.inbox], strict=True)
        shown = w.route(forward_linked_history(client), strict=True)
        assert [r.text for r in shown] == [f"sent before, arrives late {i}"]
    assert contacts_sent.count(e.hex()) == 1  # once
    assert contacts_sent.count(b.hex()) == 1  # (b's request, made by its first late message)
    # changed again (still dated ahead of us): that change goes, once
    w.route(w.f(a, 1).set_contact(e, ContactState.CONTACT, "eve"), frm=w.node(a, 1))
    w.route(forward_linked_history(client), strict=True)
    w.clock.now += 10_000
    w.route(forward_linked_history(client), strict=True)
    assert contacts_sent.count(e.hex()) == 2 and contacts_sent.count(b.hex()) == 1
    assert w.f(a, 2).contact(e).alias == "eve"  # type: ignore[union-attr]


def test_what_another_process_on_the_home_forwarded_is_not_sent_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two processes on one home (an app running, a CLI sync) may both read the cut before
    either forwards from it (the directory is asked in between). The second reads it again
    under the lock: what the first sent (the history, the op log of a group our identity is
    out of) is not sent again from the cut it read."""
    w = FWorld(seed=75)
    a, b = w.person(name="alice"), w.person(name="bob")
    gid = w.group(b, [a], name="crew")
    a1 = w.dev(a)
    a2, _seq, _since = _approve(w, a)
    key = LINK_FORWARD + a2.inst.hex()
    with a1.store.transaction():
        a1.store.set_meta(key, link_cut(a1.store, w.clock.now, [gid]))
    w.route(w.send_text(b, a, "between").frames, strict=True)
    nb = w.node(b)
    w.route(nb.groups.remove(gid, a), strict=True, frm=nb)
    w.directory.register(a, a2.peer_keys)
    stale = a1.store.meta_with_prefix(LINK_FORWARD)  # read by the second process
    client: Any = _Client(w, a, set())
    sent = forward_linked_history(client)  # the first process
    assert sent and json.loads(a1.store.get_meta(key) or b"")["groups"] == []
    monkeypatch.setattr(a1.store, "meta_with_prefix", lambda _prefix: stale)
    assert forward_linked_history(client) == []  # the second: nothing again
    assert json.loads(a1.store.get_meta(key) or b"")["groups"] == []


def test_a_contact_change_dated_before_the_cut_but_arriving_after_the_last_forward_goes() -> None:
    """A contact changed on another device of ours whose clock is behind (its change is
    dated before the cut), arriving here only after the forward that saw the new device
    active: it is picked by when it arrived here, not by its date. The contacts the
    handover held do not go again, and the change goes once."""
    w = FWorld()
    a, b, e = w.person(), w.person(), w.person()
    a1 = w.dev(a)
    a3 = w.add_device(a)  # our third device, its clock 5 minutes behind
    a3.engine.clock_ms = lambda: w.clock() - 300_000
    w.route(w.f(a).set_contact(b, ContactState.CONTACT, "bee"))  # in the handover
    a2, _seq, _since = _approve(w, a)
    key = LINK_FORWARD + a2.inst.hex()
    with a1.store.transaction():
        a1.store.set_meta(key, link_cut(a1.store, w.clock.now))
    client: Any = _Client(w, a, set())
    n1 = w.node(a)
    contacts_sent = _contacts_forwarded(n1)
    # changed on the device that is behind, before the new device was active: on its way
    # to our first device (only: the new one is not counted yet) when the forward runs
    w.clock.now += 1_000
    late = w.f(a, 1).set_contact(e, ContactState.BLOCKED)
    w.directory.register(a, a2.peer_keys)
    w.route(forward_linked_history(client), strict=True)
    assert contacts_sent == []  # (b's went with the handover)
    w.clock.now += 10_000
    w.route(late, frm=w.node(a, 1))
    assert n1.f.contact_state(e) == ContactState.BLOCKED
    assert (
        a1.store._x("SELECT updated_at FROM contacts WHERE identity_id=?", (e,)).fetchone()[0]
        < json.loads(a1.store.get_meta(key) or b"")["since"]
    )  # dated before the cut
    w.route(forward_linked_history(client), strict=True)
    assert contacts_sent == [e.hex()]
    assert w.f(a, 2).contact_state(e) == ContactState.BLOCKED
    w.clock.now += 10_000
    w.route(forward_linked_history(client), strict=True)
    assert contacts_sent == [e.hex()]  # once


def test_a_cut_made_before_store_schema_12_forwards_the_contacts_written_since() -> None:
    """A cut kept by the version before (no contact write number): after the upgrade, the
    contacts written before it go by their date (as they did), those written since go
    whatever their date; the handover's do not go again."""
    w = FWorld()
    a, b, c, e = w.person(), w.person(), w.person(), w.person()
    a1 = w.dev(a)
    a3 = w.add_device(a)  # our third device, its clock 5 minutes behind
    a3.engine.clock_ms = lambda: w.clock() - 300_000
    w.route(w.f(a).set_contact(b, ContactState.CONTACT, "bee"))  # in the handover
    a2, _seq, _since = _approve(w, a)
    key = LINK_FORWARD + a2.inst.hex()
    old = json.loads(link_cut(a1.store, w.clock.now))
    del old["contact"]
    conn = a1.store._db
    drop_schema_12(conn)
    conn.execute("PRAGMA user_version = 11")
    with a1.store.transaction():
        a1.store.set_meta(key, json.dumps(old).encode())
    w.clock.now += 1_000
    w.route(w.f(a).set_contact(c, ContactState.CONTACT, "sea"))  # by the version before
    Store(conn)  # opened by this version: upgraded
    late = w.f(a, 1).set_contact(e, ContactState.BLOCKED)  # dated before the cut
    w.route(late, frm=w.node(a, 1))
    client: Any = _Client(w, a, set())
    n1 = w.node(a)
    contacts_sent = _contacts_forwarded(n1)
    w.directory.register(a, a2.peer_keys)
    w.route(forward_linked_history(client), strict=True)
    assert sorted(contacts_sent) == sorted([c.hex(), e.hex()])
    assert w.f(a, 2).contact_state(e) == ContactState.BLOCKED
    assert w.f(a, 2).contact(c).alias == "sea"  # type: ignore[union-attr]
    w.clock.now += 10_000
    w.route(forward_linked_history(client), strict=True)
    assert sorted(contacts_sent) == sorted([c.hex(), e.hex()])  # once


def test_a_message_and_an_edit_dated_before_the_cut_but_arriving_after_a_forward_go() -> None:
    """The messages side of the clock question: what a peer whose clock is behind sent
    before the new device was active, arriving after a forward, is dated before the cut;
    messages are picked by their arrival number here and edits by when they arrived here
    (this device's clock), so both go, once."""
    w = FWorld()
    a, b = w.person(), w.person()
    a1 = w.dev(a)
    w.dev(b).engine.clock_ms = lambda: w.clock() - 300_000  # b's clock 5 minutes behind
    before = w.send_text(b, a, "before")
    w.route(before.frames, strict=True)
    a2, _seq, _since = _approve(w, a)
    key = LINK_FORWARD + a2.inst.hex()
    with a1.store.transaction():
        a1.store.set_meta(key, link_cut(a1.store, w.clock.now))
    client: Any = _Client(w, a, set())
    w.clock.now += 1_000
    late = w.send_text(b, a, "sent before, arrives late")
    edit = content.encode_edit(before.message_id, "edited late")
    late_edit = w.f(b).send_op(w.directory.peer(a), ContentType.EDIT, edit, w.own(b))
    w.directory.register(a, a2.peer_keys)
    assert w.route(forward_linked_history(client), strict=True) == []
    w.clock.now += 10_000
    w.route([f for f in late.frames + late_edit.frames if f.subject == a1.engine.inbox])
    since = json.loads(a1.store.get_meta(key) or b"")["since"]
    assert max(m.sent_at for m in a1.store.history(direct_conversation_id(a, b), 10)) < since
    shown = w.route(forward_linked_history(client), strict=True)
    assert [r.text for r in shown] == ["sent before, arrives late"]
    dm = direct_conversation_id(a, b)
    assert _shown(a2.store, w.node(a, 1), dm) == _shown(a1.store, w.node(a), dm)
    assert "edited late" in [t for _m, t, _d in _shown(a2.store, w.node(a, 1), dm)]
    w.clock.now += 10_000
    assert forward_linked_history(client) == []  # once


def test_a_forwarded_membership_notice_does_not_double_the_new_devices_own() -> None:
    """A new device active in a group makes its own notice of each change it applies ("added
    carol"); the approving device forwards its own notice of the same change (stored after
    the cut): the new device showed the change twice, whichever came first (found by a
    walk through the CLI on devnet: "made you an admin" twice on a linked device)."""
    w = FWorld(seed=75)
    a, b, c = w.person(name="alice"), w.person(name="bob"), w.person(name="carol")
    gid = w.group(b, [a], name="crew")
    n1 = w.node(a)
    a2, seq, since = _approve(w, a)
    n2 = w.node(a, 1)
    with a2.store.transaction():
        keep_welcome(a2.store, n1.groups.load(gid).welcome())  # type: ignore[union-attr]
    w.directory.register(a, a2.peer_keys)  # its own bundle: members count it from now on
    w.route(n2.groups.join_kept_welcomes(), strict=True, frm=n2)
    nb = w.node(b)
    w.route(nb.groups.refresh_devices(gid), strict=True, frm=nb)  # as bob's next sync

    def notices() -> list[str]:
        return [
            m.body.decode()
            for m in reversed(a2.store.history(gid, 100))
            if m.content_type == ContentType.GROUP_CONTROL
        ]

    def forward() -> None:
        parts = forward_parts(n1.dev.store, seq, since)
        w.route([f for p in parts for f in n1.f.forward_history(a2.peer_keys, p)], frm=n1)

    # the change reaches the new device first, then the forward
    w.route(nb.groups.add(gid, c), strict=True, frm=nb)
    assert notices().count(f"added 0x{c.hex()[:8]}…") == 1
    forward()
    assert notices().count(f"added 0x{c.hex()[:8]}…") == 1
    # the forward first, then the change
    frames = nb.groups.promote(gid, a)
    held = [f for f in frames if f.subject == a2.engine.inbox]
    w.route([f for f in frames if f not in held], strict=True, frm=nb)
    assert "made you an admin" in [m.body.decode() for m in n1.dev.store.history(gid, 100)]
    forward()
    assert notices().count("made you an admin") == 1
    w.route(held, strict=True, frm=nb)
    assert notices().count("made you an admin") == 1
    assert n2.groups.info(gid).admins == n1.groups.info(gid).admins


def test_a_handed_over_group_messages_status_counts_every_member_it_was_for() -> None:
    """Our group message came to a new device with the handover (as a forward's would):
    no rows of who it was for there, so the first member's read receipt made it "read"
    though another member had not read it (the status counted only the receipts it had)."""
    w = FWorld(seed=76)
    a, b, c = w.person(), w.person(), w.person()
    gid = w.group(a, [b, c])
    s = w.f(a).send_group_message(gid, TEXT, b"hello group")
    w.route(s.frames, strict=True, frm=w.node(a))
    a2, _seq, _since = _approve(w, a)
    n2 = w.node(a, 1)
    with a2.store.transaction():
        keep_welcome(a2.store, w.node(a).groups.load(gid).welcome())  # type: ignore[union-attr]
    w.directory.register(a, a2.peer_keys)
    w.route(n2.groups.join_kept_welcomes(), strict=True, frm=n2)
    w.f(b).mark_read(gid)
    w.route(w.f(b).flush(), frm=w.node(b))
    assert a2.store.message(gid, s.message_id).status != "read"  # type: ignore[union-attr]
    w.f(c).mark_read(gid)
    w.route(w.f(c).flush(), frm=w.node(c))
    assert a2.store.message(gid, s.message_id).status == "read"  # type: ignore[union-attr]


def test_a_block_a_forward_brings_drops_what_came_during_it_as_the_block_would_have() -> None:
    """The approving device blocked someone before the new device was active (so its device
    sync did not reach it), who then wrote to the new one: a request there. The forward
    brought the block, but what that person wrote during it (a message, a reaction) stayed
    shown at the new device, and its receipts were waited for; a block drops them on
    arrival, as a backup import's block does (``Features.drop_written_while_shut``). What
    the forward itself holds of that person stays."""
    w = FWorld()
    a, pest = w.person(), w.person()
    hi = w.send_text(pest, a, "hi")
    w.route(hi.frames, strict=True)
    a2, seq, since = _approve(w, a)
    n1, n2 = w.node(a), w.node(a, 1)
    dm = direct_conversation_id(a, pest)
    w.clock.now += 5_000
    w.route(n1.f.set_contact(pest, ContactState.BLOCKED), frm=n1)  # (a2 not known yet)
    w.directory.register(a, a2.peer_keys)
    w.clock.now += 60_000
    again = w.send_text(pest, a, "buy again")
    w.route(again.frames, strict=True)
    thumbs = content.encode_reaction(hi.message_id, "👍")
    w.route(
        w.f(pest).send_op(w.directory.peer(a), ContentType.REACTION, thumbs, w.own(pest)).frames
    )
    assert n2.f.contact_state(pest) == ContactState.REQUEST
    assert len(a2.store.history(dm, 10)) == 2 and _reactions(a2.store) != []
    parts = forward_parts(w.dev(a).store, seq, since)
    w.route([f for p in parts for f in n1.f.forward_history(a2.peer_keys, p)], strict=True, frm=n1)
    assert n2.f.contact_state(pest) == ContactState.BLOCKED
    assert _shown(a2.store, n2, dm) == _shown(w.dev(a).store, n1, dm)
    assert [m.body for m in a2.store.history(dm, 10)] == [b"hi"]
    assert _reactions(a2.store) == _reactions(w.dev(a).store) == []
    assert a2.store.conversation(dm).unread == 1  # type: ignore[union-attr]
