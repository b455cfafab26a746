"""'group list' says how we stand in each group (no devnet: a stand-in client)."""

from __future__ import annotations

from chatcore.groupchat import GroupInfo
from cli.main import group_doc, group_text


class _Store:
    def peer_display(self, identity: bytes) -> str | None:
        return {ANN: "ann"}.get(identity)  # (ours is not remembered as a peer's)


class _Client:
    identity_id = b"\x01" * 32
    store = _Store()

    def __init__(self, info: GroupInfo) -> None:
        self.info = info

    def group_info(self, gid: bytes) -> GroupInfo:
        return self.info

    def display(self, identity: bytes) -> str:
        if identity == ME:
            return "me"
        return "ann" if identity == ANN else "0x" + identity.hex()[:12] + "…"


ME, ANN, NONAME, GID = b"\x01" * 32, b"\x02" * 32, b"\x04" * 32, b"\x03" * 32


def _line(is_member: bool, held_out: bool, members: frozenset[bytes]) -> tuple[dict, str]:
    info = GroupInfo(GID, "team", 3, members, frozenset({ANN}), is_member, "t", held_out)
    shown: dict[str, str] = {}
    doc = group_doc(_Client(info), GID, shown)
    return doc, group_text([doc], shown).splitlines()[0]


def test_group_list_says_we_hold_ourselves_out_though_the_members_show_us() -> None:
    doc, line = _line(False, True, frozenset({ME, ANN}))
    assert doc["held_out"] is True and doc["is_member"] is False  # --json says it too
    assert "held out" in line and "not a member" not in line
    assert "group leave" in line  # (what the user can do about it)
    doc, line = _line(False, False, frozenset({ANN}))
    assert doc["held_out"] is False and line.endswith("(you are not a member)")
    doc, line = _line(True, False, frozenset({ME, ANN}))
    assert "member" not in line and "held out" not in line


def test_group_json_gives_names_not_what_the_text_shows_for_them() -> None:
    """--json: a member's ``name`` is their verified name or null, ours null with ``me``
    (as ``sender_name`` in history): not "me", nor a short id with an ellipsis, which a
    script would take for names. The text still shows those."""
    info = GroupInfo(GID, "team", 3, frozenset({ME, ANN, NONAME}), frozenset({ME}), True, "t")
    shown: dict[str, str] = {}
    doc = group_doc(_Client(info), GID, shown)
    people = {m["identity_id"]: (m["name"], m["me"]) for m in doc["members"]}
    assert people == {
        "0x" + ME.hex(): (None, True),
        "0x" + ANN.hex(): ("ann", False),
        "0x" + NONAME.hex(): (None, False),
    }
    assert doc["admins"] == [{"identity_id": "0x" + ME.hex(), "name": None, "me": True}]
    members = group_text([doc], shown).splitlines()[1:]
    assert sorted(line.strip() for line in members) == sorted(
        ["★ me", "ann", "0x" + NONAME.hex()[:12] + "…"]
    )
