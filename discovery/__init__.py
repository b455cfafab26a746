"""On-chain discovery: intro bundles, identity records, the registry adapter, the resolver
and the local index."""

from __future__ import annotations

import sys

import py_ecc  # noqa: F401  (imported by eth-account and web3 anyway; see below)

#: py_ecc raises the interpreter's recursion limit to 100,000 when imported. That is past
#: what the C stack holds: JSON nested 100,000 deep (from an RPC node, a domain document or
#: a handover) would crash the process instead of raising RecursionError. Nothing here
#: recurses that deep, so the limit goes back to a depth the stack survives.
SAFE_RECURSION_LIMIT = 10_000
if sys.getrecursionlimit() > SAFE_RECURSION_LIMIT:
    sys.setrecursionlimit(SAFE_RECURSION_LIMIT)
