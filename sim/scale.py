"""FURPS scale estimate: 10K users on one delivery shard, 100-character messages, 4 per minute.

Frame sizes are measured, not assumed: real Engines (real handshake, ratchet, payload encoding)
produce the first-contact and steady-state frames for a 100-character text, with and without
extra installations (peer devices and sync copies to one's own devices). What is *not* real
protocol yet is stated in ``assumptions`` (group frame size, receipts, NATS framing overhead,
the traffic mix) and every figure can be recomputed with other assumptions.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from chatcore.payload import ContentType
from sim.node import receipt_size
from sim.runner import World

__all__ = ["Assumptions", "estimate", "measure_frames"]


@dataclass(frozen=True, slots=True)
class Assumptions:
    users: int = 10_000
    msgs_per_min: float = 4.0
    text_chars: int = 100
    group_share: float = 0.3  # share of messages sent to groups
    group_members: int = 10  # average group size (members incl. the sender)
    devices_per_user: int = 1  # installations per user (1 or 2 measured)
    new_contacts_per_day: float = 5.0  # first-contact handshakes per user per day
    receipts: bool = True  # one delivered-receipt per message per recipient installation
    #: superseded: the group frame is now measured from the real GroupChat (kept for the JSON)
    group_extra_bytes: int = 0
    #: NATS framing per message per hop (HPUB line + Nats-Msg-Id header; MSG line with the
    #: JetStream ack subject; the PubAck JSON). Estimates from the protocol text.
    nats_publish_overhead: int = 110
    nats_deliver_overhead: int = 150
    nats_puback_bytes: int = 60


def measure_frames(devices: int) -> dict[str, int]:
    """Real frame sizes for a 100-character text between two users with ``devices`` each."""
    w = World(seed=12345)
    a = w.add_user("a", devices)
    b = w.add_user("b", devices)
    body = bytes(random.Random(1).randrange(97, 123) for _ in range(100))
    own_a = w.directory.peer(a.identity_id).installations
    own_b = w.directory.peer(b.identity_id).installations
    peer_a, peer_b = w.directory.peer(a.identity_id), w.directory.peer(b.identity_id)

    def deliver(res: Any) -> None:
        for f in res.frames:
            for d in w.devices:
                if d.inbox == f.subject:
                    assert d.engine is not None
                    d.engine.receive(f.frame)

    ea, eb = a.devices[0].engine, b.devices[0].engine
    assert ea is not None and eb is not None
    first = ea.send(peer_b, ContentType.TEXT, body, own_a)
    deliver(first)
    reply = eb.send(peer_a, ContentType.TEXT, body, own_b)
    deliver(reply)
    sizes = []
    for i in range(20):  # alternate: each direction change is a DH ratchet step
        e, p, own = (ea, peer_b, own_a) if i % 2 == 0 else (eb, peer_a, own_b)
        res = e.send(p, ContentType.TEXT, body, own)
        deliver(res)
        sizes.append(sum(len(f.frame) for f in res.frames))
    # the other devices of a and b have not answered yet: their frames stay handshakes until
    # they do; steady state is after every device pair exchanged one message
    for d in a.devices[1:] + b.devices[1:]:
        assert d.engine is not None
        peer = peer_b if d.user == "a" else peer_a
        own = own_a if d.user == "a" else own_b
        deliver(d.engine.send(peer, ContentType.TEXT, body, own))
    steady = []
    for i in range(20):
        e, p, own = (ea, peer_b, own_a) if i % 2 == 0 else (eb, peer_a, own_b)
        res = e.send(p, ContentType.TEXT, body, own)
        deliver(res)
        steady.append(sum(len(f.frame) for f in res.frames))
    single = [len(f.frame) for f in res.frames]
    # a group message from the real GroupChat: encrypted once with the sender key
    ga = a.devices[0].groups
    assert ga is not None
    gid, _ = ga.create("g", [b.identity_id])
    gframe = ga.send(gid, ContentType.TEXT, body).frames[0].frame
    return {
        "group_frame": len(gframe),
        "devices_per_user": devices,
        "frames_per_message": len(res.frames),
        "first_contact_bytes": sum(len(f.frame) for f in first.frames),
        "first_contact_frame": len(first.frames[0].frame),
        "steady_bytes_per_message": max(steady),
        "steady_frame": max(single),
    }


def estimate(a: Assumptions | None = None) -> dict[str, Any]:
    """Bytes per second through one shard, from measured frames and stated assumptions."""
    a = a or Assumptions()
    m = measure_frames(a.devices_per_user)
    rate = a.users * a.msgs_per_min / 60.0  # messages per second
    d = a.devices_per_user
    one_to_one = rate * (1 - a.group_share)
    group = rate * a.group_share
    # 1:1: every frame is published once and delivered once
    frames_1 = m["frames_per_message"]
    ingress_1 = one_to_one * m["steady_bytes_per_message"]
    egress_1 = ingress_1
    # group: one ciphertext published, delivered to every other installation of the members
    gframe = m["group_frame"]  # measured (real GroupChat.send); group_extra_bytes unused
    g_recipients = (a.group_members - 1) * d + (d - 1)
    ingress_g = group * gframe
    egress_g = group * gframe * g_recipients
    # receipts (modelled): one per message per recipient installation, each way through the store
    recips = one_to_one * frames_1 + group * g_recipients
    rsize = receipt_size(1) if a.receipts else 0
    receipts = recips * rsize * 2
    # first contacts: handshake frames are larger than session frames
    hs_extra = (m["first_contact_bytes"] - m["steady_bytes_per_message"]) * 2  # in + out
    handshakes = a.users * a.new_contacts_per_day / 86_400 * hs_extra
    payload_bps = (ingress_1 + egress_1 + ingress_g + egress_g + receipts + handshakes) * 8
    hops_pub = one_to_one * frames_1 + group + (recips if a.receipts else 0)
    hops_del = one_to_one * frames_1 + group * g_recipients + (recips if a.receipts else 0)
    nats = (
        hops_pub * (a.nats_publish_overhead + a.nats_puback_bytes)
        + hops_del * a.nats_deliver_overhead
    ) * 8
    ingress_bps = (
        ingress_1 + ingress_g + (recips * rsize if a.receipts else 0) + handshakes / 2
    ) * 8
    return {
        "assumptions": asdict(a),
        "measured_frames": m,
        "messages_per_s": round(rate, 2),
        "ingress_bps": round(ingress_bps),
        "ingress_plus_egress_bps": round(payload_bps),
        "with_nats_framing_bps": round(payload_bps + nats),
        "bytes_per_message_ingress": round(ingress_bps / 8 / rate, 1),
        "bytes_per_message_total": round((payload_bps + nats) / 8 / rate, 1),
        "budget_bytes_per_message": 1_875,
        "target_bps": 2_000_000,
        "budget_bps": 10_000_000,
        "fits_target_ingress": ingress_bps <= 2_000_000,
        "fits_budget_total": payload_bps + nats <= 10_000_000,
    }
