"""devnet.chain: anvil with --state survives a restart; send_tx surfaces reverts by name."""

from __future__ import annotations

import pytest

from devnet.chain import (
    ContractReverted,
    connect,
    deploy_registries,
    dev_account,
    registries,
    rpc_url,
    send_tx,
    start_anvil,
)
from tests.contracts import rand32, register

pytestmark = pytest.mark.devnet


def test_state_file_survives_restart(tmp_path):
    state = tmp_path / "anvil-state.json"
    proc = start_anvil(state_file=state, log_path=tmp_path / "anvil.log")
    try:
        w3 = connect(rpc_url(proc))
        dep = deploy_registries(w3, dev_account(0))
        reg, _ = registries(w3, dep)
        owner = dev_account(3)
        ident, _, _ = register(w3, reg, owner)
        height = w3.eth.block_number
    finally:
        proc.stop()  # SIGTERM: anvil writes the state file
    assert state.is_file()
    proc = start_anvil(port=proc.port, state_file=state)
    try:
        w3 = connect(rpc_url(proc))
        reg, _ = registries(w3, dep)
        assert w3.eth.block_number == height
        assert bytes(reg.functions.identityOf(owner.address).call()) == ident
        logs = w3.eth.get_logs(
            {
                "address": dep["identity_registry"],
                "fromBlock": dep["deploy_block"],
                "topics": [None, "0x" + ident.hex()],
            }
        )
        assert len(logs) == 3
        # Still writable after the restart (nonces continue).
        send_tx(w3, owner, reg.functions.addInstallation(ident, rand32(), b"again"))
    finally:
        proc.stop()


def test_send_tx_names_the_custom_error(w3, registries, funded_account):
    acct = funded_account()
    with pytest.raises(ContractReverted) as exc:
        send_tx(w3, acct, registries.identity.functions.revokeInstallation(rand32(), rand32()))
    assert exc.value.error == "UnknownIdentity"
