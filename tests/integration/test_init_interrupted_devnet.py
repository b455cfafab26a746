"""``Client.init`` stopped (Ctrl-C, a dead process) after its registration was sent but
before its receipt came: the transaction may still be mined. The home (owner key, recovery
phrase, device keys) is kept, and the next ``init`` in it finishes that identity (or sends
the same registration again) instead of making another: an identity that got registered is
never left without its keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

import discovery.registry as registry_mod
from chatcore.client import Client
from chatcore.errors import InitIncomplete, NotInitialised, StoreError
from discovery.network import NetworkConfig
from discovery.registry import Registry, identity_id_for
from tests.integration.conftest import PASSPHRASE

pytestmark = pytest.mark.devnet


def _rpc(network: NetworkConfig, method: str, *params: Any) -> Any:
    return Registry(network).w3.provider.make_request(method, list(params))  # type: ignore[arg-type]


def _interrupted_init(
    home: Path, network: NetworkConfig, monkeypatch: pytest.MonkeyPatch, name: str | None = None
) -> tuple[str, bytes]:
    """Ctrl-C while init waits for its registration's receipt (automine is turned off
    first: the transaction stays pending; the caller turns it on again). Returns the owner
    and salt it was sent with."""
    sent: list[tuple[str, bytes]] = []
    register, wait_receipt = Registry.register, registry_mod.wait_receipt

    def spy(self: Registry, owner: Any, salt: bytes, *args: Any) -> Any:
        sent.append((owner.address, salt))
        assert _rpc(network, "evm_setAutomine", False)
        return register(self, owner, salt, *args)

    def ctrl_c(*args: Any, **kwargs: Any) -> Any:
        if not sent:  # the faucet's funding
            return wait_receipt(*args, **kwargs)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Registry, "register", spy)
        m.setattr(registry_mod, "wait_receipt", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            Client.init(home, PASSPHRASE, network, name)
    assert len(sent) == 1
    return sent[0]


def _finished(home: Path, network: NetworkConfig, owner: str, salt: bytes) -> None:
    """init in the home again: the identity sent first is the one it finishes."""
    client, res = Client.init(home, PASSPHRASE, network)
    try:
        ident = identity_id_for(owner, salt)
        assert res.identity_id == ident and res.owner == owner
        assert client.registry.get_identity(ident).exists
        # the recovery phrase shown is the one the identity was bound to
        recovery = Account.from_mnemonic(res.recovery_phrase)
        assert client.registry.recovery_salt(recovery, owner) == salt
        assert client.lookup("0x" + ident.hex()).identity_id == ident
    finally:
        client.close()
    again = Client.open(home, PASSPHRASE, network)  # an ordinary home from now on
    assert again.identity_id == ident
    again.close()


def test_init_interrupted_before_its_registration_was_mined_keeps_the_identity(
    tmp_path: Path, network: NetworkConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "slow"
    try:
        owner, salt = _interrupted_init(home, network, monkeypatch)
        # other commands say init is not finished; the next init, while the registration
        # is still pending, says so and keeps the home
        with pytest.raises(NotInitialised, match="init"):
            Client.open(home, PASSPHRASE, network)
        with pytest.raises(InitIncomplete, match="not mined yet"):
            Client.init(home, PASSPHRASE, network)
        _rpc(network, "evm_mine")
    finally:
        _rpc(network, "evm_setAutomine", True)
    _finished(home, network, owner, salt)


def test_init_interrupted_whose_registration_was_dropped_sends_the_same_one_again(
    tmp_path: Path, network: NetworkConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node dropped the pending transaction (or never got it): the next init registers
    the same keys (the dropped transaction, if it ever came back, registers the same id)."""
    home = tmp_path / "dropped"
    try:
        owner, salt = _interrupted_init(home, network, monkeypatch)
        _rpc(network, "anvil_dropAllTransactions")
    finally:
        _rpc(network, "evm_setAutomine", True)
    assert not Registry(network).get_identity(identity_id_for(owner, salt)).exists
    _finished(home, network, owner, salt)


def test_init_run_again_without_the_name_claims_the_name_the_interrupted_one_was_given(
    tmp_path: Path, network: NetworkConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'init --name N' interrupted says to run 'init' again (no --name): the init that
    finishes the identity claims N all the same (it finished one without a name)."""
    home, name = tmp_path / "named", f"resumed-{os.urandom(4).hex()}"
    try:
        owner, salt = _interrupted_init(home, network, monkeypatch, name)
        _rpc(network, "anvil_dropAllTransactions")
    finally:
        _rpc(network, "evm_setAutomine", True)
    client, res = Client.init(home, PASSPHRASE, network)
    try:
        ident = identity_id_for(owner, salt)
        assert res.identity_id == ident and res.name == name
        assert client.lookup(name).identity_id == ident
    finally:
        client.close()


def test_init_that_sent_nothing_says_so_and_can_simply_be_run_again(
    tmp_path: Path, network: NetworkConfig
) -> None:
    """No money for gas (no faucet): the chain refuses to estimate the registration, so it
    is never sent. init said it 'was sent but not confirmed'; it says nothing was sent, and
    leaves no home (the next init starts over)."""
    from dataclasses import replace

    from discovery.errors import NotSent

    home = tmp_path / "penniless"
    with pytest.raises(NotSent) as err:
        Client.init(home, PASSPHRASE, replace(network, faucet_key=None))
    assert not isinstance(err.value, InitIncomplete)
    assert "not sent" in str(err.value) and "init again" in str(err.value)
    assert "was sent" not in str(err.value)
    assert not home.exists()
    client, res = Client.init(home, PASSPHRASE, network)
    try:
        assert client.registry.get_identity(res.identity_id).exists
    finally:
        client.close()


def test_init_resumed_that_sent_nothing_this_time_keeps_the_home(
    tmp_path: Path, network: NetworkConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An init finishing an interrupted one whose own try fails before it sends: the
    earlier registration may still land, so the home keeps everything; it says nothing
    was sent this time."""
    from discovery.errors import ChainUnavailable

    home = tmp_path / "twice"
    try:
        owner, salt = _interrupted_init(home, network, monkeypatch)
        _rpc(network, "anvil_dropAllTransactions")
    finally:
        _rpc(network, "evm_setAutomine", True)
    files = {p.name: p.read_bytes() for p in home.iterdir()}

    def unreachable(*args: Any) -> Any:  # the chain went away after init's first checks
        raise ChainUnavailable("chain unreachable")

    with monkeypatch.context() as m:
        m.setattr(Registry, "pending_transactions", unreachable)
        with pytest.raises(InitIncomplete, match="nothing was sent") as err:
            Client.init(home, PASSPHRASE, network)
    assert "was sent but" not in str(err.value)
    assert {p.name for p in home.iterdir()} == set(files)
    _finished(home, network, owner, salt)


_INIT_KILLED = """
import os, signal, sys
from pathlib import Path
from chatcore.client import Client
from discovery.network import NetworkConfig
from discovery.registry import Registry

home, passphrase, net, where, name = sys.argv[1:6]
calls = {name: getattr(Registry, name) for name in ("publish_pq_key", "claim_name")}


def dying(step, after):
    def call(*args, **kwargs):
        if after:  # the transaction is mined, the process never learns it
            calls[step](*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    return call


step, _, after = where.partition(":")
setattr(Registry, step, dying(step, after == "after"))
Client.init(home, passphrase, NetworkConfig.load(Path(net)), name)
"""


@pytest.mark.parametrize(
    "where",
    ["publish_pq_key", "publish_pq_key:after", "claim_name", "claim_name:after"],
)
def test_init_killed_after_the_registration_keeps_the_phrase_for_the_next_init(
    tmp_path: Path, network: NetworkConfig, where: str
) -> None:
    """Review finding: init dropped the recovery phrase it kept as it marked the identity
    registered; a process killed while it then published the post-quantum key record or
    claimed the name left an identity whose phrase was never shown, in a home that said
    nothing of it (and init refused it: 'already holds an identity'). The phrase is kept
    until init hands it over: other commands say init did not finish, the next init does
    what is left (not again what the killed one did) and shows it."""
    from tests.fixtures.killed import run_killed

    home, name = tmp_path / "killed", f"killed-{os.urandom(4).hex()}"
    run_killed(_INIT_KILLED, home, PASSPHRASE, network, tmp_path, where, name)
    with pytest.raises(NotInitialised, match="init there again"):
        Client.open(home, PASSPHRASE, network)
    client, res = Client.init(home, PASSPHRASE, network)
    try:
        assert res.name == name
        assert Account.from_mnemonic(res.recovery_phrase).address == res.recovery
        assert client.registry.get_identity(res.identity_id).recovery.lower() == (
            res.recovery.lower()
        )
        found = client.lookup(name)  # the name, and the device with its PQ key record
        assert found.identity_id == res.identity_id
        device = found.installation(res.installation_id)
        assert device is not None and device.pq is not None
        assert client.registry.name_owner(name) == res.identity_id
    finally:
        client.close()
    again = Client.open(home, PASSPHRASE, network)  # an ordinary home from now on
    again.close()
    with pytest.raises(StoreError, match="already holds"):
        Client.init(home, PASSPHRASE, network)
