"""The network file: which chain, which registry contracts, which delivery network.

``devnet up`` writes one (``DIR/network.json``); every other command reads one
(``--network FILE``, default: the default devnet's).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from discovery.errors import DiscoveryError
from discovery.records import ChainBinding

NETWORK_FILE_VERSION = 1


class NetworkFileError(DiscoveryError):
    """The network file is missing or unreadable."""


def default_devnet_dir() -> Path:
    """Per-user data directory of the default devnet (``LOGOS_CHAT_DEVNET_DIR`` overrides)."""
    env = os.environ.get("LOGOS_CHAT_DEVNET_DIR")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("logos-chat", appauthor=False)) / "devnet"


def default_network_file() -> Path:
    env = os.environ.get("LOGOS_CHAT_NETWORK")
    if env:
        return Path(env)
    return default_devnet_dir() / "network.json"


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    chain_id: int
    rpc_url: str
    identity_registry: str  # 0x-address
    name_registry: str  # 0x-address
    deploy_block: int
    nats_url: str
    name: str = "devnet"
    # Only on a devnet: a well-known anvil dev key that funds new owners automatically.
    faucet_key: str | None = field(default=None, repr=False)
    version: int = NETWORK_FILE_VERSION

    @property
    def binding(self) -> ChainBinding:
        return ChainBinding.from_hex(self.chain_id, self.identity_registry)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkConfig:
        try:
            cfg = cls(
                chain_id=int(d["chain_id"]),
                rpc_url=str(d["rpc_url"]),
                identity_registry=str(d["identity_registry"]),
                name_registry=str(d["name_registry"]),
                deploy_block=int(d.get("deploy_block", 0)),
                nats_url=str(d["nats_url"]),
                name=str(d.get("name", "devnet")),
                faucet_key=d.get("faucet_key"),
                version=int(d.get("version", NETWORK_FILE_VERSION)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NetworkFileError(f"network file is missing or has a bad field: {exc}") from exc
        # a URL that cannot be used is the file's fault, said before anything is stored (a
        # send kept its message, then failed on "Port could not be cast to integer value";
        # an rpc_url of another scheme sent from the local index as if the chain were down)
        _check_url("rpc_url", cfg.rpc_url, ("http", "https"))  # (web3's HTTPProvider)
        servers = [u.strip() for u in cfg.nats_url.split(",") if u.strip()]  # as NatsTransport
        for server in servers or [cfg.nats_url.strip()]:
            _check_url("nats_url", server, ("nats", "tls", "ws", "wss"), default="nats")
        return cfg

    @classmethod
    def load(cls, path: Path) -> NetworkConfig:
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise NetworkFileError(
                f"no network file at {path}: start a devnet with 'logos-chat devnet up' "
                "or pass --network FILE"
            ) from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise NetworkFileError(f"cannot read network file {path}: {exc}") from exc
        if not isinstance(d, dict):
            raise NetworkFileError(f"network file {path} is not a JSON object")
        return cls.from_dict(d)


def _check_url(name: str, url: str, schemes: tuple[str, ...], default: str | None = None) -> None:
    """NetworkFileError unless ``url`` has one of ``schemes`` (or none, if ``default`` is
    the one it goes with), a host, and a port that is a number (if any)."""
    bad = f"network file: {name} {url!r} is not a usable URL"
    if default is not None and "://" not in url:
        url = f"{default}://{url}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is no number)
    except ValueError:
        raise NetworkFileError(f"{bad} (its port is not a number from 0 to 65535)") from None
    if parts.scheme.lower() not in schemes:
        raise NetworkFileError(
            f"{bad} (it should start with {' or '.join(s + '://' for s in schemes)})"
        )
    if not parts.hostname:
        raise NetworkFileError(f"{bad} (no host)")
