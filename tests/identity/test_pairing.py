"""Pure parts of the identity module: pairing codes, handovers, backups (no chain, no network)."""

from __future__ import annotations

import json
import os
import zlib

import pytest

from chatcore.identity import (
    IdentityError,
    PairingCode,
    PairingError,
    find_installation,
    make_pairing_code,
    open_backup,
    open_handover,
    seal_backup,
    seal_handover,
)
from chatcore.keys import InstallationKeys, SignedPrekey
from discovery.records import ChainBinding

BINDING = ChainBinding(31337, b"\x11" * 20)
NOW = 1_800_000_000


def _code(ttl: int = 600) -> tuple[PairingCode, object]:
    keys = InstallationKeys.generate(os.urandom)
    spk = SignedPrekey.generate(os.urandom, 1, (NOW + 3600) * 1000)
    return make_pairing_code(keys, spk, BINDING, NOW, os.urandom, ttl)


def test_code_roundtrip_and_checks() -> None:
    code, _ = _code()
    text = code.to_text()
    assert text.startswith("logos_chatpair_1_") and len(text) < 400
    again = PairingCode.from_text(text[:50] + "\n " + text[50:])  # whitespace from a QR / paste
    assert again == code
    again.check(BINDING, NOW + 10)
    with pytest.raises(PairingError, match="expired"):
        code.check(BINDING, NOW + 601)
    with pytest.raises(PairingError, match="another network"):
        code.check(ChainBinding(1, b"\x11" * 20), NOW)
    raw = bytearray(code.encode())
    raw[70] ^= 1  # the installation's X25519 key
    with pytest.raises(PairingError, match="signature"):
        PairingCode.decode(bytes(raw)).check(BINDING, NOW)
    for bad in ("logos_chatintro_1_AAAA", "logos_chatpair_1_!!", "logos_chatpair_1_AAAA"):
        with pytest.raises(PairingError):
            PairingCode.from_text(bad)


def test_handover_sealed_to_the_code() -> None:
    code, key = _code()
    approver = InstallationKeys.generate(os.urandom)
    content = {"v": 1, "identity_id": "ab" * 32, "approved_at": NOW + 5, "owner_key": "cd" * 32}
    frame = seal_handover(code, content, approver, os.urandom)
    who, got = open_handover(frame, code, key)
    assert who == approver.installation_id and got == content
    # another code's key cannot open it; a flipped bit is refused
    other, other_key = _code()
    with pytest.raises(PairingError):
        open_handover(frame, other, other_key)
    tampered = bytearray(frame)
    tampered[-1] ^= 1
    with pytest.raises(PairingError):
        open_handover(bytes(tampered), code, key)
    # approved after the code expired
    late = seal_handover(code, {**content, "approved_at": NOW + 601}, approver, os.urandom)
    with pytest.raises(PairingError, match="expired"):
        open_handover(late, code, key)
    # a signature replayed onto different content: reseal with a forged body, same signature
    assert b"owner_key" not in frame  # nothing in clear


def test_backup_roundtrip_and_wrong_secret() -> None:
    content = {"v": 1, "identity_id": "00" * 32, "messages": [{"x": 1}]}
    data = seal_backup(content, "correct horse", os.urandom)
    assert open_backup(data, "correct horse") == content
    with pytest.raises(IdentityError, match="wrong"):
        open_backup(data, "wrong")
    with pytest.raises(IdentityError, match="not a Logos Chat backup"):
        open_backup(b"junk", "x")


def test_a_truncated_or_damaged_backup_says_so_not_wrong_passphrase() -> None:
    """A new-user review: a backup cut short ('head -c 100') said "wrong passphrase or
    phrase". The file now tells truncation, damage and a wrong passphrase apart."""
    content = {"v": 1, "identity_id": "00" * 32, "messages": [{"x": i} for i in range(50)]}
    data = seal_backup(content, "correct horse", os.urandom)
    for cut in (100, len(data) - 1, 20, 5):
        with pytest.raises(IdentityError, match="truncated") as err:
            open_backup(data[:cut], "correct horse")
        assert "passphrase" not in str(err.value)
    with pytest.raises(IdentityError, match="damaged"):
        open_backup(data + b"\n", "correct horse")
    flipped = data[:-20] + bytes([data[-20] ^ 1]) + data[-19:]
    with pytest.raises(IdentityError, match="damaged") as err:
        open_backup(flipped, "correct horse")
    assert "passphrase" not in str(err.value)
    with pytest.raises(IdentityError, match="wrong passphrase or phrase") as err:
        open_backup(data, "wrong")
    assert "damaged" not in str(err.value)


def test_a_backup_of_the_first_format_still_opens() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from chatcore.identity import BACKUP_MAGIC, _backup_key

    content = {"v": 1, "identity_id": "00" * 32, "messages": []}
    salt, nonce = os.urandom(16), os.urandom(12)
    body = zlib.compress(json.dumps(content).encode())
    ct = AESGCM(_backup_key("pw", salt)).encrypt(nonce, body, BACKUP_MAGIC)
    old = BACKUP_MAGIC + salt + nonce + ct
    assert open_backup(old, "pw") == content
    with pytest.raises(IdentityError, match="wrong passphrase or phrase"):  # or damaged: it
        open_backup(old, "other")  # cannot tell, and says both
    with pytest.raises(IdentityError, match="truncated"):
        open_backup(old[:40], "pw")


def test_snapshot_carries_contacts_and_blocks_newer_change_wins() -> None:
    from chatcore.content import ContactState
    from chatcore.identity import restore_snapshot, snapshot
    from chatcore.store import Store

    src, dst = Store.memory(), Store.memory()
    bob, mallory = b"\x0b" * 32, b"\x0c" * 32
    for store, rows in (
        (src, [(bob, "Bobby", ContactState.CONTACT, 10), (mallory, None, ContactState.BLOCKED, 5)]),
        (dst, [(bob, None, ContactState.DECLINED, 20)]),  # changed here after the snapshot
    ):
        for ident, alias, state, at in rows:
            store._x(
                "INSERT INTO contacts (identity_id, alias, state, updated_at) VALUES (?,?,?,?)",
                (ident, alias, int(state), at),
            )
    restore_snapshot(dst, snapshot(src, 100))
    got = {
        bytes(r[0]): (r[1], int(r[2]))
        for r in dst._x("SELECT identity_id, alias, state FROM contacts").fetchall()
    }
    assert got == {bob: (None, ContactState.DECLINED), mallory: (None, ContactState.BLOCKED)}


def test_malformed_handovers_are_pairing_errors() -> None:
    """Whoever holds the code can seal a handover; nothing they put in one escapes as an
    untyped error (a low-order key, a wrong type, JSON nested past the stack)."""
    import zlib

    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    import chatcore.identity as ident

    code, key = _code()
    sender = InstallationKeys.generate(os.urandom)
    good = seal_handover(code, {"v": 1, "approved_at": NOW}, sender, os.urandom)
    low_order = good[:4] + bytes(32) + good[36:]
    wrong_type = seal_handover(code, {"v": 1, "approved_at": [NOW]}, sender, os.urandom)

    def sealed(body: bytes) -> bytes:  # a correctly signed and sealed body of our choosing
        sig = sender.sign(ident.HANDOVER_SIG_DOMAIN + code.installation_id + code.secret + body)
        plain = sender.installation_id + sig + zlib.compress(body, 9)
        eph = X25519PrivateKey.generate()
        eph_pub = eph.public_key().public_bytes_raw()
        k = ident._handover_key(
            eph.exchange(X25519PublicKey.from_public_bytes(code.pairing_pub)), code, eph_pub
        )
        nonce = os.urandom(12)
        magic = ident.HANDOVER_MAGIC
        return magic + eph_pub + nonce + AESGCM(k).encrypt(nonce, plain, magic)

    for frame in (low_order, wrong_type, sealed(b"[" * 200_000), sealed(b"\xff not json")):
        with pytest.raises(PairingError):
            open_handover(frame, code, key)


def test_a_history_whose_clock_leapt_live_still_restores() -> None:
    """A peer may move a conversation's clock a full step with a reaction (not in a
    backup) and another with a message: the backup of that history must still restore."""
    from chatcore import content
    from chatcore.engine import direct_conversation_id
    from chatcore.identity import restore_snapshot, snapshot
    from chatcore.payload import MAX_LAMPORT_STEP, ContentType, Payload
    from tests.features import FWorld

    w = FWorld()
    a, b = w.person(), w.person()
    first = w.send_text(a, b, "hi")
    w.route(first.frames)
    conv = direct_conversation_id(a, b)

    def from_a(ct: ContentType, body: bytes) -> None:
        lamport = w.dev(b).store.conversation(conv).lamport + MAX_LAMPORT_STEP  # type: ignore[union-attr]
        p = Payload(ct, lamport, w.clock.now, body)
        with w.dev(a).store.transaction():
            f = w.dev(a).engine._encrypt_to(b, w.dev(b).peer_keys, p.encode(), 0, None, None)
        w.dev(b).engine.receive(f.frame, cursor=(w.dev(b).engine.inbox, 99))

    from_a(ContentType.REACTION, content.encode_reaction(first.message_id, "👌"))
    from_a(ContentType.TEXT, b"much later")
    fresh = w.dev(w.person()).store
    assert restore_snapshot(fresh, snapshot(w.dev(b).store, 10**9)) == 2


def test_snapshot_carries_conversation_flags() -> None:
    from chatcore.identity import restore_snapshot, snapshot
    from chatcore.store import Store

    src, dst = Store.memory(), Store.memory()
    conv = b"\x07" * 16
    src.ensure_conversation(conv, "direct", b"\x0b" * 32, None, 1)
    src._x("UPDATE conversations SET muted=1, archived=1 WHERE id=?", (conv,))
    restore_snapshot(dst, snapshot(src, 10))
    c = dst.conversation(conv)
    assert c is not None and c.muted and c.archived


@pytest.mark.parametrize("bad", [None, 1234, b"\x12\x34"])
def test_an_installation_query_that_is_no_string_is_a_type_error(bad: object) -> None:
    """``revoke(client, pw, None)`` raised AttributeError from inside (bad arguments are
    ValueError/TypeError, docs/api.md)."""
    with pytest.raises(TypeError, match="must be a string"):
        find_installation([b"\x12\x34" * 16], bad)  # type: ignore[arg-type]


def test_a_damaged_backup_under_the_phrase_says_damaged_however_the_phrase_is_typed(
    tmp_path: object,
) -> None:
    """A backup sealed under the normalised recovery phrase whose content is damaged:
    import with the phrase typed in capitals tried the phrase as typed after the damage
    was found, and said 'wrong passphrase or phrase' (the phrase was right). A backup
    sealed before, under the phrase as typed, still opens and still tells its damage."""
    from pathlib import Path
    from types import SimpleNamespace

    from chatcore.identity import backup_phrase_secret, import_backup

    typed = "Abandon  ABANDON abandon abandon abandon abandon abandon abandon abandon "
    typed += "abandon abandon About"
    client = SimpleNamespace(identity_id=b"\x00" * 32)
    content = {"v": 1, "identity_id": "00" * 32, "messages": [{"x": i} for i in range(50)]}
    folder = Path(str(tmp_path))
    for sealed_with in (backup_phrase_secret(typed), typed):  # now, and before
        data = seal_backup(content, sealed_with, os.urandom)
        flipped = data[:-20] + bytes([data[-20] ^ 1]) + data[-19:]
        path = folder / "b.bak"
        path.write_bytes(flipped)
        with pytest.raises(IdentityError, match="damaged") as err:
            import_backup(client, path, typed, phrase=True)  # type: ignore[arg-type]
        assert "passphrase" not in str(err.value)
    with pytest.raises(IdentityError, match="wrong passphrase or phrase"):
        import_backup(client, path, typed.replace("About", "zoo"), phrase=True)  # type: ignore[arg-type]


def test_a_backup_opened_with_the_other_secret_says_where_that_one_goes(
    tmp_path: object,
) -> None:
    """A backup exported with --phrase, imported without it (or the other way round), said
    only 'wrong passphrase or phrase': the file does not say which sealed it, so the error
    says where the other one goes."""
    from pathlib import Path
    from types import SimpleNamespace

    from chatcore.identity import backup_phrase_secret, import_backup

    phrase = " ".join(["abandon"] * 11 + ["about"])
    client = SimpleNamespace(identity_id=b"\x00" * 32)
    content = {"v": 1, "identity_id": "00" * 32, "messages": []}
    path = Path(str(tmp_path)) / "b.bak"
    path.write_bytes(seal_backup(content, backup_phrase_secret(phrase), os.urandom))
    with pytest.raises(IdentityError, match="wrong passphrase or phrase") as err:
        import_backup(client, path, "my passphrase")  # type: ignore[arg-type]
    assert "import it with --phrase" in str(err.value)
    path.write_bytes(seal_backup(content, "my passphrase", os.urandom))
    with pytest.raises(IdentityError, match="wrong passphrase or phrase") as err:
        import_backup(client, path, phrase, phrase=True)  # type: ignore[arg-type]
    assert "import it without --phrase" in str(err.value)
