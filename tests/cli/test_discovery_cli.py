"""The discovery surface of the ``logos-chat`` CLI: devnet up/down/status, init, publish, lookup,
and one clean error line (right exit code, no traceback) for every way a lookup can fail.

One devnet for the whole module (tests run in file order: the last ones stop and restart it).
The main flow (devnet up, init, a lookup, publish, an unknown id, a tampering node, a dead
chain, up again) runs the real console script in a subprocess; the rest runs in process through
click's CliRunner (same code path, without a Python start-up per call).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_utils import keccak
from web3 import Web3

from cli.main import EXIT_AUTH, EXIT_ERROR, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_UNAVAILABLE
from discovery.network import NetworkConfig
from discovery.registry import Registry
from tests.cli.conftest import CliResult, RunCli
from tests.discovery.rpc_proxy import RpcProxy
from tests.discovery.test_resolver import Ident, add_device, register_direct

pytestmark = pytest.mark.devnet

BUNDLE_TOPIC = keccak(text="BundlePublished(bytes32,bytes32,bytes)")


@pytest.fixture(scope="module")
def up(run_cli: RunCli, devnet_dir: Path) -> CliResult:
    r = run_cli("devnet", "up", "--json")
    assert r.code == 0, r.err
    return r


@pytest.fixture(scope="module")
def cfg(up: CliResult, devnet_dir: Path) -> NetworkConfig:
    return NetworkConfig.load(devnet_dir / "network.json")


@dataclass
class People:
    alice: dict[str, Any]
    alice_home: Path
    short: dict[str, Any]  # prekey valid for 2 s
    short_at: float


@pytest.fixture(scope="module")
def people(run_cli: RunCli, cfg: NetworkConfig, tmp_path_factory: pytest.TempPathFactory) -> People:
    homes = tmp_path_factory.mktemp("homes")
    short = run_cli(
        "--home", str(homes / "short"), "init", "--prekey-ttl", "2", "--json", inproc=True
    )
    assert short.code == 0, short.err
    short_at = time.time()
    r = run_cli("--home", str(homes / "alice"), "init", "--name", "alice", "--json")
    assert r.code == 0, r.err
    return People(r.doc, homes / "alice", short.doc, short_at)


def write_network(path: Path, cfg: NetworkConfig, **changes: Any) -> Path:
    dataclasses.replace(cfg, **changes).save(path)
    return path


# --- devnet ---------------------------------------------------------------------------------
def test_devnet_up_status_and_up_again(run_cli: RunCli, up: CliResult, devnet_dir: Path) -> None:
    doc = up.doc
    assert doc["already_running"] is False
    assert doc["chain_id"] == 31337
    assert doc["rpc_url"].startswith("http://127.0.0.1:")
    assert doc["nats_url"].startswith("nats://127.0.0.1:")
    net = json.loads((devnet_dir / "network.json").read_text())
    assert net["identity_registry"] == doc["identity_registry"]
    assert net["rpc_url"] == doc["rpc_url"]

    again = run_cli("devnet", "up", inproc=True)
    assert again.code == 0, again.err
    assert "already" in again.out
    again_json = run_cli("devnet", "up", "--json", inproc=True)
    assert again_json.code == 0 and again_json.doc["already_running"] is True
    assert again_json.doc["rpc_url"] == doc["rpc_url"]

    st = run_cli("devnet", "status", "--json", inproc=True)
    assert st.code == 0, st.err
    s = st.doc
    assert s["running"] is True
    assert s["rpc_url"] == doc["rpc_url"] and s["nats_url"] == doc["nats_url"]
    assert isinstance(s["anvil_pid"], int) and isinstance(s["nats_pid"], int)
    assert isinstance(s["block_number"], int) and s["block_number"] >= 2


# --- init / lookup / publish -------------------------------------------------------------------
def check_alice(doc: dict[str, Any], alice: dict[str, Any], seq: int) -> None:
    assert doc["identity_id"] == alice["identity_id"]
    assert doc["owner"] == alice["owner"]
    assert doc["recovery"] == alice["recovery"]
    assert doc["names"] == ["alice"]
    assert doc["revoked"] == [] and doc["rejected"] == []
    (inst,) = doc["installations"]
    assert inst["installation_id"] == alice["installation_id"]
    assert inst["verified"] is True
    assert inst["seq"] == seq
    assert inst["prekey_expires"] > time.time() + 86400
    assert inst["bundle"].startswith("logos_chatintro_1_")
    assert inst["pq_key_id"] is not None


def test_init_prints_identity(people: People) -> None:
    a = people.alice
    assert a["name"] == "alice" and a["seq"] == 1
    assert a["identity_id"].startswith("0x") and len(a["identity_id"]) == 66
    assert a["installation_id"].startswith("0x") and len(a["installation_id"]) == 66
    assert len(a["recovery_phrase"].split()) == 12
    assert (people.alice_home / "home.json").exists()


@pytest.mark.parametrize("by", ["id", "owner", "name", "bundle"])
def test_lookup_cold(run_cli: RunCli, people: People, by: str) -> None:
    a = people.alice
    query = {"id": a["identity_id"], "owner": a["owner"], "name": "alice"}.get(by)
    if query is None:
        query = run_cli("lookup", "alice", "--json", inproc=True).doc["installations"][0]["bundle"]
    r = run_cli("lookup", query, "--json", inproc=by != "name")  # one through the real script
    assert r.code == 0, r.err
    check_alice(r.doc, a, seq=1)


def test_lookup_through_home_index_and_text_output(run_cli: RunCli, people: People) -> None:
    a = people.alice
    r = run_cli("--home", str(people.alice_home), "lookup", a["owner"], "--json", inproc=True)
    assert r.code == 0, r.err
    check_alice(r.doc, a, seq=1)
    cold = run_cli("lookup", a["owner"], "--cold", "--json", inproc=True)
    assert cold.doc == r.doc
    # a time is shown with its zone, as in every command (a new-user review: lookup's had
    # none, beside others'): here a zone half an hour off the hour
    zoned = run_cli("--home", str(people.alice_home), "lookup", a["owner"], env={"TZ": "XST-5:30"})
    zone = dt.timezone(dt.timedelta(hours=5, minutes=30))
    expires = dt.datetime.fromtimestamp(r.doc["installations"][0]["prekey_expires"], zone)
    assert f"valid until {expires:%Y-%m-%d %H:%M:%S} UTC+05:30," in zoned.out, zoned.out
    text = run_cli("lookup", "alice", "--history", inproc=True)
    assert text.code == 0
    assert a["identity_id"] in text.out and "alice" in text.out
    assert "NameClaimed" in text.out and "BundlePublished" in text.out


def test_publish_bumps_seq(run_cli: RunCli, people: People) -> None:
    home = str(people.alice_home)
    r = run_cli("--home", home, "publish", "--json")
    assert r.code == 0, r.err
    assert r.doc["seq"] == 2
    assert r.doc["identity_id"] == people.alice["identity_id"]
    assert 0 < r.doc["gas_used"] <= 40_000
    cold = run_cli("lookup", "alice", "--json", inproc=True)
    assert cold.code == 0, cold.err
    check_alice(cold.doc, people.alice, seq=2)
    assert cold.doc["installations"][0]["prekey_id"] == 2
    warm = run_cli("--home", home, "lookup", "alice", "--json", inproc=True)
    check_alice(warm.doc, people.alice, seq=2)


# --- errors ----------------------------------------------------------------------------------
def test_unknown_identity(run_cli: RunCli, people: People) -> None:
    r = run_cli("lookup", "0x" + "ab" * 32)
    r.assert_one_line_error(EXIT_NOT_FOUND, "no identity")
    r = run_cli("lookup", "0x" + "cd" * 20, "--json", inproc=True)
    r.assert_one_line_error(EXIT_NOT_FOUND)
    assert r.out == ""


def test_an_upper_case_0x_is_still_an_id(run_cli: RunCli, people: People) -> None:
    r = run_cli("lookup", "0X" + "AB" * 32, inproc=True)
    r.assert_one_line_error(EXIT_NOT_FOUND, "no identity")  # not "not a valid name"


def test_options_that_do_not_go_together_are_usage_errors(run_cli: RunCli, tmp_path: Path) -> None:
    """They used to be ignored without a word (found by a new-user review)."""
    home = str(tmp_path / "h")
    for args, what in (
        (["keys", "rotate", "--force"], "--force"),
        (["devices", "link", "--timeout", "3"], "--timeout"),
        (["history", "bob", "--phrase"], "--phrase"),
        (["history", "export", str(tmp_path / "f"), "--limit", "3"], "--limit"),
    ):
        run_cli("--home", home, *args).assert_one_line_error(2, what)


def test_unknown_name(run_cli: RunCli, people: People) -> None:
    run_cli("lookup", "nobody_here", inproc=True).assert_one_line_error(
        EXIT_NOT_FOUND, "nobody_here"
    )
    r = run_cli("--home", str(people.alice_home), "lookup", "nobody_here", inproc=True)
    r.assert_one_line_error(EXIT_NOT_FOUND)


def test_malformed_query(run_cli: RunCli, people: People) -> None:
    # a typo is bad input (exit 1), not a failed verification (exit 4)
    run_cli("lookup", "0x1234", inproc=True).assert_one_line_error(EXIT_ERROR)
    run_cli("lookup", "ab", inproc=True).assert_one_line_error(EXIT_ERROR)
    # bundle text that does not decode is a record that fails verification
    run_cli("lookup", "logos_chatintro_1_AAAA", inproc=True).assert_one_line_error(EXIT_INVALID)


@pytest.fixture(scope="module")
def mallory_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mallory") / "home"


def test_name_already_taken(run_cli: RunCli, people: People, mallory_home: Path) -> None:
    r = run_cli("--home", str(mallory_home), "init", "--name", "alice", inproc=True)
    r.assert_one_line_error(contains="taken")
    # alice still owns it
    assert (
        run_cli("lookup", "alice", "--json", inproc=True).doc["identity_id"]
        == (people.alice["identity_id"])
    )


def test_init_after_taken_name_can_retry_with_another(
    run_cli: RunCli, people: People, mallory_home: Path
) -> None:
    r = run_cli("--home", str(mallory_home), "init", "--name", "mallory", "--json", inproc=True)
    assert r.code == 0, r.err
    assert r.doc["name"] == "mallory"


def test_init_twice_in_one_home(run_cli: RunCli, people: People) -> None:
    r = run_cli("--home", str(people.alice_home), "init", inproc=True)
    r.assert_one_line_error(contains="already")


def test_bundle_hash_mismatch_from_tampering_node(
    run_cli: RunCli, people: People, cfg: NetworkConfig, tmp_path: Path
) -> None:
    with RpcProxy(cfg.rpc_url) as proxy:
        net = write_network(tmp_path / "network.json", cfg, rpc_url=proxy.url)
        ok = run_cli("--network", str(net), "lookup", "alice", "--json", inproc=True)
        assert ok.code == 0, ok.err
        proxy.tamper_logs(BUNDLE_TOPIC)
        r = run_cli("--network", str(net), "lookup", "alice", "--json")
        r.assert_one_line_error(EXIT_INVALID, "hash")
        assert proxy.tampered >= 1
        r = run_cli("--network", str(net), "lookup", people.alice["identity_id"], inproc=True)
        r.assert_one_line_error(EXIT_INVALID, "hash")


@pytest.fixture(scope="module")
def direct(cfg: NetworkConfig) -> Iterator[tuple[Registry, Web3]]:
    w3 = Web3(Web3.HTTPProvider(cfg.rpc_url))
    yield Registry(cfg), w3


def test_bad_signature(run_cli: RunCli, direct: tuple[Registry, Web3]) -> None:
    reg, w3 = direct
    ident = register_direct(reg, w3)
    good = ident.devices[0].bundle(reg.config, ident.identity_id, seq=2)
    sig = bytearray(good.signature)
    sig[0] ^= 0x40
    forged = dataclasses.replace(good, signature=bytes(sig))
    reg.publish_bundle(ident.owner, ident.identity_id, ident.devices[0].pub, forged.encode())
    run_cli("lookup", ident.qid, inproc=True).assert_one_line_error(EXIT_INVALID, "signature")
    run_cli("lookup", forged.to_text(), inproc=True).assert_one_line_error(
        EXIT_INVALID, "signature"
    )


def test_revoked_installation(run_cli: RunCli, direct: tuple[Registry, Web3]) -> None:
    reg, w3 = direct
    ident: Ident = register_direct(reg, w3)
    add_device(reg, ident)
    reg.revoke_installation(ident.owner, ident.identity_id, ident.devices[0].pub)
    r = run_cli("lookup", ident.bundles[0].to_text(), inproc=True)
    r.assert_one_line_error(EXIT_INVALID, "revoked")
    # the identity itself still resolves, listing the revoked device as such
    ok = run_cli("lookup", ident.qid, "--json", inproc=True)
    assert ok.code == 0, ok.err
    assert ok.doc["revoked"] == ["0x" + ident.devices[0].pub.hex()]
    assert [i["installation_id"] for i in ok.doc["installations"]] == [
        "0x" + ident.devices[1].pub.hex()
    ]


def test_expired_prekey(run_cli: RunCli, people: People) -> None:
    wait = people.short_at + 2.5 - time.time()
    if wait > 0:
        time.sleep(wait)
    r = run_cli("lookup", people.short["identity_id"], inproc=True)
    r.assert_one_line_error(EXIT_INVALID, "expired")


def test_wrong_chain_id(
    run_cli: RunCli, people: People, cfg: NetworkConfig, tmp_path: Path
) -> None:
    net = write_network(tmp_path / "network.json", cfg, chain_id=999)
    r = run_cli("--network", str(net), "lookup", "alice", inproc=True)
    r.assert_one_line_error(EXIT_INVALID, "chain")
    r = run_cli(
        "--network", str(net), "--home", str(people.alice_home), "lookup", "alice", inproc=True
    )
    r.assert_one_line_error(EXIT_INVALID, "chain")


@pytest.fixture(scope="module")
def peer(run_cli: RunCli, people: People, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Someone alice can write to (a prekey that does not expire during the tests)."""
    home = tmp_path_factory.mktemp("peer")
    r = run_cli("--home", str(home), "init", "--json", inproc=True)
    assert r.code == 0, r.err
    return str(r.doc["identity_id"])


@pytest.mark.parametrize(
    ("field", "url"),
    [("nats_url", "127.0.0.1:::"), ("nats_url", ""), ("rpc_url", "ftp://127.0.0.1"),
     ("rpc_url", "http://127.0.0.1:99999999"), ("rpc_url", "http://")],
)  # fmt: skip
def test_a_network_file_with_an_unusable_url_is_refused_before_anything_is_stored(
    run_cli: RunCli,
    people: People,
    peer: str,
    cfg: NetworkConfig,
    tmp_path: Path,
    field: str,
    url: str,
) -> None:
    """A nats_url whose port is no number let 'send' store the message, then fail with
    urllib's "Port could not be cast to integer value" (not saying the message was kept,
    nor which file was wrong); an rpc_url of another scheme sent from the local index as if
    the chain were down. Both are the network file's fault, said first."""
    doc = json.loads(cfg.to_json())
    doc[field] = url
    net = tmp_path / "network.json"
    net.write_text(json.dumps(doc))
    home = ["--network", str(net), "--home", str(people.alice_home)]
    before = run_cli(*home[2:], "conversations", "--all", "--json", inproc=True).doc
    r = run_cli(*home, "send", peer, "hello", inproc=True)
    r.assert_one_line_error(EXIT_UNAVAILABLE, field)
    assert "network file" in r.err, r.err
    after = run_cli(*home[2:], "conversations", "--all", "--json", inproc=True).doc
    assert after == before  # nothing stored to go out later
    r = run_cli("--network", str(net), "lookup", "alice", inproc=True)
    r.assert_one_line_error(EXIT_UNAVAILABLE, field)


def test_wrong_passphrase(run_cli: RunCli, people: People) -> None:
    r = run_cli(
        "--home",
        str(people.alice_home),
        "publish",
        env={"LOGOS_CHAT_PASSPHRASE": "wrong"},
        inproc=True,
    )
    r.assert_one_line_error(EXIT_AUTH)
    # nothing was published
    assert run_cli("lookup", "alice", "--json", inproc=True).doc["installations"][0]["seq"] == 2


def test_no_network_file(run_cli: RunCli, people: People, tmp_path: Path) -> None:
    env = {"LOGOS_CHAT_DEVNET_DIR": str(tmp_path / "nothing-here")}
    r = run_cli("lookup", "alice", env=env, inproc=True)
    r.assert_one_line_error(EXIT_UNAVAILABLE, "devnet up")
    r = run_cli("--home", str(tmp_path / "carol"), "init", "--name", "carol", env=env, inproc=True)
    r.assert_one_line_error(EXIT_UNAVAILABLE, "network file")
    st = run_cli("devnet", "status", "--json", env=env, inproc=True)
    assert st.code == 0 and st.doc["running"] is False


# --- down / up: the chain survives -----------------------------------------------------------
def test_devnet_down_then_errors_then_up_keeps_state(
    run_cli: RunCli, people: People, cfg: NetworkConfig, tmp_path: Path
) -> None:
    down = run_cli("devnet", "down", "--json", inproc=True)
    assert down.code == 0, down.err
    assert down.doc["stopped"] is True
    st = run_cli("devnet", "status", "--json", inproc=True)
    assert st.code == 0 and st.doc["running"] is False
    again = run_cli("devnet", "down", inproc=True)
    assert again.code == 0 and "not running" in again.out

    # the network file is still there, its servers are not
    t0 = time.monotonic()
    r = run_cli("lookup", "alice")
    r.assert_one_line_error(EXIT_UNAVAILABLE, "devnet")
    assert time.monotonic() - t0 < 10
    run_cli("--home", str(people.alice_home), "publish", inproc=True).assert_one_line_error(
        EXIT_UNAVAILABLE
    )
    run_cli("--home", str(tmp_path / "carol"), "init", inproc=True).assert_one_line_error(
        EXIT_UNAVAILABLE
    )

    up = run_cli("devnet", "up", "--json")
    assert up.code == 0, up.err
    assert up.doc["already_running"] is False
    assert up.doc["identity_registry"] == cfg.identity_registry
    r = run_cli("lookup", "alice", "--json")
    assert r.code == 0, r.err
    check_alice(r.doc, people.alice, seq=2)
    warm = run_cli(
        "--home", str(people.alice_home), "lookup", people.alice["owner"], "--json", inproc=True
    )
    assert warm.code == 0, warm.err
    check_alice(warm.doc, people.alice, seq=2)


def test_new_user_slips_get_one_clear_line(run_cli: RunCli, people: People, tmp_path: Path) -> None:
    """Review findings: an empty passphrase made a home encrypted under nothing; '--json
    chat' printed plain text; a malformed wallet key gave a library's message."""
    home = tmp_path / "empty-pass"
    r = run_cli("--home", str(home), "init", env={"LOGOS_CHAT_PASSPHRASE": ""}, inproc=True)
    r.assert_one_line_error(EXIT_ERROR, "may not be empty")
    assert not (home / "home.json").exists()
    r = run_cli("--home", str(people.alice_home), "--json", "chat", "bob", inproc=True)
    assert r.code == 2 and "--json is not supported" in r.err
    r = run_cli(
        "--home", str(people.alice_home), "bind", "wallet",
        env={"LOGOS_CHAT_WALLET_KEY": "garbage"}, inproc=True,
    )  # fmt: skip
    r.assert_one_line_error(EXIT_ERROR, "LOGOS_CHAT_WALLET_KEY is not a private key")
    # an empty or blank argument is bad input for every command alike (exit 1): 'history ""'
    # said "not found" (exit 3) where 'lookup ""' said "not a valid name" (a new-user review)
    for args in (
        ["history", ""], ["history", " "], ["lookup", ""], ["send", "", "hi"], ["send", "bob", ""],
        ["group", "list", ""], ["group", "send", " ", "hi"], ["conversations", "mute", ""],
        ["contacts", "add", ""], ["history", "export", ""], ["edit", "", "x"], ["chat", ""],
    ):  # fmt: skip
        r = run_cli("--home", str(people.alice_home), *args, inproc=True)
        r.assert_one_line_error(EXIT_ERROR)
        assert "is empty" in r.err or "names no file" in r.err, (args, r.err)
