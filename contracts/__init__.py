"""Solidity registry contracts (IdentityRegistry, NameRegistry) and their committed artifacts."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"


@cache
def _load(name: str) -> str:
    path = ARTIFACTS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no artifact {path}: run 'python -m contracts.build'")
    return path.read_text(encoding="utf-8")


def load_artifact(name: str) -> dict[str, Any]:
    """The compiled artifact for contract ``name``: contractName, abi, bytecode,
    deployedBytecode, compiler, settings, sourceHashes. A fresh dict on every call."""
    art: dict[str, Any] = json.loads(_load(name))
    return art


__all__ = ["ARTIFACTS_DIR", "load_artifact"]
