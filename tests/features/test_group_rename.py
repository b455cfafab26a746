"""Renaming a group (GroupChat.rename, the protocol's RENAME op): an admin's new name reaches
every member with a notice and becomes the conversation's title; a non-admin's is refused
and changes nothing; a name is checked as at creation (blank, too long, control
characters, like an id: ValueError)."""

from __future__ import annotations

import pytest

from chatcore.errors import GroupError
from chatcore.group.consts import MAX_NAME_BYTES
from chatcore.payload import ContentType
from tests.features import FWorld

BAD_NAMES = [
    "",
    "   ",
    "x" * (MAX_NAME_BYTES + 1),
    "é" * (MAX_NAME_BYTES // 2 + 1),  # too long in UTF-8 bytes, not in characters
    "two\nlines",
    "tab\there",
    "bell\x07",
    "esc \x1b]0;pwned\x07",
    "del\x7f",
    "c1\x85",
    "rtl \u202e override",
    "isolate \u2066x\u2069",
    "line\u2028separator",
    "0x1234abcd",
]


def _notices(w: FWorld, who: bytes, gid: bytes) -> list[str]:
    return [
        m.body.decode()
        for m in w.dev(who).store.history(gid, 100)
        if m.content_type == ContentType.GROUP_CONTROL
    ]


def test_an_admins_rename_reaches_every_member_even_one_offline_at_the_time() -> None:
    w = FWorld(seed=31)
    alice, bob, carol = (w.person(name=n) for n in ("alice", "bob", "carol"))
    gid = w.group(alice, [bob, carol], name="crew")
    ga = w.node(alice).groups
    frames = ga.rename(gid, "deck ⚓")
    # carol is offline: what is for her waits (in her inbox) until she reads it
    inbox = w.dev(carol).engine.inbox
    assert any(f.subject == inbox for f in frames)
    w.route([f for f in frames if f.subject != inbox], strict=True, frm=w.node(alice))
    assert w.node(bob).groups.info(gid).name == "deck ⚓"
    assert w.node(carol).groups.info(gid).name == "crew"
    w.route([f for f in frames if f.subject == inbox], strict=True, frm=w.node(alice))
    for who in (alice, bob, carol):
        assert w.node(who).groups.info(gid).name == "deck ⚓", who
        conv = w.dev(who).store.conversation(gid)
        assert conv is not None and conv.title == "deck ⚓"
        assert "renamed the group to “deck ⚓”" in _notices(w, who, gid)[-1], who
    # renamed again: the later name wins everywhere
    w.route(ga.rename(gid, "bridge"), strict=True, frm=w.node(alice))
    assert {w.node(p).groups.info(gid).name for p in (alice, bob, carol)} == {"bridge"}


def test_a_non_admin_cannot_rename_and_nothing_changes() -> None:
    w = FWorld(seed=32)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    gid = w.group(alice, [bob], name="crew")
    gb = w.node(bob).groups
    before = w.dev(bob).store.group_state(gid)
    outbox = w.dev(bob).store.outbox_size()
    with pytest.raises(GroupError, match="only an admin can rename"):
        gb.rename(gid, "mine now")
    assert w.dev(bob).store.group_state(gid) == before
    assert w.dev(bob).store.outbox_size() == outbox
    assert gb.info(gid).name == w.node(alice).groups.info(gid).name == "crew"
    # the same name again is no change
    with pytest.raises(GroupError, match="already has this name"):
        w.node(alice).groups.rename(gid, "crew")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_name_is_refused_at_rename(name: str) -> None:
    w = FWorld(seed=33)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    gid = w.group(alice, [bob], name="crew")
    before = w.dev(alice).store.group_state(gid)
    with pytest.raises(ValueError):
        w.node(alice).groups.rename(gid, name)
    assert w.dev(alice).store.group_state(gid) == before


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_name_is_refused_at_creation(name: str) -> None:
    """Creation had checked blank names and ids only: a name with an escape sequence, a
    newline or a bidi override made a group."""
    w = FWorld(seed=35)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    with pytest.raises(ValueError):
        w.node(alice).groups.create(name, [bob])
    assert w.dev(alice).store.group_ids() == []


def test_a_name_that_is_not_text_is_a_type_error() -> None:
    w = FWorld(seed=34)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    gid = w.group(alice, [bob], name="crew")
    with pytest.raises(TypeError):
        w.node(alice).groups.rename(gid, b"crew2")  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [36, 37, 38])
def test_concurrent_renames_converge_and_each_notice_says_what_its_author_chose(
    seed: int,
) -> None:
    """Two admins renaming at once: every member ends with the same name (the op order
    decides), and each notice tells the name its author gave, not the one that stands (a
    notice said the loser had renamed the group to the winner's name); the loser's, where
    it comes after the winner's, says which name stays."""
    w = FWorld(seed=seed)
    alice, bob, carol = (w.person(name=n) for n in ("alice", "bob", "carol"))
    gid = w.group(alice, [bob, carol], name="crew")
    w.route(w.node(alice).groups.promote(gid, bob), strict=True, frm=w.node(alice))
    chosen = {alice: "alpha", bob: "bravo"}
    frames = {who: w.node(who).groups.rename(gid, name) for who, name in chosen.items()}
    for who, fr in frames.items():
        w.route(fr, strict=True, frm=w.node(who))
    names = {w.node(p).groups.info(gid).name for p in (alice, bob, carol)}
    assert len(names) == 1 and names <= set(chosen.values())
    (stands,) = names
    for p in (alice, bob, carol):
        conv = w.dev(p).store.conversation(gid)
        assert conv is not None and conv.title == stands
        renames = [
            m
            for m in w.dev(p).store.history(gid, 100)
            if m.content_type == ContentType.GROUP_CONTROL and b"renamed" in m.body
        ]
        assert {m.sender_identity for m in renames} == set(chosen)
        for m in renames:
            body = m.body.decode()
            assert f"renamed the group to “{chosen[m.sender_identity]}”" in body, body
        # the one read last says which name stays
        last = max(renames, key=lambda m: m.seq).body.decode()
        assert last.endswith(f"“{stands}”"), last


def test_a_name_of_the_full_length_is_taken() -> None:
    w = FWorld(seed=35)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    longest = "é" * (MAX_NAME_BYTES // 2) + "x" * (MAX_NAME_BYTES % 2)  # just MAX_NAME_BYTES
    assert len(longest.encode()) == MAX_NAME_BYTES
    gid = w.group(alice, [bob], name=longest)
    w.route(w.node(alice).groups.rename(gid, "x" * MAX_NAME_BYTES), strict=True,
            frm=w.node(alice))  # fmt: skip
    assert w.node(bob).groups.info(gid).name == "x" * MAX_NAME_BYTES
