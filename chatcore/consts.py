"""Protocol constants and limits for the 1:1 core, in one place."""

from __future__ import annotations

from typing import Final

# --- wire ---------------------------------------------------------------------------------
#: Version carried in the high nibble of every frame's first byte.
WIRE_VERSION: Final = 1
#: Frame kinds (low nibble of the first byte).
KIND_HANDSHAKE: Final = 1
KIND_SESSION: Final = 2
#: Kinds 3..15 are reserved for group and other frames owned by other modules.
KIND_GROUP: Final = 3
KINDS_RESERVED: Final = range(3, 16)

SESSION_TAG_LEN: Final = 8
AEAD_TAG_LEN: Final = 16
AEAD_KEY_LEN: Final = 32

# --- key sizes ----------------------------------------------------------------------------
X25519_LEN: Final = 32
ED25519_PUB_LEN: Final = 32
ED25519_SIG_LEN: Final = 64
MLKEM768_PUB_LEN: Final = 1184
MLKEM768_CT_LEN: Final = 1088
MLKEM768_SEED_LEN: Final = 64
MLKEM768_SS_LEN: Final = 32

#: Largest prekey / PQ key id (ids are serialised as u32).
MAX_KEY_ID: Final = 0xFFFF_FFFF

# --- handshake ----------------------------------------------------------------------------
PROTOCOL_NAME: Final = b"LogosChat_PQXDH_X25519_MLKEM768_SHA256_AES256GCM_v1"
#: Upper bound for the opaque sender_info sealed into the first message.
MAX_SENDER_INFO: Final = 4096

# --- ratchet ------------------------------------------------------------------------------
#: Most message keys one received message may make us skip in one chain (Olm refuses > 2000).
MAX_SKIP: Final = 1000
#: Furthest one authenticated message may move a receiving chain forward (its message number
#: past the next expected one, or in a new chain). Beyond :data:`MAX_SKIP` only the newest
#: ``MAX_SKIP`` skipped keys are kept: the older ones are for frames the delivery network has
#: dropped (a peer offline past the 30-day retention while retransmissions, each re-encrypted,
#: grew the sender's chain). The bound is CPU: one keyed BLAKE2b per step, ~45 ms for a
#: forged frame at most (~0.9 µs a step), before its tag fails and the state stays unchanged.
MAX_FORWARD: Final = 50_000
#: Total skipped message keys kept per session; the oldest are evicted beyond this
#: (libsignal: MAX_MESSAGE_KEYS = 2000).
MAX_SKIPPED_KEYS: Final = 2000
#: Remote ratchet keys remembered after they are replaced, so late duplicates can be told apart
#: from forgeries (DuplicateMessage rather than DecryptionError).
MAX_OLD_CHAINS: Final = 8
#: Largest message number / previous-chain length accepted (varint fits u32).
MAX_COUNTER: Final = 0xFFFF_FFFF

# --- serialisation versions -----------------------------------------------------------------
INSTALLATION_KEYS_VERSION: Final = 1
SIGNED_PREKEY_VERSION: Final = 1
PQ_PREKEY_VERSION: Final = 1
RATCHET_STATE_VERSION: Final = 1
SESSION_STATE_VERSION: Final = 1

#: A signed prekey stays usable this long after its expiry (handshakes made from a bundle
#: resolved just before it expired, delivered late); after that it is refused and deleted.
PREKEY_GRACE_S: Final = 30 * 86400
