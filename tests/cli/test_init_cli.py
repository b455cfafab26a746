"""``logos-chat init`` when something goes wrong after the identity reached the chain: the
recovery phrase (shown nowhere else) is still shown, and the home says what is left to do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from discovery.registry import Registry
from tests.cli.conftest import RunCli

pytestmark = pytest.mark.devnet


@pytest.fixture(scope="module")
def up(run_cli: RunCli) -> None:
    r = run_cli("devnet", "up", "--json", inproc=True)
    assert r.code == 0, r.err


def test_a_name_claim_lost_after_registration_still_shows_the_recovery_phrase(
    up: None, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_cli("--home", str(tmp_path / "one"), "init", "--name", "samename", "--json")
    assert first.code == 0, first.err
    # Two people claim one name at once: both find it free before they register, the
    # second one's claim is refused on chain after its identity was registered.
    monkeypatch.setattr(Registry, "name_owner", lambda self, name: b"\x00" * 32)
    home = ["--home", str(tmp_path / "two")]
    r = run_cli(*home, "init", "--name", "samename", "--json", inproc=True)
    r.assert_one_line_error(contains="bind name")
    assert "samename" in r.err and "taken" in r.err
    doc = r.doc  # what init made is printed all the same
    assert doc["name"] is None
    monkeypatch.undo()

    # the phrase shown is the identity's: it restores it in a new home
    restored = run_cli(
        "--home", str(tmp_path / "restored"), "recovery", "restore", "--json",
        env={"LOGOS_CHAT_RECOVERY_PHRASE": doc["recovery_phrase"]},
    )  # fmt: skip
    assert restored.code == 0, restored.err
    assert restored.doc["identity_id"] == doc["identity_id"]


def test_a_name_claim_lost_after_registration_text_output(
    up: None, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_cli("--home", str(tmp_path / "one"), "init", "--name", "textname")
    assert first.code == 0, first.err
    monkeypatch.setattr(Registry, "name_owner", lambda self, name: b"\x00" * 32)
    home = ["--home", str(tmp_path / "two")]
    r = run_cli(*home, "init", "--name", "textname", inproc=True)
    r.assert_one_line_error(contains="bind name")
    assert "Recovery phrase" in r.out
    monkeypatch.undo()
    # the home works; the name can be claimed later (another one: this one is taken)
    assert run_cli(*home, "bind", "name", "othername").code == 0
    assert run_cli(*home, "whoami", "--json").doc["names"] == ["othername"]


def test_ctrl_c_during_the_name_claim_still_shows_the_recovery_phrase(
    up: None, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the claim waits for its commitment to age

    monkeypatch.setattr(Registry, "wait_for_commitment", interrupted)
    home = ["--home", str(tmp_path / "impatient")]
    r = run_cli(*home, "init", "--name", "impatient", "--json", inproc=True)
    r.assert_one_line_error(code=130, contains="bind name")
    monkeypatch.undo()
    restored = run_cli(
        "--home", str(tmp_path / "restored"), "recovery", "restore", "--json",
        env={"LOGOS_CHAT_RECOVERY_PHRASE": r.doc["recovery_phrase"]},
    )  # fmt: skip
    assert restored.code == 0, restored.err
    assert restored.doc["identity_id"] == r.doc["identity_id"]


@pytest.mark.parametrize("field", ["identity_registry", "name_registry"])
def test_a_network_file_naming_no_registry_contract_is_refused(
    up: None, run_cli: RunCli, devnet_dir: Path, tmp_path: Path, field: str
) -> None:
    net = json.loads((devnet_dir / "network.json").read_text())
    net[field] = "0x" + "11" * 20  # a typo, or another deployment's file: no contract there
    wrong = tmp_path / "wrong-network.json"
    wrong.write_text(json.dumps(net))
    home = tmp_path / "nowhere"
    r = run_cli("--home", str(home), "--network", str(wrong), "init")
    r.assert_one_line_error(code=4, contains="no registry contract")
    assert not home.exists()  # nothing was made, nothing sent: a retry with the right file works
    r = run_cli("--network", str(wrong), "lookup", "0x" + "22" * 32)
    r.assert_one_line_error(code=4, contains="no registry contract")


_INIT_KILLED = """
import os, signal, sys
from chatcore.home import Home
from discovery.registry import Registry
from cli.main import cli

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

at = sys.argv[1]
if at == "register":  # the keys are stored, the registration not sent yet
    Registry.register = killed
else:  # the store is written, the owner keystore not yet
    Home.save_owner_key = killed
cli(sys.argv[2:], prog_name="logos-chat")
"""


@pytest.mark.parametrize("at", ["keystore", "register"])
def test_init_killed_before_registering_can_be_run_again(
    up: None, run_cli: RunCli, devnet_dir: Path, tmp_path: Path, at: str
) -> None:
    from tests.cli.conftest import base_env

    home = ["--home", str(tmp_path / "killed")]
    name = f"killed-{at}"
    proc = subprocess.run(
        [sys.executable, "-c", _INIT_KILLED, at, *home, "init", "--name", name],
        env=base_env(devnet_dir, tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    # the home is no identity: said so, not blamed on the chain
    r = run_cli(*home, "whoami")
    r.assert_one_line_error(contains="init")
    assert "not on this chain" not in r.err
    # and init starts over
    r = run_cli(*home, "init", "--name", name, "--json")
    assert r.code == 0, r.err
    assert run_cli("lookup", name, "--json").doc["identity_id"] == r.doc["identity_id"]
    assert run_cli(*home, "whoami", "--json").doc["identity_id"] == r.doc["identity_id"]


def test_init_keeps_refusing_a_home_that_holds_an_identity_or_waits_to_be_linked(
    up: None, run_cli: RunCli, tmp_path: Path
) -> None:
    home = ["--home", str(tmp_path / "made")]
    made = run_cli(*home, "init", "--json")
    assert made.code == 0, made.err
    r = run_cli(*home, "init")
    r.assert_one_line_error(code=1, contains="already holds an identity")
    # a passphrase that does not open it: said as other commands say it (the home may be
    # one whose init stopped after it sent the registration: nobody is told to delete it)
    r = run_cli(*home, "init", env={"LOGOS_CHAT_PASSPHRASE": "another one"})
    r.assert_one_line_error(code=6, contains="wrong passphrase")
    assert run_cli(*home, "whoami", "--json").doc["identity_id"] == made.doc["identity_id"]

    pending = ["--home", str(tmp_path / "pending")]
    code = run_cli(*pending, "devices", "link", "--json").doc["code"]
    run_cli(*pending, "init").assert_one_line_error(code=1, contains="already holds an identity")
    assert run_cli(*pending, "devices", "link", "--json").doc["code"] == code


@pytest.mark.parametrize("command", [["init"], ["devices", "link"]], ids=" ".join)
def test_a_home_that_cannot_be_made_is_a_one_line_error(
    up: None, run_cli: RunCli, tmp_path: Path, command: list[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    r = run_cli("--home", str(a_file / "home"), *command)
    r.assert_one_line_error(code=1, contains=str(a_file / "home"))


def test_a_restore_into_a_home_that_cannot_be_made_changes_nothing_on_chain(
    up: None, run_cli: RunCli, tmp_path: Path
) -> None:
    home = ["--home", str(tmp_path / "kept")]
    made = run_cli(*home, "init", "--json")
    assert made.code == 0, made.err
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    env = {"LOGOS_CHAT_RECOVERY_PHRASE": made.doc["recovery_phrase"]}
    r = run_cli("--home", str(a_file / "home"), "recovery", "restore", env=env)
    r.assert_one_line_error(code=1, contains=str(a_file / "home"))
    # the identity's device was not revoked, nor its owner replaced: the home works on
    devices = run_cli(*home, "devices", "list", "--json").doc
    assert [d["status"] for d in devices] == ["active"]
    assert run_cli(*home, "publish").code == 0


_INIT_KILLED_WAITING = """
import os, signal, sys
import discovery.registry as registry_mod
from discovery.registry import Registry
from cli.main import cli

register, wait_receipt = Registry.register, registry_mod.wait_receipt
sent = []

def spy(*args, **kwargs):
    sent.append(1)
    return register(*args, **kwargs)

def killed(*args, **kwargs):
    if not sent:  # the faucet's funding
        return wait_receipt(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # the registration is with the node

Registry.register = spy
registry_mod.wait_receipt = killed
cli(sys.argv[1:], prog_name="logos-chat")
"""


def test_init_killed_after_sending_the_registration_is_finished_by_the_next_init(
    up: None, run_cli: RunCli, devnet_dir: Path, tmp_path: Path
) -> None:
    """The registration landed, the process never saw it: the home said init did not
    finish, and init refused it ('already holds an identity'), so the recovery phrase was
    never shown. The next init finishes that identity and shows its phrase."""
    from eth_account import Account

    from tests.cli.conftest import base_env

    home = ["--home", str(tmp_path / "killed")]
    proc = subprocess.run(
        [sys.executable, "-c", _INIT_KILLED_WAITING, *home, "init"],
        env=base_env(devnet_dir, tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    r = run_cli(*home, "whoami")
    r.assert_one_line_error(contains="run init there again")

    # another passphrase: it does not open the home (not 'already holds an identity', which
    # may have the user delete a home whose registration landed); the home is untouched
    # (but for the lock file the killed init left, which the next init takes and removes)
    def files() -> dict[str, bytes]:
        return {
            p.name: p.read_bytes() for p in (tmp_path / "killed").iterdir() if p.suffix != ".lock"
        }

    before = files()
    r = run_cli(*home, "init", env={"LOGOS_CHAT_PASSPHRASE": "not this one"})
    r.assert_one_line_error(code=6, contains="wrong passphrase")
    assert "already holds" not in r.err
    assert files() == before
    r = run_cli(*home, "init", "--name", "killedwaiting", "--json")
    assert r.code == 0, r.err
    ident = r.doc["identity_id"]
    assert run_cli("lookup", "killedwaiting", "--json").doc["identity_id"] == ident
    assert run_cli(*home, "whoami", "--json").doc["identity_id"] == ident
    Account.enable_unaudited_hdwallet_features()
    assert Account.from_mnemonic(r.doc["recovery_phrase"]).address == r.doc["recovery"]
    # and only the one identity: the owner sent one registration
    owner = run_cli("lookup", ident, "--json").doc["owner"]
    assert owner == r.doc["owner"]


def test_init_interrupted_waiting_for_its_registration_says_to_run_it_again(
    up: None, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import discovery.registry as registry_mod

    register, wait_receipt = Registry.register, registry_mod.wait_receipt
    sent: list[bool] = []

    def spy(*args: object, **kwargs: object) -> object:
        sent.append(True)
        return register(*args, **kwargs)  # type: ignore[arg-type]

    def ctrl_c(*args: object, **kwargs: object) -> object:
        if not sent:  # the faucet's funding
            return wait_receipt(*args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    home = ["--home", str(tmp_path / "ctrl-c")]
    with monkeypatch.context() as m:
        m.setattr(Registry, "register", spy)
        m.setattr(registry_mod, "wait_receipt", ctrl_c)
        r = run_cli(*home, "init", inproc=True)
    r.assert_one_line_error(code=130, contains="init' again")
    assert "Recovery phrase" not in r.out  # shown by the init that finishes it
    r = run_cli(*home, "init", "--json")
    assert r.code == 0, r.err
    assert run_cli("lookup", r.doc["identity_id"], "--json").doc["owner"] == r.doc["owner"]


def test_init_while_another_init_runs_on_the_home_is_a_one_line_error(
    up: None, run_cli: RunCli, tmp_path: Path
) -> None:
    from chatcore.home import Home

    home = Home(tmp_path / "busy")
    home.make_dir()
    with home.init_lock():  # as an init running in another process holds it
        made = sorted(p.name for p in home.path.iterdir())
        r = run_cli("--home", str(home.path), "init")
        r.assert_one_line_error(code=1, contains="another init is running")
        assert sorted(p.name for p in home.path.iterdir()) == made
    r = run_cli("--home", str(home.path), "init", "--json")  # once it is done, init works
    assert r.code == 0, r.err
    assert (
        run_cli("--home", str(home.path), "whoami", "--json").doc["identity_id"]
        == r.doc["identity_id"]
    )


def test_restore_or_link_while_an_init_runs_on_the_home_is_a_one_line_error(
    up: None, run_cli: RunCli, tmp_path: Path
) -> None:
    """Only init took the home's lock: a restore or a link at the same time laid out a home
    over it (and a restore changed the identity on chain first)."""
    from chatcore.home import Home

    made = run_cli("--home", str(tmp_path / "kept"), "init", "--json")
    assert made.code == 0, made.err
    env = {"LOGOS_CHAT_RECOVERY_PHRASE": made.doc["recovery_phrase"]}
    home = Home(tmp_path / "busy")
    home.make_dir()
    with home.init_lock():  # as an init running in another process holds it
        files = sorted(p.name for p in home.path.iterdir())
        for command in (["recovery", "restore"], ["devices", "link"]):
            r = run_cli("--home", str(home.path), *command, env=env)
            r.assert_one_line_error(code=1, contains="another init is running")
            assert sorted(p.name for p in home.path.iterdir()) == files
    # the identity's device was not revoked by the restore refused
    devices = run_cli("--home", str(tmp_path / "kept"), "devices", "list", "--json").doc
    assert [d["status"] for d in devices] == ["active"]
