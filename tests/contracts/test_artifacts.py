"""The committed artifacts are exactly what the pinned compiler produces from the sources."""

from __future__ import annotations

import pytest

from contracts import build as cbuild
from contracts import load_artifact


@pytest.fixture(scope="module")
def fresh() -> dict[str, dict]:
    try:
        return cbuild.build()
    except cbuild.BuildError as e:  # pragma: no cover - environment problem
        pytest.fail(f"compile failed: {e}")


def test_artifacts_are_reproducible(fresh):
    for name, art in fresh.items():
        committed = (cbuild.ARTIFACTS_DIR / f"{name}.json").read_text(encoding="utf-8")
        assert cbuild.render(art) == committed, (
            f"{name}.json is stale: run python -m contracts.build"
        )


def test_artifact_shape():
    for name in ("IdentityRegistry", "NameRegistry"):
        art = load_artifact(name)
        assert art["contractName"] == name
        assert art["compiler"] == "0.8.37"
        assert art["bytecode"].startswith("0x6") and len(art["deployedBytecode"]) > 100
        assert art["settings"]["optimizer"]["enabled"] is True
        assert "contracts/IdentityRegistry.sol" in art["sourceHashes"] or name == "NameRegistry"
        assert all(k.startswith(("contracts/", "@openzeppelin/")) for k in art["sourceHashes"])


def test_check_mode(fresh, monkeypatch, capsys):
    monkeypatch.setattr(cbuild, "build", lambda: fresh)  # reuse the one compile
    assert cbuild.main(["--check"]) == 0
    changed = {k: dict(v) for k, v in fresh.items()}
    changed["NameRegistry"]["bytecode"] += "00"
    monkeypatch.setattr(cbuild, "build", lambda: changed)
    assert cbuild.main(["--check"]) == 1
    assert "NameRegistry" in capsys.readouterr().err


def test_abi_surface():
    """The names the discovery code is written against."""
    ir = {e["name"]: e for e in load_artifact("IdentityRegistry")["abi"] if "name" in e}
    for fn in (
        "register",
        "addInstallation",
        "revokeInstallation",
        "publishBundle",
        "publishPqKey",
        "setOwner",
        "setRecovery",
        "confirmRecovery",
        "cancelRecoveryChange",
        "pendingRecovery",
        "RECOVERY_DELAY",
        "linkWallet",
        "unlinkWallet",
        "registerBySig",
        "addInstallationBySig",
        "revokeInstallationBySig",
        "publishBundleBySig",
        "setOwnerBySig",
        "useNonce",
        "nonces",
        "getIdentity",
        "getIdentityByAccount",
        "identityOf",
        "eip712Domain",
    ):
        assert ir[fn]["type"] == "function", fn
    for ev in (
        "IdentityRegistered",
        "OwnerChanged",
        "RecoveryChanged",
        "InstallationAdded",
        "InstallationRevoked",
        "BundlePublished",
        "PqKeyPublished",
        "WalletLinked",
        "WalletUnlinked",
    ):
        assert ir[ev]["type"] == "event"
        first = ir[ev]["inputs"][0]
        assert (first["name"], first["type"], first["indexed"]) == ("id", "bytes32", True), ev
    for err in (
        "NotAuthorized",
        "UnknownIdentity",
        "AlreadyRegistered",
        "InstallationExists",
        "InstallationNotActive",
        "InstallationWasRevoked",
        "SignatureExpired",
        "InvalidSignature",
    ):
        assert ir[err]["type"] == "error"
    nr = {e["name"]: e for e in load_artifact("NameRegistry")["abi"] if "name" in e}
    for fn in ("commit", "claim", "release", "nameOwner", "resolveName"):
        assert nr[fn]["type"] == "function"
    for ev in ("NameClaimed", "NameReleased"):
        assert [i["indexed"] for i in nr[ev]["inputs"]] == [True, True, False]
