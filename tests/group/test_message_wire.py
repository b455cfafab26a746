"""The group message hot path, pinned to its specification: frames built by a plain
reference implementation of the wire (``chatcore/group/sender_keys.py``'s docstring, with
pyca's AES-GCM, libsodium's signer and hashlib) are the frames the core sends, byte for
byte; the fast copies of frozen states are the objects their constructors build."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore.codec import varint
from chatcore.errors import DuplicateMessage
from chatcore.group import GroupState, _primitives
from chatcore.group._frozen import updater
from chatcore.group._primitives import aead_open, aead_seal, ed25519_sign
from chatcore.group.sender_keys import ReceiverChain, SenderChain, SenderKeyDistribution
from chatcore.group.state import _with_own_chains

from . import SeededRng, World


def _reference_frame(
    chain: SenderChain, tag: bytes, plaintext: bytes, installation: bytes
) -> tuple[bytes, bytes]:
    """(frame, next chain key), written from the wire description alone."""
    out = hashlib.blake2b(
        b"\x01", key=chain.chain_key, digest_size=64, person=b"LogosChatSK1"
    ).digest()
    mk, nck = out[:32], out[32:]
    header = bytes((0x13,)) + tag + chain.key_id + varint(chain.iteration)
    body = AESGCM(mk).encrypt(chain.iteration.to_bytes(12, "big"), plaintext, header)
    signed = header + body
    return signed + ed25519_sign(chain.signing_secret, installation + signed), nck


# around every varint length change, and the first message (which builds the signer)
ITERATIONS = [0, 1, 127, 128, 129, 300, 16_383, 16_384, 2**21 - 1, 2**21, 2**32 - 2]


@pytest.mark.parametrize("iteration", ITERATIONS)
def test_sender_chain_frames_are_the_reference_frames(iteration: int) -> None:
    rng = SeededRng(iteration)
    chain = dataclasses.replace(SenderChain.generate(rng, 3, {}), iteration=iteration)
    tag, installation = rng(8), rng(32)
    for plaintext in (b"", b"x" * 200, os.urandom(1000)):
        nxt, frame = chain.encrypt(tag, plaintext, installation)
        want, nck = _reference_frame(chain, tag, plaintext, installation)
        assert frame == want
        assert nxt == dataclasses.replace(chain, iteration=iteration + 1, chain_key=nck)
        assert nxt.signer is not None and repr(nxt) == repr(chain).replace(
            f"iteration={iteration}", f"iteration={iteration + 1}"
        )
        # the old chain is untouched and sends the same frame again
        assert chain.encrypt(tag, plaintext, installation)[1] == frame
        chain = nxt
        iteration += 1


def test_group_frames_are_the_reference_frames_and_the_old_state_stays_usable() -> None:
    w = World(7)
    a, b = w.person(), w.person()
    w.create(a, [b])
    st0 = w.dev(a).state
    reader = w.dev(b).state
    assert st0 is not None and reader is not None and st0.own is not None
    before = st0.to_bytes()
    s, frames = st0, []
    for n in range(200):  # past iteration 127
        own = s.own
        assert own is not None
        nxt, frame = s.encrypt(b"m%d" % n)
        assert frame == _reference_frame(own, s.tag, b"m%d" % n, s.installation)[0]
        assert nxt == dataclasses.replace(s, own=nxt.own)
        assert repr(nxt) == repr(s)
        s = nxt
        frames.append(frame)
    assert st0.to_bytes() == before
    assert st0.encrypt(b"m0")[1] == frames[0]  # the old state stays usable
    for n, frame in enumerate(frames):
        reader, _, _, pt = reader.decrypt(frame)
        assert pt == b"m%d" % n
    before = reader.to_bytes()
    with pytest.raises(DuplicateMessage):
        reader.decrypt(frames[-1])
    assert reader.to_bytes() == before  # unchanged on error


def test_receiver_chain_after_a_message_is_what_its_constructor_builds() -> None:
    rng = SeededRng(3)
    sender = SenderChain.generate(rng, 1, {})
    d = SenderKeyDistribution(
        rng(32), rng(32), rng(32), sender.key_id, 1, 0, sender.chain_key, sender.signing_public
    )
    chain = ReceiverChain.from_distribution(d)
    assert chain.encoded()  # fills the encoding cache, which the next chain must not inherit
    frames = []
    for n in range(3):
        sender, frame = sender.encrypt(rng(8), b"p%d" % n, d.installation)
        frames.append(frame)
    header = frames[2][: 1 + 8 + 4 + 1]
    nxt, pt = chain.decrypt(2, header, frames[2][len(header) : -64])
    assert pt == b"p2"
    assert nxt == ReceiverChain(
        chain.identity, chain.installation, chain.key_id, chain.epoch, chain.signing_public,
        chain.base, 3, sender.chain_key, nxt.skipped,
    )  # fmt: skip
    assert sorted(nxt.skipped) == [0, 1]
    assert nxt._encoded is None and nxt.encoded() != chain.encoded()


def test_updater_is_replace() -> None:
    w = World(5)
    a, b = w.person(), w.person()
    w.create(a, [b])
    s = w.dev(a).state
    assert s is not None and s.own is not None
    new_own = dataclasses.replace(s.own, iteration=9)
    chains = dict(s.chains)
    got = _with_own_chains(s, new_own, chains)
    want = dataclasses.replace(s, own=new_own, chains=chains)
    assert type(got) is GroupState and got == want and repr(got) == repr(want)
    for f in dataclasses.fields(GroupState):
        assert getattr(got, f.name) is getattr(want, f.name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.own = None  # type: ignore[misc]
    assert hash(updater(SenderChain, "iteration")(new_own, 4)) == hash(
        dataclasses.replace(new_own, iteration=4)
    )


def test_updater_refuses_what_it_cannot_copy_as_the_constructor_would() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        x: int

    @dataclasses.dataclass(slots=True)
    class Mutable:
        x: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        x: int
        y: list[int] = dataclasses.field(default_factory=list, init=False)

    for cls in (Checked, NoSlots, Mutable, Factory, int):
        with pytest.raises(TypeError):
            updater(cls, "x")
    with pytest.raises(ValueError):
        updater(SenderChain, "nope")
    with pytest.raises(ValueError):
        updater(SenderChain, "iteration", "iteration")
    with pytest.raises(ValueError):
        updater(ReceiverChain, "_encoded")  # not a constructor argument


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=12, max_size=12),
    st.binary(max_size=600),
    st.binary(max_size=40),
)
def test_aes_gcm_is_pycas_byte_for_byte(key: bytes, nonce: bytes, pt: bytes, aad: bytes) -> None:
    ct = aead_seal(key, nonce, pt, aad)
    assert ct == AESGCM(key).encrypt(nonce, pt, aad)
    assert aead_open(key, nonce, ct, aad) == pt
    assert _primitives._pyca_seal(key, nonce, pt, aad) == ct
    assert _primitives._pyca_open(key, nonce, ct, aad) == pt
    for bad in (ct[:-1] + bytes((ct[-1] ^ 1,)), ct[1:], ct[:15], b""):
        assert aead_open(key, nonce, bad, aad) is None
        assert _primitives._pyca_open(key, nonce, bad, aad) is None
    assert aead_open(key, nonce, ct, aad + b"!") is None


def test_aes_gcm_refuses_wrong_key_and_nonce_lengths() -> None:
    for seal, open_ in (
        (aead_seal, aead_open),
        (_primitives._pyca_seal, _primitives._pyca_open),
    ):
        for key, nonce in ((bytes(16), bytes(12)), (bytes(32), bytes(8)), (bytes(33), bytes(12))):
            with pytest.raises(ValueError):
                seal(key, nonce, b"m", b"")
            with pytest.raises(ValueError):
                open_(key, nonce, bytes(32), b"")


_STUBBED_SODIUM = """
import sys, types
import nacl.bindings
import nacl._sodium as real
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

class Lib:  # PyNaCl's CFFI library as another PyNaCl may declare it
    def __getattr__(self, name):
        if name == "crypto_aead_aes256gcm_encrypt" and "{case}" == "missing":
            raise AttributeError(name)
        if name == "crypto_aead_aes256gcm_encrypt" and "{case}" == "failing":
            return lambda *args: -1
        return getattr(real.lib, name)

stub = types.ModuleType("nacl._sodium")
stub.ffi, stub.lib = real.ffi, Lib()
sys.modules["nacl._sodium"] = stub
from chatcore.group import _primitives as p
key, nonce = bytes(range(32)), bytes(12)
assert p.aead_seal(key, nonce, b"m", b"h") == AESGCM(key).encrypt(nonce, b"m", b"h")
print(p.SODIUM_GCM)
"""


@pytest.mark.parametrize("case", ["missing", "failing"])
def test_a_pynacl_whose_aes_gcm_is_missing_or_fails_leaves_it_to_pyca(case: str) -> None:
    """``nacl._sodium`` is PyNaCl's private module: a PyNaCl other than the pinned one
    without libsodium's AES-256-GCM in it failed the import of the group core (an
    AttributeError), and one whose call fails sealed every message as zeros."""
    import subprocess
    import sys

    if not _primitives.SODIUM_GCM:
        pytest.skip("no AES instructions: pyca does AES-GCM here anyway")
    done = subprocess.run(
        [sys.executable, "-c", _STUBBED_SODIUM.replace("{case}", case)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]
