"""Group chat on real anvil + nats-server: a 20-member group, removal secrecy, late joiner."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from chatcore.payload import ContentType
from tests.integration.conftest import People, Person

pytestmark = pytest.mark.devnet

N_MEMBERS = 20


def texts(msgs: list, gid: bytes) -> list[str]:  # type: ignore[type-arg]
    return [
        m.body.decode()
        for m in msgs
        if m.conversation_id == gid and m.content_type == ContentType.TEXT
    ]


async def sync_all(people: list[Person]) -> dict[str, list]:  # type: ignore[type-arg]
    out = {}
    for p in people:
        out[p.name] = await p.c.sync()
    return out


async def test_twenty_member_group_removal_and_late_joiner(people: People) -> None:
    members = [people.new(f"m{i:02d}") for i in range(N_MEMBERS)]
    admin, rest = members[0], members[1:]
    gid = await admin.c.create_group("big", [p.name for p in rest])

    got = await sync_all(rest)
    for p in rest:
        info = p.c.groups.info(gid)
        assert info.is_member, p.name
        assert len(info.members) == N_MEMBERS
        assert info.admins == frozenset({admin.c.identity_id})
        # the join notice is in their history
        assert any(m.content_type == ContentType.GROUP_CONTROL for m in got[p.name])
    await admin.c.sync()  # receives everyone's sender keys

    # one message from a member reaches all others exactly once
    sender = rest[4]
    res = await sender.c.send_group_text("big", "hello twenty")
    assert len(res.frames) == 1  # encrypted once, published once
    got = await sync_all([m for m in members if m is not sender])
    for name, msgs in got.items():
        assert texts(msgs, gid) == ["hello twenty"], name
    again = await sync_all(members)  # nothing is delivered twice
    assert all(texts(v, gid) == [] for v in again.values())

    # removal: the removed member reads nothing sent afterwards
    removed = members[-1]
    await admin.c.group_change("big", "remove", removed.name)
    await sync_all(members)
    assert not removed.c.groups.info(gid).is_member
    writer = rest[2]
    await writer.c.send_group_text("big", "after the removal")
    got = await sync_all([m for m in members if m is not writer])
    assert texts(got[removed.name], gid) == []
    for p in members[:-1]:
        if p is not writer:
            assert texts(got[p.name], gid) == ["after the removal"], p.name
    assert all(len(p.c.groups.info(gid).members) == N_MEMBERS - 1 for p in members[:-1])

    # a late joiner reads what is sent after joining, nothing before
    late = people.new("late")
    await admin.c.group_change("big", "add", late.name)
    await sync_all([*members[:-1], late])
    await sync_all([admin])
    await rest[0].c.send_group_text("big", "welcome late")
    got = await sync_all([late])
    assert texts(got[late.name], gid) == ["welcome late"]
    hist = [m.body.decode() for m in late.c.history(gid, 100) if m.content_type == 1]
    assert "hello twenty" not in hist and "after the removal" not in hist


async def test_removed_member_cannot_send_and_non_member_frames_are_dropped(
    people: People,
) -> None:
    a, b, c = people.new("ga"), people.new("gb"), people.new("gc")
    gid = await a.c.create_group("trio", [b.name, c.name])
    await sync_all([b, c, a])
    await a.c.group_change("trio", "remove", c.name)
    await sync_all([b, c, a])
    # c still has stale keys for the old epoch but is no longer a member
    from chatcore.errors import GroupError

    with pytest.raises(GroupError):
        await c.c.send_group_text("0x" + gid.hex(), "sneaky")
    # a frame published on the topic by someone outside the group is dropped, state unchanged
    from chatcore.groupchat import group_topic

    before = b.c.store.group_state(gid)
    transport = await c.c.connect()
    await transport.publish(group_topic(gid), b"\x13" + b"\x00" * 120)
    got = await b.c.sync()
    assert texts(got, gid) == []
    assert b.c.store.group_state(gid) == before
    await asyncio.sleep(0)


def _story(person: Person, gid: bytes) -> list[str]:
    """The group's history as the person sees it: texts and notices, in order."""
    return [
        m.body.decode()
        for m in person.c.history(gid, 100)
        if m.content_type in (ContentType.TEXT, ContentType.GROUP_CONTROL)
    ]


async def test_an_offline_member_sees_changes_between_the_messages_around_them(
    people: People,
) -> None:
    # the ops come pairwise (inbox), the messages on the group topic: a member catching up
    # must still see each change after what was written before it and before what came after
    a, b, c, d = people.new("oa"), people.new("ob"), people.new("oc"), people.new("od")
    gid = await a.c.create_group("story", [b.name, c.name])
    await sync_all([b, c, a])
    await a.c.send_group_text("story", "one")
    await a.c.send_group_text("story", "two")
    await a.c.group_change("story", "add", d.name)
    await a.c.group_change("story", "promote", b.name)
    await a.c.send_group_text("story", "three")
    await a.c.group_change("story", "remove", c.name)
    await a.c.send_group_text("story", "four")
    await b.c.sync()
    story = _story(b, gid)
    story = story[story.index("one") :]
    assert story[:2] == ["one", "two"], story
    assert story[2].startswith("added od") and story[3] == "made you an admin", story
    assert story[4] == "three" and story[5].startswith("removed oc"), story
    assert story[6:] == ["four"], story
    # the author's own history shows its changes in the same places
    mine = _story(a, gid)
    mine = mine[mine.index("one") :]
    assert [m.split("-")[0] for m in mine] == [
        "one",
        "two",
        "added od",
        "made ob",
        "three",
        "removed oc",
        "four",
    ], mine


async def test_a_member_catching_up_reads_messages_unlocked_by_new_keys_in_place(
    people: People,
) -> None:
    # a removal makes d hand out a new sender key (pairwise, no notice); d's next message
    # needs it: read on after the key arrives, it comes before the next change
    a, b, c, d, e = (people.new(n) for n in ("ka", "kb", "kc", "kd", "ke"))
    gid = await a.c.create_group("keys", [b.name, c.name, d.name])
    await sync_all([b, c, d, a])
    await sync_all([b, c, d, a])
    await a.c.send_group_text("keys", "one")
    await a.c.group_change("keys", "remove", c.name)
    await d.c.sync()
    await d.c.send_group_text("keys", "x from d")
    await a.c.sync()
    await a.c.group_change("keys", "add", e.name)
    await a.c.send_group_text("keys", "z")
    await b.c.sync()
    story = _story(b, gid)
    story = story[story.index("one") :]
    assert [s.split("-")[0] for s in story] == ["one", "removed kc", "x from d", "added ke", "z"]


async def test_a_message_sent_after_deleting_the_conversation_here_sorts_last(
    people: People,
) -> None:
    """Review finding: ``delete_conversation`` dropped the conversation's Lamport clock with
    it, so the next message written there (the group, or the person, still there) took
    clock 1 and showed at the top of the conversation at every peer, before the history."""
    a, b = people.new("da"), people.new("db")
    gid = await a.c.create_group("kept", [b.name])
    await b.c.sync()
    for i in range(3):
        await a.c.send_group_text(gid, f"old {i}")
        await a.c.send_text(b.name, f"old {i}")
    await b.c.sync()
    direct = b.c.conversation_id(a.name)
    b.c.delete_conversation(gid)
    b.c.delete_conversation(direct)
    await b.c.send_group_text(gid, "new")
    await b.c.send_text(a.name, "new")
    await a.c.sync()
    for conv in (gid, a.c.conversation_id(b.name)):
        shown = [m.body.decode() for m in a.c.history(conv, 100) if m.content_type == 1]
        assert shown[-1] == "new", shown


async def test_a_member_added_by_an_admin_removed_meanwhile_learns_it_is_not_in(
    people: People,
) -> None:
    """Review finding: an add concurrent with its author's removal is void, but the
    newcomer had the author's welcome and nobody else knew it: it took itself for a member
    for good (sending to nobody, reading nothing, no error). The author tells it now."""
    from chatcore.errors import GroupError

    a, b, c, f = (people.new(n) for n in ("va", "vb", "vc", "vf"))
    gid = await a.c.create_group("void", [b.name, c.name])
    await sync_all([b, c, a])
    await a.c.group_change(gid, "promote", b.name)
    await sync_all([b, c, a])
    await a.c.group_change(gid, "remove", b.name)  # concurrently: b adds f
    await b.c.group_change(gid, "add", f.name)
    got = await sync_all([f, c, a, b, f])
    assert f.c.groups.info(gid).members == a.c.groups.info(gid).members
    assert not f.c.groups.info(gid).is_member
    assert "you are no longer a member" in [r.text for r in got[f.name]]
    with pytest.raises(GroupError):
        await f.c.send_group_text(gid, "hello?")


async def test_an_admins_rename_reaches_every_member_and_a_non_admins_is_refused(
    people: People,
) -> None:
    from chatcore.errors import GroupError, UnknownContact

    a, b, c = people.new("na"), people.new("nb"), people.new("nc")
    gid = await a.c.create_group("before", [b.name, c.name])
    await sync_all([b, c, a])
    await c.close()  # c is offline while the group is renamed
    # a member who is not an admin: refused, nothing changes for anyone
    state = b.c.store.group_state(gid)
    with pytest.raises(GroupError, match="only an admin can rename"):
        await b.c.rename_group("before", "b's name")
    assert b.c.store.group_state(gid) == state and b.c.group_info(gid).name == "before"
    with pytest.raises(ValueError, match="control characters"):
        await a.c.rename_group(gid, "two\nlines")
    await a.c.rename_group("before", "after")
    assert a.c.find_group("after") == gid
    with pytest.raises(UnknownContact):
        a.c.find_group("before")
    await b.c.sync()
    c.open()
    await c.c.sync()
    for p in (a, b, c):
        assert p.c.group_info(gid).name == "after", p.name
        assert [v.title for v in p.c.conversations() if v.id == gid] == ["after"], p.name
        assert _story(p, gid)[-1] == "renamed the group to “after”", p.name
    # b's refused rename left nothing behind that reaches the others
    await sync_all([a, c])
    assert {p.c.group_info(gid).name for p in (a, b, c)} == {"after"}


async def test_leave_with_a_member_is_refused_and_leaves_nobody(people: People) -> None:
    """Review finding: ``group_change(g, "leave", who)`` ignored ``who`` and took us out of
    the group (an admin meaning to remove someone left instead)."""
    a, b = people.new("la"), people.new("lb")
    gid = await a.c.create_group("stay", [b.name])
    await b.c.sync()
    for p, other in ((a, b), (b, a)):
        with pytest.raises(ValueError, match="leave takes no member"):
            await p.c.group_change(gid, "leave", other.name)
    await sync_all([a, b])
    for p in (a, b):
        info = p.c.group_info(gid)
        assert info.is_member and info.members == {a.c.identity_id, b.c.identity_id}, p.name
    with pytest.raises(ValueError, match="rename_group"):
        await a.c.group_change(gid, "rename", "other")


def heard(p: Person, gid: bytes) -> set[tuple[str, bytes]]:
    """What ``p`` remembers of the devices ("gdev:") and members ("gmem:") heard in the
    group, for the new-device notice: (kind, installation or identity)."""
    out = set()
    for kind in ("gdev:", "gmem:"):
        for key, _ in p.c.store.meta_with_prefix(kind + gid.hex()):
            out.add((kind, bytes.fromhex(key[len(kind) + 64 :])))
    return out


def device_notices(p: Person, gid: bytes, who: Person) -> list[str]:
    return [
        m.body.decode()
        for m in p.c.history(gid, 500)
        if m.sender_identity == who.c.identity_id
        and m.content_type == ContentType.GROUP_CONTROL
        and "writing from device" in m.body.decode()
    ]


async def test_what_the_new_device_notice_remembers_goes_with_the_member_or_the_group(
    people: People,
) -> None:
    """The meta rows that say a member's device was heard in a group ("gdev:" per device,
    "gmem:" per member) were never deleted: they grew with every member gone and every group
    left. They go now with the member (removed or left) and with the group when we leave it;
    a member back later is judged by the history here (no notice for a device they wrote
    from before), and a new device of theirs still gets its notice."""
    a, b, c = people.new("ha"), people.new("hb"), people.new("hc")
    gid = await a.c.create_group("heard", [b.name, c.name])
    await sync_all([b, c])
    await b.c.send_group_text(gid, "from b")
    await c.c.send_group_text(gid, "from c")
    await sync_all([a, b, c])
    b_dev, c_dev = b.c.installation_id, c.c.installation_id
    b_rows = {("gdev:", b_dev), ("gmem:", b.c.identity_id)}
    c_rows = {("gdev:", c_dev), ("gmem:", c.c.identity_id)}
    assert heard(a, gid) == b_rows | c_rows
    assert heard(b, gid) == c_rows

    await a.c.group_change(gid, "remove", c.name)  # c's rows go, at the admin and at b
    await sync_all([b, c])
    assert heard(a, gid) == b_rows and heard(b, gid) == set()
    assert c.c.store.meta_with_prefix("gdev:" + gid.hex()) == []  # c is out: all of them

    await a.c.group_change(gid, "add", c.name)  # back: the same device, no notice
    await sync_all([b, c])
    await c.c.send_group_text(gid, "back again")
    await sync_all([a, b])
    for p in (a, b):
        assert texts(p.c.history(gid, 500), gid)[-1] == "back again", p.name
        assert device_notices(p, gid, c) == [], p.name
    assert heard(a, gid) == b_rows | c_rows

    await b.c.group_change(gid, "leave")  # b's rows go at a; all of b's own go
    await sync_all([a, c])
    assert heard(a, gid) == c_rows and heard(b, gid) == set()
    assert b.c.store.meta_with_prefix("gmem:" + gid.hex()) == []
    await a.c.send_group_text(gid, "still going")
    await c.c.sync()
    assert texts(c.c.history(gid, 500), gid)[-1] == "still going"


async def test_a_group_retransmission_is_no_warning_at_members_that_had_the_message(
    people: People, caplog: pytest.LogCaptureFixture
) -> None:
    """A group message is retransmitted as its first frame again while a member has not
    acknowledged it, so every member that read it gets that frame once more: each logged
    "dropped frame ...: DuplicateMessage" as a WARNING, as for a forged or damaged frame — in
    an app's log for every retransmission to a member who is away (an embedding review)."""
    alice, bob, carol = people.new("ra"), people.new("rb"), people.new("rc")
    gid = await alice.c.create_group("retransmitted", [bob.name, carol.name])
    sent = await alice.c.send_group_text(gid, "are you there?")
    assert "are you there?" in texts(await bob.c.sync(), gid)
    await alice.c.sync()  # bob's receipt; carol is away
    clock = alice.c.engine.clock_ms
    alice.c.engine.clock_ms = lambda: clock() + 7 * 3600 * 1000  # past the first backoff
    assert await alice.c.flush_features() > 0  # the retransmission
    with caplog.at_level("INFO", logger="chatcore.client"):
        assert texts(await bob.c.sync(), gid) == []  # the copy: dropped, nothing new
    dropped = [r for r in caplog.records if "DuplicateMessage" in r.getMessage()]
    assert dropped, "the copy was read and dropped"
    assert all(r.levelname == "INFO" for r in dropped), [r.levelname for r in dropped]
    assert [m.message_id for m in bob.c.history(gid) if m.content_type == ContentType.TEXT] == [
        sent.message_id
    ]
    assert "are you there?" in texts(await carol.c.sync(), gid)  # the one it was for


async def test_a_member_out_of_a_group_sends_its_members_no_read_receipts(
    people: People, caplog: pytest.LogCaptureFixture
) -> None:
    """Reading a group one was removed from (its "removed you" notice makes it unread) or
    left sent read receipts to the authors of what was read: frames about a group we are no
    longer in, which every author dropped with a warning ("a group receipt for a group we do
    not share with the sender")."""
    alice, bob, carol = people.new("xa"), people.new("xb"), people.new("xc")
    gid = await alice.c.create_group("out of it", [bob.name, carol.name])
    await alice.c.send_group_text(gid, "before")
    await bob.c.sync()
    await carol.c.sync()
    await alice.c.sync()  # their delivered receipts, while they are members
    await alice.c.group_change(gid, "remove", bob.name)
    await carol.c.sync()
    await carol.c.group_change(gid, "leave")
    await alice.c.sync()
    for p in (bob, carol):
        await p.c.sync()
        assert not p.c.group_info(gid).is_member
        assert await p.c.mark_read(gid) > 0  # "before" and the notices: read here
        await p.c.flush_features()
    with caplog.at_level("INFO", logger="chatcore"):
        await alice.c.sync()
    dropped = [r.getMessage() for r in caplog.records if "dropped frame" in r.getMessage()]
    assert dropped == []
    # a member's read receipts still reach the author
    dave = people.new("xd")
    await alice.c.group_change(gid, "add", dave.name)
    sent = await alice.c.send_group_text(gid, "after")
    await dave.c.sync()
    await dave.c.mark_read(gid)
    await alice.c.sync()
    assert alice.c.receipts(alice.c.message(sent.message_id)) == {dave.c.identity_id: "read"}


async def test_what_a_group_posts_after_we_are_out_of_it_is_no_warning(
    people: People, caplog: pytest.LogCaptureFixture
) -> None:
    """A member removed from a group (or that left it) still reads its topic (it may be
    added again), and each message posted there since, which it cannot read by design, was
    logged as a WARNING ("dropped frame ...: GroupError: unknown sender key"): one per message
    of every group the user was ever out of, in an app's log (an embedding review)."""
    alice, bob, carol = people.new("oa"), people.new("ob"), people.new("oc")
    gid = await alice.c.create_group("after us", [bob.name, carol.name])
    await bob.c.sync()
    await carol.c.sync()
    await alice.c.group_change(gid, "remove", bob.name)
    await carol.c.group_change(gid, "leave")
    for p in (bob, carol):
        await p.c.sync()
        assert not p.c.group_info(gid).is_member
    await alice.c.send_group_text(gid, "not for you")
    for p in (bob, carol):
        caplog.clear()
        with caplog.at_level("INFO", logger="chatcore.client"):
            assert texts(await p.c.sync(), gid) == []
        dropped = [r for r in caplog.records if "dropped frame" in r.getMessage()]
        assert dropped, "the frame was read, and dropped"
        assert all(r.levelname == "INFO" for r in dropped), [r.getMessage() for r in dropped]
        assert "not for you" not in texts(p.c.history(gid), gid)


async def test_a_member_who_sends_without_a_sync_does_not_write_to_one_just_removed(
    people: People,
) -> None:
    """alice removes carol; bob, who has not synced since, sends at once: the message went
    out on the key carol held, and carol's next sync showed it (found on a devnet walk). A
    group send reads the inbox first; what it brings is returned by bob's next sync."""
    alice, bob, carol = people.new("rsa"), people.new("rsb"), people.new("rsc")
    gid = await alice.c.create_group("quick", [bob.name, carol.name])
    await sync_all([bob, carol, alice, bob, carol])
    await alice.c.group_change("quick", "remove", carol.name)
    await bob.c.send_group_text("quick", "right after the removal")
    got = await sync_all([carol, alice])
    assert not carol.c.groups.info(gid).is_member
    assert texts(got[carol.name], gid) == []
    assert texts(got[alice.name], gid) == ["right after the removal"]
    notices = [m for m in await bob.c.sync() if m.conversation_id == gid]
    assert any(m.content_type == ContentType.GROUP_CONTROL for m in notices)  # not lost


class _Gated:
    """A subscription whose deliveries wait for ``gate`` (the listener is slower to take
    a frame than another process on its home)."""

    def __init__(self, inner: Any, gate: asyncio.Event) -> None:
        self.inner, self.gate = inner, gate

    def __aiter__(self) -> _Gated:
        return self

    async def __anext__(self) -> Any:
        d = await self.inner.__anext__()
        await self.gate.wait()
        return d

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_group_send_beside_a_listener_on_the_home_leaves_it_what_arrives(
    people: People,
) -> None:
    """A group send reads our inbox first; one made by a process of the home while another
    one listened (a CLI 'group send' beside a running 'chat') took what arrived then, and
    the listener dropped it as read: the chat never showed it. A listener on the home
    applies the changes as they come, so a send beside it reads nothing."""
    from chatcore.client import Client

    from .conftest import PASSPHRASE

    alice, bob = people.new("gla"), people.new("glb")
    gid = await alice.c.create_group("beside", [bob.name])
    await alice.c.send_text(bob.name, "hi")
    await bob.c.sync()
    listener = Client.open(alice.home, PASSPHRASE, alice.network)
    transport = await listener.connect()
    gate = asyncio.Event()
    subscribe = transport.subscribe

    async def gated(*args: Any, **kwargs: Any) -> Any:
        return _Gated(await subscribe(*args, **kwargs), gate)

    transport.subscribe = gated  # type: ignore[method-assign]
    shown: list[str] = []
    arrived = asyncio.Event()

    async def listen() -> None:
        async for r in listener.listen():
            if r.content_type == ContentType.TEXT:
                shown.append(r.body.decode())
                if r.body == b"from bob":
                    arrived.set()

    task = asyncio.create_task(listen())
    try:
        for _ in range(600):
            if listener._sub is not None:
                break
            await asyncio.sleep(0.05)
        await bob.c.send_text(alice.name, "from bob")
        await alice.c.send_group_text(gid, "from alice's other process")
        gate.set()
        await asyncio.wait_for(arrived.wait(), 30)
        assert "from bob" in shown
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await listener.aclose()
    got = await bob.c.sync()
    assert texts(got, gid) == ["from alice's other process"]
