"""Limits, sizes and wire kinds of the group protocol, in one place."""

from __future__ import annotations

from typing import Final

#: First byte of every group wire value: high nibble = version 1, low nibble = kind.
#: Kinds 1 and 2 are the 1:1 frames; 3 is the group message.
KIND_GROUP_MESSAGE: Final = 0x13
#: A signed membership op (published to the group topic).
KIND_GROUP_OP: Final = 0x14
#: A sender-key distribution (sent over a pairwise session).
KIND_DISTRIBUTION: Final = 0x15
#: A welcome: the op log handed to a new member (over a pairwise session).
KIND_WELCOME: Final = 0x16
#: A request for ops by id, to the member that sent us an op whose dependencies we lack
#: (over a pairwise session): ``0x17 | group id (32) | op ids (32 each, 1 to 64)``.
KIND_WANT: Final = 0x17

STATE_VERSION: Final = 3  # 2 adds the retired chains, 3 the candidate ops

ID_LEN: Final = 32
TAG_LEN: Final = 8
KEY_ID_LEN: Final = 4
SIG_LEN: Final = 64
KEY_LEN: Final = 32

#: Largest forward jump accepted in one sender chain (out-of-order delivery).
MAX_SKIP: Final = 2000
#: Skipped message keys kept per sender chain (oldest evicted first).
MAX_SKIPPED_KEYS: Final = 2000
#: Epochs older than ``current - EPOCH_GRACE`` are stale for messages.
EPOCH_GRACE: Final = 16  # the key id and signature decide, not the tag
#: Messages tagged with an epoch up to this far ahead are accepted (the sender has
#: seen membership ops that have not reached us yet; the sender key authenticates it).
EPOCH_AHEAD: Final = 8
#: Ops one group's log holds; later ones are refused. Acceptance depends on nothing but
#: the op and its causal past below this (so that every member accepts the same ops).
#: A welcome of more than about 270 ops goes in parts (``chatcore.groupchat``).
MAX_OPS: Final = 4096
#: A welcome is checked op by op; an op merging branches folds its whole causal past, so
#: the sum of the epochs of a welcome's merging ops is bounded (honest logs merge rarely:
#: this lets a 4,000-op log hold about 500 merges; checking it takes a few seconds at most).
MAX_MERGE_WORK: Final = 2_000_000
#: Ops that count for nothing where they arrive (concurrent with a removal of their author
#: that we know), kept aside as *candidates*: accepted only if an op we accept depends on
#: them (a member that got one earlier built on it). Bounded per author and in all.
MAX_CANDIDATES: Final = 256
MAX_CANDIDATES_PER_AUTHOR: Final = 16
#: Sender chains kept per installation (current + the one before, for in-flight messages).
CHAINS_PER_INSTALLATION: Final = 8
#: After a member leaves or is removed, its sender chains stay *retired* this long
#: (receiver's clock, from when the receiver applied the removal): messages it sent
#: before the removal that are still in flight, or that a member coming back online
#: reads after the removal op, still decrypt. Only messages tagged with an epoch no
#: later than the removal op's are accepted from a retired chain.
RETIRED_CHAIN_MS: Final = 3_600_000
#: Retired chains kept per group (oldest dropped first).
MAX_RETIRED_CHAINS: Final = 256
#: Distributions held until the membership op that makes them valid arrives.
MAX_PENDING_DISTRIBUTIONS: Final = 4096
#: Dependencies (heads) one op may name.
MAX_DEPS: Final = 255
MAX_NAME_BYTES: Final = 256
#: members one create op may name (DESIGN aims at 1,000; a welcome holds the create op)
MAX_MEMBERS: Final = 10_000
