"""Bytes on the wire for a 1:1 text message in steady state, through the real Engine.

    .venv/bin/python -m bench.chat_wire [--json] [--n N]

Two engines (in-memory stores, a loopback directory) talk for N messages both ways (default
300, so the Lamport clock needs two varint bytes as in a long conversation); then alice sends a
200-byte text. The figure is the frame length minus 200: everything the network carries beyond
the text (session framing, ratchet header, AEAD tag, and the encrypted payload header with the
reliability fields: message id, Lamport clock, sent-at, causal history). Target <= 80 B.

The breakdown decrypts the measured frame with a copy of bob's session state to see the payload.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from chatcore import session as sess
from chatcore.engine import Engine, OwnIdentity, Peer
from chatcore.errors import UntrustedIdentity
from chatcore.keys import InstallationKeys, PeerKeys, SignedPrekey
from chatcore.payload import SENT_AT_EPOCH_MS, ContentType, Payload, encode_varint
from chatcore.store import Store

from ._util import Row, parse_args, report

TEXT_LEN = 200
TARGET_OVERHEAD = 80


@dataclass
class _Dir:
    peers: dict[bytes, list[PeerKeys]] = field(default_factory=dict)

    def peer(self, identity_id: bytes) -> Peer:
        return Peer(identity_id, None, tuple(self.peers[identity_id]))

    def check_installation(self, identity_id: bytes, inst: bytes, ik: bytes) -> None:
        if not any(
            p.installation_id == inst and p.ik_x25519 == ik for p in self.peers.get(identity_id, [])
        ):
            raise UntrustedIdentity("unknown")


def _device(d: _Dir, identity: bytes) -> Engine:
    keys = InstallationKeys.generate(os.urandom)
    spk = SignedPrekey.generate(os.urandom, 1, 2**62)
    store = Store.memory()
    store.put_secret("spk:0000000001", spk.to_bytes())
    d.peers.setdefault(identity, []).append(keys.peer_keys(spk))
    return Engine(
        store, OwnIdentity(identity, keys), d, os.urandom, lambda: int(time.time() * 1000)
    )


def measure(n: int) -> dict[str, object]:
    d = _Dir()
    alice_id, bob_id = os.urandom(32), os.urandom(32)
    a, b = _device(d, alice_id), _device(d, bob_id)
    text = os.urandom(TEXT_LEN // 2).hex().encode()
    assert len(text) == TEXT_LEN

    def send(e: Engine, peer: bytes) -> bytes:
        res = e.send(d.peer(peer), ContentType.TEXT, text, ())
        for f in res.frames:
            e.acknowledged(f.outbox_id)
        (f,) = res.frames
        return f.frame

    first = send(a, bob_id)
    b.receive(first)
    for i in range(n):
        # both directions, in runs of 1-3 messages, as a conversation goes
        e, o, peer = (b, a, alice_id) if i % 2 == 0 else (a, b, bob_id)
        for _ in range(1 + i % 3):
            o.receive(send(e, peer))
    frame = send(a, bob_id)
    # look inside with a copy of bob's session (bob's real state is not touched)
    kind, tag = sess.parse_frame(frame)
    row = b.store.session_by_tag(tag) if tag else None
    assert row is not None
    plaintext = sess.Session.from_bytes(row[2]).decrypt(frame)
    p = Payload.decode(plaintext)
    assert p.body == text
    r = b.receive(frame)
    assert r is not None and r.body == text

    overhead = len(frame) - TEXT_LEN
    session_part = len(frame) - len(plaintext)
    payload_header = len(plaintext) - TEXT_LEN
    # the session frame: hdr(1) | tag(8) | dh(32) | pn varint | n varint | ct | AEAD tag(16)
    ratchet_counters = session_part - 1 - 8 - 32 - 16
    payload_fields = {
        "content type + flags": 1,
        "message id (derived, not sent)": 0,
        "lamport (varint)": len(encode_varint(p.lamport)),
        "sent-at s since 2025 (varint)": len(
            encode_varint((p.sent_at_ms - SENT_AT_EPOCH_MS) // 1000)
        ),
        "causal history (count + ids)": 1 + 4 * len(p.history),
    }
    assert sum(payload_fields.values()) == payload_header
    return {
        "text_bytes": TEXT_LEN,
        "frame_bytes": len(frame),
        "overhead_bytes": overhead,
        "frame_kind": kind,
        "handshake_frame_bytes": len(first),
        "session_frame_overhead": {
            "header + routing tag": 1 + 8,
            "ratchet DH key": 32,
            "ratchet counters pn/n (varint)": ratchet_counters,
            "AEAD tag": 16,
            "total": session_part,
        },
        "payload_header": {**payload_fields, "total": payload_header},
        "lamport": p.lamport,
        "history_ids": len(p.history),
        "messages_before": n,
    }


def main() -> None:
    args = parse_args(__doc__ or "")
    m = measure(args.n or 300)
    ov = int(m["overhead_bytes"])  # type: ignore[call-overload]
    sf: dict[str, int] = m["session_frame_overhead"]  # type: ignore[assignment]
    ph: dict[str, int] = m["payload_header"]  # type: ignore[assignment]
    frame_len, hs_len = int(m["frame_bytes"]), int(m["handshake_frame_bytes"])  # type: ignore[call-overload]
    info = "informational"
    rows = [
        Row(
            "overhead, 200 B text (steady state)",
            ov,
            "B",
            f"<= {TARGET_OVERHEAD} B",
            ov <= TARGET_OVERHEAD,
        ),
        Row("  session frame overhead", sf["total"], "B", info, None),
        Row("  payload header (reliability fields)", ph["total"], "B", info, None),
        Row("frame, 200 B text", frame_len, "B", info, None),
        Row("first (handshake) frame, 200 B text", hs_len, "B", info, None),
    ]
    report("1:1 chat bytes on the wire", rows, args.json, extra=m if args.json else None)
    if not args.json:
        print("  session frame:  " + ", ".join(f"{k} {v}" for k, v in sf.items() if k != "total"))
        print("  payload header: " + ", ".join(f"{k} {v}" for k, v in ph.items() if k != "total"))


if __name__ == "__main__":
    main()
