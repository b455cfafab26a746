"""The identity surface of the CLI through the real console script: devices link / approve /
list / revoke, keys rotate, recovery restore, backup export / import, bind wallet / name /
domain (against a real HTTPS server on loopback), lookup --history."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import CliResult, RunCli
from tests.fixtures.certs import self_signed

pytestmark = pytest.mark.devnet


@pytest.fixture(scope="module")
def up(run_cli: RunCli, devnet_dir: Path) -> CliResult:
    r = run_cli("devnet", "up", "--json")
    assert r.code == 0, r.err
    return r


def ok(r: CliResult) -> CliResult:
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    return r


@pytest.fixture(scope="module")
def homes(
    up: CliResult, run_cli: RunCli, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("id-homes")
    out: dict[str, Any] = {"root": root}
    for name in ("ida", "idb"):
        r = ok(run_cli("--home", str(root / name), "init", "--name", name, "--json"))
        out[name] = {"home": str(root / name), **r.doc}
    return out


def h(homes: dict[str, Any], who: str) -> list[str]:
    return ["--home", homes[who]["home"] if who in homes else str(homes["root"] / who)]


def test_link_list_chat_revoke(run_cli: RunCli, homes: dict[str, Any]) -> None:
    # its own identity and peer: it counted the devices and on-chain events of 'ida', and
    # failed after a test that rotated its installation
    for name in ("idl", "idl-peer"):
        ok(run_cli(*h(homes, name), "init", "--name", name, "--json"))
    link = ok(run_cli(*h(homes, "idl2"), "devices", "link", "--json")).doc
    assert link["code"].startswith("logos_chatpair_1_")
    # not approved yet: a network command says so
    r = run_cli(*h(homes, "idl2"), "sync")
    r.assert_one_line_error(code=3, contains="waiting to be approved")
    ok(run_cli(*h(homes, "idl"), "devices", "approve", link["code"], "--json"))
    r = run_cli(*h(homes, "idl"), "devices", "approve", link["code"])
    r.assert_one_line_error(contains="already used")
    r = ok(run_cli(*h(homes, "idl2"), "sync", "--json"))
    assert "linked this device" in r.err
    mine = ok(run_cli(*h(homes, "idl2"), "devices", "list", "--json")).doc
    assert [(d["status"], d["this_device"]) for d in mine] == [("active", False), ("active", True)]
    first = ok(run_cli(*h(homes, "idl"), "devices", "list", "--json")).doc
    assert [(d["status"], d["this_device"]) for d in first] == [("active", True), ("active", False)]
    # both devices receive, each sees what the other sent
    assert (
        ok(run_cli(*h(homes, "idl-peer"), "send", "idl", "hi both", "--json")).doc["devices"] == 2
    )
    for who in ("idl", "idl2"):
        assert [m["text"] for m in ok(run_cli(*h(homes, who), "sync", "--json")).doc] == ["hi both"]
    ok(run_cli(*h(homes, "idl2"), "send", "idl-peer", "from the second device"))
    got = ok(run_cli(*h(homes, "idl"), "sync", "--json")).doc
    assert [(m["text"], m["outgoing"]) for m in got] == [("from the second device", True)]
    ok(run_cli(*h(homes, "idl2"), "send", "idl-peer", "and one more"))
    r = ok(run_cli(*h(homes, "idl"), "sync"))  # a sync copy says whom it went to
    assert r.out.startswith("(to idl-peer) [") and "] me: and one more" in r.out, r.out
    # a device does not revoke itself by mistake
    r = run_cli(*h(homes, "idl"), "devices", "revoke", first[0]["installation_id"])
    r.assert_one_line_error(code=1, contains="this device")
    # revoke the second device from the first
    r = ok(run_cli(*h(homes, "idl"), "devices", "revoke", mine[1]["installation_id"]))
    assert "keys rotate --owner" in r.out  # the revoked device still holds the owner key
    r = run_cli(*h(homes, "idl2"), "send", "idl-peer", "still here?")
    r.assert_one_line_error(code=4, contains="revoked")
    # what the revoked device holds stays readable there, as conversations and search are
    r = ok(run_cli(*h(homes, "idl2"), "history", "idl-peer", "--json"))
    assert "from the second device" in [m["text"] for m in r.doc["messages"]]
    assert "revoked" in r.err
    ok(run_cli(*h(homes, "idl2"), "contacts", "list"))
    assert (
        ok(run_cli(*h(homes, "idl-peer"), "send", "idl", "one device", "--json")).doc["devices"]
        == 1
    )
    hist = ok(run_cli("lookup", "idl", "--history", "--json")).doc["history"]
    events = [e["event"] for e in hist]
    assert events.count("InstallationAdded") == 2 and "InstallationRevoked" in events
    # the linked device's pairing bundle (no identity in it yet) is a verified entry
    assert all(e["verified"] for e in hist), [e for e in hist if not e["verified"]]
    assert any(e.get("note") == "pairing bundle of a new device" for e in hist)


class _Killed(BaseException):
    """The process dies here (raised through everything, as SIGKILL stops everything)."""


def test_a_link_killed_after_it_saved_the_owner_key_is_finished_by_the_next_sync(
    run_cli: RunCli, homes: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash review: the new device's first 'sync' saves the handover's owner key, then
    takes the identity in one transaction. Killed in between, the home had a keystore and
    no identity; every command took the keystore for a linked home and said it "has no
    registered identity (run init)", for good. The next 'sync' finishes the link now."""
    for name in ("idk", "idk-peer"):
        ok(run_cli(*h(homes, name), "init", "--name", name, "--json"))
    ok(run_cli(*h(homes, "idk-peer"), "send", "idk", "before the link"))
    ok(run_cli(*h(homes, "idk"), "sync"))
    code = ok(run_cli(*h(homes, "idk2"), "devices", "link", "--json")).doc["code"]
    ok(run_cli(*h(homes, "idk"), "devices", "approve", code, "--json"))
    from chatcore.home import Home

    save = Home.save_owner_key

    def killed(self: Home, *args: Any) -> None:
        save(self, *args)
        raise _Killed

    with monkeypatch.context() as m:
        m.setattr(Home, "save_owner_key", killed)
        with pytest.raises(_Killed):
            run_cli(*h(homes, "idk2"), "sync", inproc=True)
    r = ok(run_cli(*h(homes, "idk2"), "sync", "--json"))
    assert "linked this device" in r.err
    history = ok(run_cli(*h(homes, "idk2"), "history", "idk-peer", "--json")).doc
    assert [m["text"] for m in history["messages"]] == ["before the link"]


def test_rotate_and_peers_carry_on(run_cli: RunCli, homes: dict[str, Any]) -> None:
    ok(run_cli(*h(homes, "idb"), "send", "ida", "before rotation"))
    ok(run_cli(*h(homes, "ida"), "sync"))
    both = run_cli(*h(homes, "ida"), "keys", "rotate", "--installation", "--owner")
    both.assert_one_line_error(code=1, contains="one thing per command")
    for flag in ([], ["--installation"], ["--owner"]):
        doc = ok(run_cli(*h(homes, "ida"), "keys", "rotate", *flag, "--json")).doc
        assert doc["gas_used"] > 0 and doc["old"] != doc["new"]
    ok(run_cli(*h(homes, "idb"), "send", "ida", "after rotation"))
    got = ok(run_cli(*h(homes, "ida"), "sync", "--json")).doc
    assert [m["text"] for m in got] == ["after rotation"]
    ok(run_cli(*h(homes, "ida"), "send", "idb", "reply with new keys"))
    got = ok(run_cli(*h(homes, "idb"), "sync", "--json")).doc
    assert [m["text"] for m in got] == ["reply with new keys"]
    convs = ok(run_cli(*h(homes, "idb"), "conversations", "--json")).doc
    assert len([c for c in convs if c["title"] == "ida"]) == 1  # same conversation, no reset
    hist = ok(run_cli("lookup", "ida", "--history", "--json")).doc["history"]
    assert "OwnerChanged" in [e["event"] for e in hist]


def test_a_device_behind_an_owner_rotation_is_told_to_sync(
    run_cli: RunCli, homes: dict[str, Any]
) -> None:
    # the new owner key reaches the other devices through their inbox: until one syncs,
    # what it signs with the old key is refused, and the error says what to do
    ok(run_cli(*h(homes, "ido"), "init", "--json"))
    code = ok(run_cli(*h(homes, "ido2"), "devices", "link", "--json")).doc["code"]
    ok(run_cli(*h(homes, "ido"), "devices", "approve", code))
    ok(run_cli(*h(homes, "ido2"), "sync"))
    ok(run_cli(*h(homes, "ido"), "keys", "rotate", "--owner"))
    r = run_cli(*h(homes, "ido2"), "publish")
    r.assert_one_line_error(code=1, contains="NotAuthorized")
    assert "rotated on another device" in r.err and "'sync'" in r.err
    ok(run_cli(*h(homes, "ido2"), "sync"))
    ok(run_cli(*h(homes, "ido2"), "publish"))


def test_recovery_restore_and_backup(
    run_cli: RunCli, homes: dict[str, Any], tmp_path: Path
) -> None:
    # its own identity and peer (it revokes the identity's only device): it ran on what
    # earlier tests of this file had left in 'idb' (and revoked it under later ones)
    me = ok(run_cli(*h(homes, "idr"), "init", "--name", "idr", "--json")).doc
    peer = ok(run_cli(*h(homes, "idr-peer"), "init", "--name", "idr-peer", "--json")).doc
    for who, to, text in (
        ("idr", "idr-peer", "before the backup"), ("idr-peer", "idr", "a reply"),
        ("idr", "idr-peer", "one more"), ("idr-peer", "idr", "and the last"),
    ):  # fmt: skip
        ok(run_cli(*h(homes, who), "send", to, text))
        ok(run_cli(*h(homes, to), "sync"))
    before = ok(run_cli(*h(homes, "idr"), "history", "idr-peer", "--json")).doc["messages"]
    assert len(before) == 4
    phrase = me["recovery_phrase"]
    backup = tmp_path / "idr.backup"
    env = {"LOGOS_CHAT_RECOVERY_PHRASE": phrase}
    # a backup sealed with a phrase the user does not have could never be opened
    other = peer["recovery_phrase"]
    wrong = run_cli(*h(homes, "idr"), "backup", "export", str(backup), "--phrase",
                    env={"LOGOS_CHAT_RECOVERY_PHRASE": other})  # fmt: skip
    wrong.assert_one_line_error(contains="not the recovery phrase of this identity")
    assert not backup.exists()
    nowhere = run_cli(*h(homes, "idr"), "backup", "export", str(tmp_path / "no" / "x"))
    nowhere.assert_one_line_error(code=1, contains="no such folder")
    missing = run_cli(*h(homes, "idr"), "backup", "import", str(tmp_path / "nothing"))
    assert missing.code != 0 and "Traceback" not in missing.err
    first = ok(run_cli(*h(homes, "idr"), "backup", "export", str(backup), "--phrase", "--json",
                       env=env)).doc  # fmt: skip
    # an earlier backup is not replaced unasked (it was, silently)
    sealed = backup.read_bytes()
    again = run_cli(*h(homes, "idr"), "backup", "export", str(backup), "--phrase", env=env)
    again.assert_one_line_error(contains="--force")
    assert backup.read_bytes() == sealed
    again = run_cli(*h(homes, "idr"), "history", "export", str(backup), "--phrase", env=env)
    again.assert_one_line_error(contains="--force")
    ok(run_cli(*h(homes, "idr"), "backup", "export", str(backup), "--phrase", "--force",
               env=env))  # fmt: skip
    assert backup.read_bytes() != sealed  # (a new seal: a fresh salt and nonce)
    # a backup cut short says so, not "wrong passphrase" (a new-user review)
    cut = tmp_path / "cut.backup"
    cut.write_bytes(backup.read_bytes()[:100])
    r = run_cli(*h(homes, "idr"), "history", "import", str(cut), "--phrase", env=env)
    r.assert_one_line_error(code=1, contains="truncated")
    assert "passphrase" not in r.err
    # the spelling, `history export FILE`, is the same command
    alias = tmp_path / "idr.alias.backup"
    doc = ok(run_cli(*h(homes, "idr"), "history", "export", str(alias), "--phrase", "--json",
                     env=env)).doc  # fmt: skip
    assert doc["messages"] == first["messages"] and alias.stat().st_size > 0
    bad = run_cli(*h(homes, "idr-x"), "recovery", "restore",
                  env={"LOGOS_CHAT_RECOVERY_PHRASE": "wrong words " * 4})  # fmt: skip
    bad.assert_one_line_error(contains="recovery phrase")
    doc = ok(run_cli(*h(homes, "idr-new"), "recovery", "restore", "--json", env=env)).doc
    assert doc["identity_id"] == me["identity_id"] and len(doc["revoked"]) == 1
    r = run_cli(*h(homes, "idr"), "sync")
    r.assert_one_line_error(code=4, contains="revoked")
    n = ok(
        run_cli(
            *h(homes, "idr-new"), "backup", "import", str(backup), "--phrase", "--json", env=env
        )
    )
    assert n.doc["imported"] >= len(before)
    hist = ok(run_cli(*h(homes, "idr-new"), "history", "idr-peer", "--json")).doc["messages"]

    def seen(msgs: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
        return [(m["message_id"], m["outgoing"], m["text"]) for m in msgs]

    assert seen(hist) == seen(before)  # the whole conversation, as it was
    ok(run_cli(*h(homes, "idr-peer"), "send", "idr", "welcome back"))
    got = ok(run_cli(*h(homes, "idr-new"), "sync", "--json")).doc
    assert [m["text"] for m in got] == ["welcome back"]


def _advance_chain_time(devnet_dir: Path, seconds: int) -> None:
    from devnet.chain import advance_time, connect
    from devnet.manager import Devnet

    rpc_url = Devnet(devnet_dir).status().rpc_url
    assert rpc_url is not None
    advance_time(connect(rpc_url), seconds)


def test_a_new_recovery_phrase_restores(
    run_cli: RunCli, homes: dict[str, Any], devnet_dir: Path
) -> None:
    """`recovery phrase` proposes a new phrase bound to the identity (the tag it logs); it
    takes effect with `recovery confirm` after the registry's delay: until then the old
    phrase restores and the new one does not; afterwards the other way round."""
    idc = ok(run_cli(*h(homes, "idc"), "init", "--json")).doc
    old = idc["recovery_phrase"]
    new = ok(run_cli(*h(homes, "idc"), "recovery", "phrase", "--yes", "--json")).doc
    assert new["recovery"] != idc["recovery"] and new["recovery_phrase"] != old
    assert new["pending"] is True and new["ready_at"] > 0
    st = ok(run_cli(*h(homes, "idc"), "recovery", "status", "--json")).doc
    assert st["recovery"] == idc["recovery"]
    assert st["pending"]["recovery"] == new["recovery"] and st["pending"]["proposed_here"]
    assert st["pending"]["ready"] is False
    early = run_cli(*h(homes, "idc-new0"), "recovery", "restore",
                    env={"LOGOS_CHAT_RECOVERY_PHRASE": new["recovery_phrase"]})  # fmt: skip
    early.assert_one_line_error(contains="recovery phrase")
    run_cli(*h(homes, "idc"), "recovery", "confirm").assert_one_line_error(
        contains="can be confirmed from"
    )
    _advance_chain_time(devnet_dir, 3 * 24 * 3600)
    confirmed = ok(run_cli(*h(homes, "idc"), "recovery", "confirm", "--json"))
    assert "warning" not in confirmed.err  # proposed here
    doc = confirmed.doc
    assert doc["recovery"] == new["recovery"]
    assert ok(run_cli(*h(homes, "idc"), "recovery", "status", "--json")).doc == {
        "recovery": new["recovery"], "pending": None,
    }  # fmt: skip
    gone = run_cli(*h(homes, "idc-old"), "recovery", "restore",
                   env={"LOGOS_CHAT_RECOVERY_PHRASE": old})  # fmt: skip
    gone.assert_one_line_error(contains="recovery phrase")
    doc = ok(run_cli(*h(homes, "idc-new"), "recovery", "restore", "--json",
                     env={"LOGOS_CHAT_RECOVERY_PHRASE": new["recovery_phrase"]})).doc  # fmt: skip
    assert doc["identity_id"] == idc["identity_id"] and len(doc["revoked"]) == 1


def test_the_recovery_phrase_cancels_a_thiefs_change(
    run_cli: RunCli, homes: dict[str, Any], devnet_dir: Path
) -> None:
    """A thief holding a copy of a device (so the owner key) proposes its own recovery; the
    user's device warns on sync, and the user's phrase, no device needed, cancels it."""
    import shutil

    idd = ok(run_cli(*h(homes, "idd"), "init", "--json")).doc
    env = {"LOGOS_CHAT_RECOVERY_PHRASE": idd["recovery_phrase"]}
    shutil.copytree(homes["root"] / "idd", homes["root"] / "idd-thief")
    thief = ok(run_cli(*h(homes, "idd-thief"), "recovery", "phrase", "--yes", "--json")).doc
    assert thief["pending"] is True
    quiet = ok(run_cli(*h(homes, "idd-thief"), "sync"))
    assert "warning" not in quiet.err  # the thief's own home made it
    warned = ok(run_cli(*h(homes, "idd"), "sync"))
    assert f"change of your recovery account to {thief['recovery']}" in warned.err
    assert len(warned.err.strip().splitlines()) == 1
    st = ok(run_cli(*h(homes, "idd"), "recovery", "status", "--json")).doc
    assert st["pending"]["recovery"] == thief["recovery"] and not st["pending"]["proposed_here"]
    doc = ok(run_cli(*h(homes, "idd-x"), "recovery", "cancel", "--recovery", "--json",
                     env=env)).doc  # fmt: skip
    assert doc == {
        "identity_id": idd["identity_id"], "cancelled": thief["recovery"],
        "gas_used": doc["gas_used"],
    }  # fmt: skip
    again = run_cli(*h(homes, "idd-x"), "recovery", "cancel", "--recovery", env=env)
    again.assert_one_line_error(contains="nothing to cancel")
    _advance_chain_time(devnet_dir, 3 * 24 * 3600)
    run_cli(*h(homes, "idd"), "recovery", "confirm").assert_one_line_error(
        contains="no recovery change"
    )
    assert "warning" not in ok(run_cli(*h(homes, "idd"), "sync")).err
    doc = ok(run_cli(*h(homes, "idd-new"), "recovery", "restore", "--json", env=env)).doc
    assert doc["identity_id"] == idd["identity_id"]


def test_recovery_confirm_warns_about_a_change_proposed_from_another_device(
    run_cli: RunCli, homes: dict[str, Any], devnet_dir: Path
) -> None:
    """Thirteenth session's walk: 'sync' and 'recovery status' warn about such a change,
    'recovery confirm' said nothing (neither while it could still be cancelled, nor once it
    put it in force)."""
    import shutil

    ok(run_cli(*h(homes, "idf"), "init", "--json"))
    shutil.copytree(homes["root"] / "idf", homes["root"] / "idf-other")
    other = ok(run_cli(*h(homes, "idf-other"), "recovery", "phrase", "--yes", "--json")).doc
    early = run_cli(*h(homes, "idf"), "recovery", "confirm")
    assert early.code != 0 and "Traceback" not in early.err
    warning, error = [ln for ln in early.err.splitlines() if ln.strip()]
    assert warning.startswith("warning: ") and other["recovery"] in warning
    assert "not proposed from this device" in warning and "recovery cancel" in warning
    assert error.startswith("error: ") and "can be confirmed from" in error
    _advance_chain_time(devnet_dir, 3 * 24 * 3600)
    done = ok(run_cli(*h(homes, "idf"), "recovery", "confirm", "--json"))
    assert done.doc["recovery"] == other["recovery"]
    lines = [ln for ln in done.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: ")
    assert other["recovery"] in lines[0] and "not proposed from this device" in lines[0]


def test_bind_wallet_and_name(run_cli: RunCli, homes: dict[str, Any]) -> None:
    from eth_account import Account

    wallet = Account.create()
    env = {"LOGOS_CHAT_WALLET_KEY": wallet.key.hex()}
    ok(run_cli(*h(homes, "ida"), "bind", "wallet", "--json", env=env))
    found = ok(run_cli("lookup", wallet.address, "--json")).doc
    assert found["identity_id"] == homes["ida"]["identity_id"]
    ok(run_cli(*h(homes, "ida"), "bind", "name", "ida-alias"))
    assert (
        ok(run_cli("lookup", "ida-alias", "--json")).doc["identity_id"]
        == homes["ida"]["identity_id"]
    )
    ok(run_cli(*h(homes, "ida"), "bind", "name", "ida-alias", "--release"))
    run_cli("lookup", "ida-alias").assert_one_line_error(code=3)
    events = [
        e["event"] for e in ok(run_cli("lookup", "ida", "--history", "--json")).doc["history"]
    ]
    assert {"WalletLinked", "NameClaimed", "NameReleased"} <= set(events)


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """A real HTTPS server on loopback with its own CA (passed to httpx via SSL_CERT_FILE)."""
    cert_file, key_file = self_signed(tmp_path, "localhost")
    root = tmp_path / "www"
    (root / ".well-known").mkdir(parents=True)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield (
            f"localhost:{srv.server_address[1]}",
            root / ".well-known" / "logos-chat.json",
            cert_file,
        )
    finally:
        srv.shutdown()
        srv.server_close()


def test_bind_domain_real_https(run_cli: RunCli, homes: dict[str, Any], https_server: Any) -> None:
    domain, doc_file, ca = https_server
    env = {"SSL_CERT_FILE": str(ca)}
    r = run_cli(*h(homes, "ida"), "bind", "domain", domain, env=env)
    r.assert_one_line_error(contains="HTTP 404")
    proof = ok(run_cli(*h(homes, "ida"), "bind", "domain", domain, "--print", "--json")).doc
    # someone else's proof on the domain is refused
    doc_file.write_text(json.dumps({**proof, "identity_id": homes["idb"]["identity_id"]}))
    run_cli(*h(homes, "ida"), "bind", "domain", domain, env=env).assert_one_line_error(
        contains="another identity"
    )
    doc_file.write_text(json.dumps(proof))
    got = ok(run_cli(*h(homes, "ida"), "bind", "domain", domain, "--json", env=env)).doc
    assert got["verified"] is True and got["document"]["identity_id"] == homes["ida"]["identity_id"]
    # without the test CA the certificate is not trusted: no insecure fallback
    run_cli(*h(homes, "ida"), "bind", "domain", domain).assert_one_line_error(
        contains="cannot fetch"
    )


def test_devices_link_wait_ends_when_another_command_took_the_approval(
    run_cli: RunCli, homes: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: 'devices link --wait' looks for the approval every second, and says
    that a network command on the new device ('sync') finishes the link too. When such a
    command took the approval first, the wait looked on until its timeout and failed ('not
    approved in time'), the device linked all the same."""
    import time
    from types import SimpleNamespace

    import cli.main  # noqa: F401 (cli.identity is registered from it)
    from cli import identity as cli_identity

    ok(run_cli(*h(homes, "idw"), "init", "--json"))
    new = h(homes, "idw2")
    other: list[str] = []

    def sleep(seconds: float) -> None:  # between two looks: a 'sync' in another terminal
        if not other:
            other.append("sync")
            code = ok(run_cli(*new, "devices", "link", "--json")).doc["code"]  # (the same)
            ok(run_cli(*h(homes, "idw"), "devices", "approve", code))
            assert "linked this device" in ok(run_cli(*new, "sync")).err
        time.sleep(min(seconds, 0.05))

    monkeypatch.setattr(
        cli_identity, "time", SimpleNamespace(sleep=sleep, monotonic=time.monotonic)
    )
    r = run_cli(*new, "devices", "link", "--wait", "--timeout", "30", "--json", inproc=True)
    assert other == ["sync"]
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert (
        doc["linked"] is True
        and doc["identity_id"]
        == ok(run_cli(*h(homes, "idw"), "whoami", "--json")).doc["identity_id"]
    )
    mine = ok(run_cli(*new, "devices", "list", "--json")).doc
    assert [(d["status"], d["this_device"]) for d in mine] == [("active", False), ("active", True)]


def test_revoking_this_device_waits_for_receipts_of_what_it_sent(
    run_cli: RunCli, homes: dict[str, Any]
) -> None:
    """Found by a walk through the identity model on devnet: 'devices revoke ID
    --this-device' right after a send locked the device out at once, and the message never
    reached the recipient's devices that had not fetched it yet (they refuse frames of a
    revoked installation); 'keys rotate --installation' waits for receipts for this reason.
    It waits here too (--force lets the messages go)."""
    ok(run_cli(*h(homes, "idv"), "init", "--json"))
    to = ok(run_cli(*h(homes, "idu"), "init", "--json")).doc["identity_id"]
    ok(run_cli(*h(homes, "idv"), "send", to, "my last words"))
    me = next(
        d["installation_id"]
        for d in ok(run_cli(*h(homes, "idv"), "devices", "list", "--json")).doc
        if d["this_device"]
    )
    r = run_cli(*h(homes, "idv"), "devices", "revoke", me, "--this-device")
    r.assert_one_line_error(contains="wait for receipts")
    assert "--force" in r.err
    assert ok(run_cli(*h(homes, "idu"), "sync", "--json")).doc[-1]["text"] == "my last words"
    ok(run_cli(*h(homes, "idv"), "sync"))  # the receipt comes in
    ok(run_cli(*h(homes, "idv"), "devices", "revoke", me, "--this-device"))
    run_cli(*h(homes, "idv"), "sync").assert_one_line_error(code=4, contains="revoked")
