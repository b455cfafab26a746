"""A 201-member group in one process: everyone decrypts everything."""

from __future__ import annotations

import pytest

from chatcore.errors import ChatCoreError

from . import World


def test_201_members_every_member_decrypts_every_message() -> None:
    w = World(201)
    people = [w.person() for _ in range(201)]
    w.create(people[0], people[1:])
    senders = people[::40]  # 6 senders
    for s in senders:
        frame = w.send(s, b"m" * 200)
        for r in people:
            if r != s:
                assert w.read(r, frame) == b"m" * 200
    # one removal with rekey; the removed member reads nothing afterwards
    gone = people[-1]
    w.act(people[0], "remove_member", gone)
    frame = w.send(people[7], b"after")
    for r in people[:-1]:
        if r != people[7]:
            assert w.read(r, frame) == b"after"
    st = w.dev(gone).state
    assert st is not None and not st.is_member
    with pytest.raises(ChatCoreError):  # the removed member cannot read it
        w.read(gone, frame)
    assert w.dev(gone).state == st  # and its state is unchanged
