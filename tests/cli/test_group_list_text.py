"""'group list' says how we stand in each group (no devnet: a stand-in client)."""

from __future__ import annotations

from chatcore.groupchat import GroupInfo
from cli.main import group_doc, group_text


class _Client:
    def __init__(self, info: GroupInfo) -> None:
        self.info = info

    def group_info(self, gid: bytes) -> GroupInfo:
        return self.info

    def display(self, identity: bytes) -> str:
        return "me" if identity == ME else "ann"


ME, ANN, GID = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def _line(is_member: bool, held_out: bool, members: frozenset[bytes]) -> tuple[dict, str]:
    info = GroupInfo(GID, "team", 3, members, frozenset({ANN}), is_member, "t", held_out)
    doc = group_doc(_Client(info), GID)
    return doc, group_text([doc]).splitlines()[0]


def test_group_list_says_we_hold_ourselves_out_though_the_members_show_us() -> None:
    doc, line = _line(False, True, frozenset({ME, ANN}))
    assert doc["held_out"] is True and doc["is_member"] is False  # --json says it too
    assert "held out" in line and "not a member" not in line
    assert "group leave" in line  # (what the user can do about it)
    doc, line = _line(False, False, frozenset({ANN}))
    assert doc["held_out"] is False and line.endswith("(you are not a member)")
    doc, line = _line(True, False, frozenset({ME, ANN}))
    assert "member" not in line and "held out" not in line
