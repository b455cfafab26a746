"""What edits, deletes and reactions made of messages comes along with the history copied to
a new device (handover) and in a backup (review finding: the original text of an edited,
redacted message came back, and every reaction was lost)."""

from __future__ import annotations

from chatcore import content
from chatcore.content import ContactState
from chatcore.identity import restore_snapshot, snapshot
from chatcore.payload import ContentType
from chatcore.store import Store

from . import FWorld


def _state(store: Store) -> list[tuple[object, ...]]:
    rows = store._x(
        "SELECT message_id, body, edited_body, edit_lamport, deleted FROM messages "
        "ORDER BY message_id"
    ).fetchall()
    reactions = store._x("SELECT * FROM reactions ORDER BY message_id, reactor").fetchall()
    return [*map(tuple, rows), *map(tuple, reactions)]


def test_edits_deletes_and_reactions_survive_a_snapshot() -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    secret = w.send_text(a, b, "my password is hunter2")
    gone = w.send_text(a, b, "delete me")
    w.route([*secret.frames, *gone.frames], strict=True)
    w.route(w.f(b).set_contact(a, ContactState.CONTACT))
    peer_b, peer_a = w.directory.peer(b), w.directory.peer(a)
    for ct, body, by, to in (
        (ContentType.EDIT, content.encode_edit(secret.message_id, "(redacted)"), a, peer_b),
        (ContentType.DELETE, content.encode_delete(gone.message_id), a, peer_b),
        (ContentType.REACTION, content.encode_reaction(secret.message_id, "👍"), b, peer_a),
    ):
        w.route(w.f(by).send_op(to, ct, body, w.own(by)).frames, strict=True)
    source = w.dev(b).store
    copy = Store.memory()
    restore_snapshot(copy, snapshot(source, 1000))
    assert _state(copy) == _state(source)
    texts = [r[2] or r[1] for r in _state(copy)[:2]]
    assert b"hunter2" not in b"".join(t for t in texts if isinstance(t, bytes))
    # importing the same snapshot again changes nothing, and an older one cannot undo it
    restore_snapshot(copy, snapshot(source, 1000))
    assert _state(copy) == _state(source)
