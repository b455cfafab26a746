"""Start and stop the devnet's local servers (anvil, nats-server) as child processes.

Only processes we started are ever stopped, and only by their pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devnet.errors import DevnetError

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def find_binary(name: str) -> str:
    """Locate a devnet binary: the pinned npm install, the venv, then PATH."""
    candidates = {
        "anvil": [REPO_ROOT / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"],
        "nats-server": [Path(sys.executable).parent / "nats-server"],
        "solcjs": [REPO_ROOT / "node_modules/.bin/solcjs"],
    }.get(name, [])
    env_override = os.environ.get(f"LOGOS_CHAT_{name.upper().replace('-', '_')}")
    if env_override:
        candidates.insert(0, Path(env_override))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    raise DevnetError(f"{name} not found: run 'make setup' first")


@dataclass
class ManagedProcess:
    """A server child process listening on host:port."""

    name: str
    popen: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (lets anvil write its --state file), then SIGKILL if it lingers."""
        stop_pid(self.popen.pid, timeout=timeout, popen=self.popen)

    def kill(self) -> None:
        """Hard kill, for chaos tests."""
        if self.alive():
            self.popen.kill()
            self.popen.wait(timeout=10)


def spawn(
    name: str,
    argv: list[str],
    host: str,
    port: int,
    log_path: Path | None = None,
    ready_timeout: float = 20.0,
    detach: bool = False,
) -> ManagedProcess:
    """Spawn ``argv`` and wait until it accepts TCP connections on host:port."""
    if port_open(host, port):
        raise DevnetError(f"{name}: port {host}:{port} is already in use")
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]
    proc = ManagedProcess(name, popen, host, port, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            tail = ""
            if log_path and log_path.exists():
                tail = log_path.read_text(errors="replace")[-400:].strip().replace("\n", " | ")
            raise DevnetError(f"{name} exited with code {popen.returncode} on start: {tail}")
        if port_open(host, port):
            return proc
        time.sleep(0.02)
    proc.stop()
    raise DevnetError(f"{name} did not open {host}:{port} within {ready_timeout:.0f}s")


def pid_alive(pid: int) -> bool:
    """Is ``pid`` running? A zombie (exited, not yet reaped) counts as gone; if it is our
    own child it is reaped here."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: fall through to the signal probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def stop_pid(pid: int, timeout: float = 10.0, popen: subprocess.Popen[bytes] | None = None) -> None:
    """Stop one process we started, by pid: SIGTERM, wait, then SIGKILL."""

    def gone() -> bool:
        if popen is not None:
            return popen.poll() is not None
        return not pid_alive(pid)

    if gone():
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone():
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if popen is not None:
        popen.wait(timeout=5)
