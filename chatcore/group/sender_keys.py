"""Sender keys: per-installation KDF chains with a per-chain Ed25519 signing key.

Chain step (Signal sender keys / Megolm style)::

    message_key || chain_key' = BLAKE2b-512(key = chain_key, 0x01, person "LogosChatSK1")

Group message wire (kind 0x13)::

    0x13 | group tag (8) | sender key id (4) | iteration (varint)
         | AES-256-GCM(message_key, nonce = iteration as 12 B big-endian, aad = header)
         | Ed25519 signature (64) by the chain's signing key over
           sender installation id (32) || everything before it

The sender's installation id is signed, not sent: receivers verify against the
installation each chain was handed out by, so a member that re-distributes another
member's chain (key id and signing key) as its own cannot have that member's messages
attributed to it, nor make them fail.

Overhead for any plaintext: 1 + 8 + 4 + varint (1-3 B below 2M messages) + 16 + 64 = 94-96 B.

Distribution wire (kind 0x15, sent over a pairwise session, 173 B)::

    0x15 | group id (32) | identity (32) | installation (32) | key id (4) | epoch (u32)
         | iteration (u32) | chain key (32) | signing public key (32)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from vodozemac import Account

from chatcore.codec import Reader, read_varint, varint
from chatcore.errors import DecryptionError, DuplicateMessage, MalformedMessage, TooManySkipped
from chatcore.group._frozen import updater
from chatcore.group._primitives import (
    aead_open,
    aead_seal,
    chain_sign,
    chain_signer,
    ed25519_from_seed,
    sender_chain_step,
)
from chatcore.group.consts import (
    ID_LEN,
    KEY_ID_LEN,
    KEY_LEN,
    KIND_DISTRIBUTION,
    KIND_GROUP_MESSAGE,
    MAX_SKIP,
    MAX_SKIPPED_KEYS,
    SIG_LEN,
    TAG_LEN,
)
from chatcore.group.keys import Rng

_TAG_OVERHEAD = 16
_MIN_FRAME = 1 + TAG_LEN + KEY_ID_LEN + 1 + _TAG_OVERHEAD + SIG_LEN


def _nonce(iteration: int) -> bytes:
    return iteration.to_bytes(12, "big")


@dataclass(frozen=True, slots=True)
class SenderKeyDistribution:
    """What one installation hands every other member installation for one chain."""

    group_id: bytes
    identity: bytes
    installation: bytes
    key_id: bytes
    epoch: int
    iteration: int
    chain_key: bytes = field(repr=False)
    signing_public: bytes

    def __post_init__(self) -> None:
        for value, n in (
            (self.group_id, ID_LEN),
            (self.identity, ID_LEN),
            (self.installation, ID_LEN),
            (self.key_id, KEY_ID_LEN),
            (self.chain_key, KEY_LEN),
            (self.signing_public, 32),
        ):
            if len(value) != n:
                raise ValueError("bad field length in distribution")
        if not (0 <= self.epoch < 2**32 and 0 <= self.iteration < 2**32):
            raise ValueError("epoch / iteration out of range")

    def to_bytes(self) -> bytes:
        return b"".join(
            (
                bytes((KIND_DISTRIBUTION,)),
                self.group_id,
                self.identity,
                self.installation,
                self.key_id,
                self.epoch.to_bytes(4, "big"),
                self.iteration.to_bytes(4, "big"),
                self.chain_key,
                self.signing_public,
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderKeyDistribution:
        r = Reader(data)
        if r.u8() != KIND_DISTRIBUTION:
            raise MalformedMessage("not a sender-key distribution")
        out = cls(
            r.take(ID_LEN), r.take(ID_LEN), r.take(ID_LEN), r.take(KEY_ID_LEN),
            r.u32(), r.u32(), r.take(KEY_LEN), r.take(32),
        )  # fmt: skip
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class SenderChain:
    """Our own sending chain for the current key period."""

    key_id: bytes
    epoch: int
    iteration: int
    chain_key: bytes = field(repr=False)
    signing_secret: bytes = field(repr=False)
    signing_public: bytes
    # the signing key moved into vodozemac (``chain_signer``, ~46 us to build): made at the
    # first message, handed from each chain to the next, gone with the chain
    signer: Account | None = field(default=None, repr=False, compare=False)

    @classmethod
    def generate(cls, rng: Rng, epoch: int, avoid: Mapping[bytes, object]) -> SenderChain:
        key_id = rng(KEY_ID_LEN)
        while key_id in avoid:  # keep our key id unique among the ones we know
            key_id = rng(KEY_ID_LEN)
        public, secret = ed25519_from_seed(rng(32))
        return cls(key_id, epoch, 0, rng(KEY_LEN), secret, public)

    def distribution(self, group_id: bytes, identity: bytes, installation: bytes) -> bytes:
        return SenderKeyDistribution(
            group_id, identity, installation, self.key_id, self.epoch, self.iteration,
            self.chain_key, self.signing_public,
        ).to_bytes()  # fmt: skip

    def encrypt(
        self, tag: bytes, plaintext: bytes, installation: bytes
    ) -> tuple[SenderChain, bytes]:
        """(next chain, frame); ``installation``: ours, the one this chain was handed out by."""
        it = self.iteration
        mk, nck = sender_chain_step(self.chain_key)
        if it < 0x80:
            header = b"\x13" + tag + self.key_id + _ONE_BYTE[it]
        elif it < 0x4000:  # two-byte varint, inline: iterations 128 to 16,383
            header = b"\x13" + tag + self.key_id + bytes(((it & 0x7F) | 0x80, it >> 7))
        else:
            header = b"\x13" + tag + self.key_id + varint(it)
        signed = header + aead_seal(mk, it.to_bytes(12, "big"), plaintext, header)
        signer = self.signer or chain_signer(self.signing_secret)
        frame = signed + chain_sign(signer, installation + signed)
        return _next_sender(self, it + 1, nck, signer), frame


@dataclass(frozen=True, slots=True)
class ReceiverChain:
    """Another installation's chain, as far as we have followed it."""

    identity: bytes
    installation: bytes
    key_id: bytes
    epoch: int
    signing_public: bytes
    base: int  # first iteration we hold a key for
    iteration: int  # next iteration expected
    chain_key: bytes = field(repr=False)
    skipped: Mapping[int, bytes] = field(repr=False)  # never mutated after construction
    # the state encoding of this (immutable) chain, filled on first use: a group state is
    # saved after every change, and most of its chains did not change
    _encoded: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def encoded(self) -> bytes:
        """This chain's record in the group state encoding (see ``GroupState.to_bytes``)."""
        enc = self._encoded
        if enc is None:
            parts = [
                self.identity, self.installation, self.key_id, varint(self.epoch),
                self.signing_public, varint(self.base), varint(self.iteration), self.chain_key,
                varint(len(self.skipped)),
            ]  # fmt: skip
            for i, mk in sorted(self.skipped.items()):
                parts += [varint(i), mk]
            enc = b"".join(parts)
            object.__setattr__(self, "_encoded", enc)
        return enc

    @classmethod
    def from_distribution(cls, d: SenderKeyDistribution) -> ReceiverChain:
        return cls(
            d.identity, d.installation, d.key_id, d.epoch, d.signing_public,
            d.iteration, d.iteration, d.chain_key, {},
        )  # fmt: skip

    def decrypt(
        self, iteration: int, header: bytes, ciphertext: bytes
    ) -> tuple[ReceiverChain, bytes]:
        """Decrypt an already signature-checked frame body. The chain is not changed on error."""
        if iteration < self.iteration:
            if iteration < self.base:
                raise DecryptionError("no key for this message")
            mk = self.skipped.get(iteration)
            if mk is None:
                raise DuplicateMessage(f"sender key {self.key_id.hex()} iteration {iteration}")
            pt = aead_open(mk, _nonce(iteration), ciphertext, header)
            if pt is None:
                raise DecryptionError("message failed authentication")
            left = dict(self.skipped)
            del left[iteration]
            return replace(self, skipped=left), pt
        gap = iteration - self.iteration
        if gap > MAX_SKIP:
            raise TooManySkipped(f"gap of {gap} > {MAX_SKIP}")
        ck = self.chain_key
        skipped: Mapping[int, bytes] = self.skipped
        if gap:
            new_skipped = dict(self.skipped)
            for i in range(self.iteration, iteration):
                new_skipped[i], ck = sender_chain_step(ck)
            if len(new_skipped) > MAX_SKIPPED_KEYS:
                for old in sorted(new_skipped)[: len(new_skipped) - MAX_SKIPPED_KEYS]:
                    del new_skipped[old]
            skipped = new_skipped
        mk, nck = sender_chain_step(ck)
        pt = aead_open(mk, iteration.to_bytes(12, "big"), ciphertext, header)
        if pt is None:
            raise DecryptionError("message failed authentication")
        return _next_receiver(self, iteration + 1, nck, skipped), pt


# the chain after one message: the constructor's object, built at about half its cost
_next_sender = updater(SenderChain, "iteration", "chain_key", "signer")
_next_receiver = updater(ReceiverChain, "iteration", "chain_key", "skipped")
_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))  # one-byte varints


class ParsedFrame(NamedTuple):
    tag: bytes
    key_id: bytes
    iteration: int
    header: bytes
    ciphertext: bytes
    signed: bytes  # everything before the signature (signed after the sender installation)
    signature: bytes


_KEY_AT = 1 + TAG_LEN
_IT_AT = 1 + TAG_LEN + KEY_ID_LEN


def parse_frame(frame: bytes) -> ParsedFrame:
    """Split a group message. Raises MalformedMessage."""
    if not isinstance(frame, bytes):
        raise TypeError("frame must be bytes")
    if len(frame) < _MIN_FRAME or frame[0] != KIND_GROUP_MESSAGE:
        raise MalformedMessage("not a group message")
    first = frame[_IT_AT]
    if first < 0x80:  # one-byte varint: iterations below 128 and the common fast path
        iteration, pos = first, _IT_AT + 1
    else:
        iteration, pos = read_varint(frame, _IT_AT, limit=5)
        if iteration >= 2**32 or len(frame) - pos < _TAG_OVERHEAD + SIG_LEN:
            raise MalformedMessage("bad group message")
    signed = frame[:-SIG_LEN]
    return ParsedFrame(
        frame[1:_KEY_AT], frame[_KEY_AT:_IT_AT], iteration, frame[:pos], signed[pos:], signed,
        frame[-SIG_LEN:],
    )  # fmt: skip
