"""``logos-chat devnet up|down|status``: a local chain and delivery network on loopback.

One directory holds a devnet: ``network.json`` (what clients read), ``devnet.json`` (pids and
ports of the servers we started), anvil's ``--state`` file (the chain survives down/up),
nats-server's JetStream store and both servers' logs. Servers run detached so that they
outlive the command that started them; ``down`` stops exactly those pids.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devnet.errors import DevnetError, DevnetNotRunning
from devnet.process import free_port, pid_alive, port_open, stop_pid
from discovery.network import NetworkConfig, default_devnet_dir

HOST = "127.0.0.1"
CHAIN_ID = 31337
# anvil's well-known first dev account (mnemonic "test test ... junk"): funds new owners.
DEV_FAUCET_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


@dataclass(frozen=True, slots=True)
class DevnetStatus:
    directory: Path
    running: bool
    anvil_pid: int | None
    nats_pid: int | None
    rpc_url: str | None
    nats_url: str | None
    block_number: int | None
    network_file: Path

    def as_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "running": self.running,
            "anvil_pid": self.anvil_pid,
            "nats_pid": self.nats_pid,
            "rpc_url": self.rpc_url,
            "nats_url": self.nats_url,
            "block_number": self.block_number,
            "network_file": str(self.network_file),
        }


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _ours(pid: int | None, needle: str) -> bool:
    """Is ``pid`` alive and still the server we started (not a recycled pid)?"""
    return bool(pid) and pid_alive(int(pid)) and needle in _cmdline(int(pid))  # type: ignore[arg-type]


class Devnet:
    def __init__(self, directory: Path | None = None) -> None:
        self.dir = Path(directory) if directory else default_devnet_dir()
        self.state_file = self.dir / "devnet.json"
        self.network_file = self.dir / "network.json"

    def _read_state(self) -> dict[str, Any]:
        try:
            d = json.loads(self.state_file.read_text())
            return d if isinstance(d, dict) else {}
        except (OSError, json.JSONDecodeError):
            return {}

    def _write_state(self, d: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")

    def is_running(self) -> bool:
        st = self._read_state()
        a, n = st.get("anvil", {}), st.get("nats", {})
        return (
            _ours(a.get("pid"), "anvil")
            and _ours(n.get("pid"), "nats-server")
            and port_open(HOST, int(a.get("port", 0)))
            and port_open(HOST, int(n.get("port", 0)))
        )

    # --- up -----------------------------------------------------------------------------------
    def up(self) -> tuple[NetworkConfig, bool]:
        """Start (or find running) servers and contracts. Returns (config, already_running)."""
        if self.is_running():
            return NetworkConfig.load(self.network_file), True
        from devnet.chain import connect, deploy_registries, start_anvil
        from devnet.nats import start_nats

        try:  # a path through a file, no permission, a read-only file system
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DevnetError(
                f"cannot make the devnet directory {self.dir}: {exc.strerror or exc}"
            ) from exc
        st = self._read_state()
        # a half-running devnet (one server died): stop what is left, then start both
        for key, needle in (("anvil", "anvil"), ("nats", "nats-server")):
            pid = st.get(key, {}).get("pid")
            if _ours(pid, needle):
                stop_pid(int(pid))
        anvil_port = _reuse_port(st.get("anvil", {}).get("port"))
        nats_port = _reuse_port(st.get("nats", {}).get("port"))
        anvil = start_anvil(
            port=anvil_port,
            state_file=self.dir / "anvil-state.json",
            log_path=self.dir / "anvil.log",
            detach=True,
        )
        try:
            nats = start_nats(
                port=nats_port,
                store_dir=self.dir / "nats",
                log_path=self.dir / "nats.log",
                detach=True,
            )
        except BaseException:
            anvil.stop()
            raise
        self._write_state(
            {
                "anvil": {"pid": anvil.pid, "port": anvil.port},
                "nats": {"pid": nats.pid, "port": nats.port},
            }
        )
        rpc_url = f"http://{HOST}:{anvil.port}"
        nats_url = f"nats://{HOST}:{nats.port}"
        try:
            w3 = connect(rpc_url)
            old = self._existing_network()
            if (
                old is not None
                and _has_code(w3, old.identity_registry)
                and _has_code(w3, old.name_registry)
            ):
                cfg = NetworkConfig(
                    chain_id=int(w3.eth.chain_id),
                    rpc_url=rpc_url,
                    identity_registry=old.identity_registry,
                    name_registry=old.name_registry,
                    deploy_block=old.deploy_block,
                    nats_url=nats_url,
                    faucet_key=DEV_FAUCET_KEY,
                )
            else:
                from eth_account import Account

                deployed = deploy_registries(w3, Account.from_key(DEV_FAUCET_KEY))
                cfg = NetworkConfig(
                    chain_id=int(w3.eth.chain_id),
                    rpc_url=rpc_url,
                    identity_registry=deployed["identity_registry"],
                    name_registry=deployed["name_registry"],
                    deploy_block=int(deployed["deploy_block"]),
                    nats_url=nats_url,
                    faucet_key=DEV_FAUCET_KEY,
                )
            cfg.save(self.network_file)
        except BaseException:
            self.down()
            raise
        return cfg, False

    def _existing_network(self) -> NetworkConfig | None:
        try:
            return NetworkConfig.load(self.network_file)
        except Exception:
            return None

    # --- down / status ----------------------------------------------------------------------
    def down(self) -> bool:
        """Stop the servers this devnet started. Returns False if none was running."""
        st = self._read_state()
        stopped = False
        for key, needle in (("nats", "nats-server"), ("anvil", "anvil")):
            pid = st.get(key, {}).get("pid")
            if _ours(pid, needle):
                stop_pid(int(pid), timeout=15)
                stopped = True
        return stopped

    def status(self) -> DevnetStatus:
        st = self._read_state()
        running = self.is_running()
        block = None
        rpc = nats = None
        if running:
            rpc = f"http://{HOST}:{st['anvil']['port']}"
            nats = f"nats://{HOST}:{st['nats']['port']}"
            try:
                from devnet.chain import connect

                block = int(connect(rpc).eth.block_number)
            except Exception:
                block = None
        # each server's pid while it runs (one may have died: the devnet is then not running,
        # and 'up' starts both again)
        pids = {
            key: st.get(key, {}).get("pid") if _ours(st.get(key, {}).get("pid"), needle) else None
            for key, needle in (("anvil", "anvil"), ("nats", "nats-server"))
        }
        return DevnetStatus(
            self.dir, running, pids["anvil"], pids["nats"], rpc, nats, block, self.network_file
        )

    def require_running(self) -> NetworkConfig:
        if not self.is_running():
            raise DevnetNotRunning(f"no devnet running in {self.dir}: run 'logos-chat devnet up'")
        return NetworkConfig.load(self.network_file)


def _reuse_port(port: Any) -> int:
    if port and not port_open(HOST, int(port)):
        return int(port)
    return free_port(HOST)


def _has_code(w3: Any, address: str) -> bool:
    try:
        return len(w3.eth.get_code(w3.to_checksum_address(address))) > 0
    except Exception as exc:
        raise DevnetError(f"cannot read the chain: {exc}") from exc


def wait_until(pred: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False
