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
            return cls(
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
