"""Content bodies (chatcore.content): round trips and malformed input."""

from __future__ import annotations

import pytest

from chatcore import content as c
from chatcore.errors import MalformedMessage
from chatcore.payload import ContentType

MID = b"\x01" * 8


def test_round_trips() -> None:
    assert c.decode_targeted(ContentType.EDIT, c.encode_edit(MID, "new")) == c.Targeted(MID, "new")
    assert c.decode_targeted(ContentType.REPLY, c.encode_reply(MID, "re")).text == "re"
    assert c.decode_targeted(ContentType.REACTION, c.encode_reaction(MID, "👍")).text == "👍"
    assert c.decode_targeted(ContentType.REACTION, c.encode_reaction(MID, "")).text == ""
    assert c.decode_targeted(ContentType.DELETE, c.encode_delete(MID)) == c.Targeted(MID, "")
    assert c.decode_typing(c.encode_typing(True)) is True
    assert c.decode_typing(c.encode_typing(False)) is False
    ids = [bytes([i]) * 8 for i in range(5)]
    assert c.decode_receipt(c.encode_receipt(c.ReceiptKind.READ, ids)) == (
        c.ReceiptKind.READ,
        tuple(ids),
    )
    for item in (
        c.SyncContact(b"\x02" * 32, c.ContactState.BLOCKED, "Bö"),
        c.SyncContact(b"\x02" * 32, c.ContactState.NONE, None),
        c.SyncConv(b"\x03" * 16, True, False),
        c.SyncConv(b"\x04" * 32, False, True),  # a group
        c.SyncSetting(False),
        c.SyncOwnerKey(b"\x05" * 32),
    ):
        assert c.decode_sync(c.encode_sync(item)) == item
    assert c.display_text(ContentType.REPLY, c.encode_reply(MID, "x")) == "x"
    assert c.reply_target(ContentType.REPLY, c.encode_reply(MID, "x")) == MID
    assert c.reply_target(ContentType.TEXT, b"plain") is None


@pytest.mark.parametrize(
    ("ct", "body"),
    [
        (ContentType.EDIT, b"short"),
        (ContentType.EDIT, MID + b"   "),
        (ContentType.EDIT, MID + b"\xff\xfe"),
        (ContentType.DELETE, MID + b"x"),
        (ContentType.REACTION, MID + b"x" * 33),
        (ContentType.TEXT, MID + b"x"),
    ],
)
def test_malformed_targeted(ct: ContentType, body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        c.decode_targeted(ct, body)


@pytest.mark.parametrize(
    "fn,body",
    [
        (c.decode_typing, b""),
        (c.decode_typing, b"\x02"),
        (c.decode_receipt, b"\x01"),
        (c.decode_receipt, b"\x01" + b"\x00" * 9),
        (c.decode_receipt, b"\x03" + b"\x00" * 8),
        (c.decode_receipt, b"\x01" + b"\x00" * 8 * 513),
        (c.decode_sync, b""),
        (c.decode_sync, b"\x01" + b"\x00" * 10),
        (c.decode_sync, b"\x01" + b"\x00" * 32 + b"\x09"),
        (c.decode_sync, b"\x02" + b"\x00" * 16 + b"\x04"),
        (c.decode_sync, b"\x02" + b"\x00" * 24 + b"\x01"),  # neither 1:1 nor group id
        (c.decode_sync, b"\x03\x02"),
        (c.decode_sync, b"\x04" + b"\x05" * 31),  # owner key too short
        (c.decode_sync, b"\x09"),
    ],
)
def test_malformed_bodies(fn, body: bytes) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MalformedMessage):
        fn(body)


def test_encoders_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError):
        c.encode_edit(b"short", "x")
    with pytest.raises(ValueError):
        c.encode_edit(MID, "  ")
    with pytest.raises(ValueError):
        c.encode_reaction(MID, "two words")
    with pytest.raises(ValueError):
        c.encode_receipt(c.ReceiptKind.READ, [])


@pytest.mark.parametrize("bad", [42, None, b"hi", ["hi"]])
def test_text_and_emoji_that_are_no_strings_are_a_type_error(bad: object) -> None:
    """An app passing a non-string gets TypeError (docs/api.md: bad arguments raise
    ValueError/TypeError), not an AttributeError from deep inside."""
    with pytest.raises(TypeError, match="must be a string"):
        c.check_text(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a string"):
        c.encode_reply(MID, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a string"):
        c.encode_reaction(MID, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "emoji",
    ["👍", "❤️", "👍🏽", "👩‍👩‍👧", "🇫🇷", "1️⃣", "#️⃣", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "☺", "🎉", ""],
)
def test_a_reaction_is_an_emoji(emoji: str) -> None:
    """Emoji with skin tones, joiners, flags (regional indicators, tag sequences) and
    keycaps; "" takes a reaction back."""
    assert c.decode_targeted(ContentType.REACTION, c.encode_reaction(MID, emoji)).text == emoji


@pytest.mark.parametrize(
    "bad",
    [
        "hello",
        "x",
        "1",
        "\x1b[31m",
        "👍\u202e",
        "\u200d👍",
        "\ufe0f",
        "👍 ",
        ":+1:",
        "a👍",
        "^^",
        "`",
    ],
)
def test_a_reaction_that_is_text_or_control_characters_is_refused(bad: str) -> None:
    """react() took any string of up to 32 bytes without spaces, though its error said 'one
    emoji': text, terminal escapes, bidi overrides. It takes emoji only; received reactions
    with control characters are malformed (other clients' text reactions still show)."""
    with pytest.raises(ValueError, match="emoji"):
        c.encode_reaction(MID, bad)
    body = MID + b"\x1b[31m"
    with pytest.raises(MalformedMessage):
        c.decode_targeted(ContentType.REACTION, body)
    assert c.decode_targeted(ContentType.REACTION, MID + b":+1:").text == ":+1:"


@pytest.mark.parametrize("bad", ["  ", "Bobby\n", "Bo\x1bb", "\u202eboB", "x" * 65])
def test_an_alias_that_is_blank_or_holds_control_characters_is_refused(bad: str) -> None:
    """Aliases took blank text and control characters (group names did not)."""
    with pytest.raises(ValueError, match="alias"):
        c.check_alias(bad)
    assert c.check_alias("Bob (work)") == "Bob (work)" and c.check_alias("") == ""
