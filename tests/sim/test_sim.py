"""The deterministic simulator: determinism, each fault with zero violations, a broken client
caught, and the CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli.sim import sim
from sim.runner import SimConfig, run
from sim.scenarios import SCENARIOS, available, default_sweep

ONE_TO_ONE_FAMILY = [n for n in default_sweep() if not n.startswith("group")]


def test_same_seed_same_digest_different_seed_different() -> None:
    a, b = run("one-to-one", 7), run("one-to-one", 7)
    assert a.digest == b.digest and a.as_dict() | {"wall_s": 0} == b.as_dict() | {"wall_s": 0}
    assert run("one-to-one", 8).digest != a.digest


def test_multi_device_deterministic() -> None:
    assert run("multi-device", 3).digest == run("multi-device", 3).digest


@pytest.mark.parametrize("name", ONE_TO_ONE_FAMILY)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scenarios_have_no_violations(name: str, seed: int) -> None:
    scale = 0.5 if name in ("many-pairs", "offline-days") else 1.0
    r = run(name, seed, scale)
    assert r.violations == [], (name, seed, r.violations[:5])
    assert r.delivery_rate == 1.0 and r.messages > 0
    assert len(r.digest) == 64 and r.bytes_on_wire > 0


def test_faults_are_exercised() -> None:
    """Across a few seeds every fault type actually happened."""
    seen: dict[str, int] = {}
    for name in ("one-to-one", "crash-restart", "store-restart", "partition", "offline-days"):
        for seed in (0, 1):
            r = run(name, seed, 0.5)
            for k, v in r.stats.items():
                seen[k] = seen.get(k, 0) + v
    for k in (
        "dropped",
        "duplicated",
        "tampered",
        "push_gaps",
        "outbox_retries",
        "retransmits",
        "ratchet_duplicates",
        "rejected:UntrustedIdentity",
        "publish_refused",
    ):
        assert seen.get(k, 0) > 0, k


def test_broken_client_is_caught() -> None:
    """A client that publishes once and never retries loses messages: the checker says so."""
    broken = SimConfig(retry_outbox=False, e2e_retry=False)
    bad = [s for s in range(6) if not run("one-to-one", s, cfg=broken).ok]
    assert bad, "the invariant checker never failed a broken client"
    r = run("one-to-one", bad[0], cfg=broken)
    assert r.delivery_rate < 1.0 and any(v.startswith("lost:") for v in r.violations)
    # the failure replays exactly from its seed
    assert run("one-to-one", bad[0], cfg=broken).digest == r.digest


def test_receipts_are_what_repairs_tampering() -> None:
    """Without end-to-end retransmission a frame tampered on the delivery path is lost
    (the client skips it, the cursor moves on); with it, it is repaired."""
    lost = 0
    for s in range(12):
        r = run("one-to-one", s, cfg=SimConfig(e2e_retry=False))
        if r.stats.get("tampered") and not r.ok:
            lost += 1
        assert run("one-to-one", s).ok
    assert lost > 0


def test_group_scenarios_are_listed() -> None:
    assert SCENARIOS["groups"].build is not None and "groups" in default_sweep()
    # in the default sweep since its first sweep's five findings were fixed (reliability.md)
    assert "group-adversary" in default_sweep()
    assert SCENARIOS["group-201"].build is not None and "group-201" not in default_sweep()
    assert "group-201" in available()


def test_cli_run_json() -> None:
    res = CliRunner().invoke(sim, ["run", "--scenario", "one-to-one", "--seed", "3", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    for k in ("scenario", "seed", "delivery_rate", "violations", "bytes_on_wire", "digest"):
        assert k in doc
    assert set(doc["latency_ms"]) >= {"p50", "p90", "p99"}
    assert doc["digest"] == run("one-to-one", 3).digest


def test_cli_sweep_scenarios_and_errors() -> None:
    r = CliRunner()
    res = r.invoke(
        sim, ["sweep", "--scenario", "store-restart", "--seeds", "2", "--json", "--workers", "1"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["runs"] == 2 and doc["violations"] == 0 and doc["failed_seeds"] == []
    assert doc["scenarios"]["store-restart"]["runs"] == 2
    res = r.invoke(sim, ["scenarios", "--json"])
    assert {s["name"] for s in json.loads(res.output)["scenarios"]} == set(SCENARIOS)
    assert r.invoke(sim, ["run", "--scenario", "nope", "--seed", "1"]).exit_code == 2


def test_cli_scale() -> None:
    """Measured traffic: real clients, every message delivered, every sent message acked by
    receipts or piggybacked acks (no retransmission on a lossless shard), sizes plausible."""
    res = CliRunner().invoke(sim, ["scale", "--users", "30", "--minutes", "1", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["messages"] > 60 and doc["delivery_rate"] == 1.0 and doc["errors"] == {}
    kinds = doc["by_kind"]
    assert "retransmit" not in kinds  # receipts / piggybacked acks arrived in time
    assert 150 < kinds["message"]["mean_frame_bytes"] < 300
    assert 0 < kinds["receipt"]["frames_per_message"] < 5
    in_ = doc["ingress_bytes_per_message"]
    assert doc["ingress_mbps"] == pytest.approx(in_ * 666.7 * 8 / 1e6, rel=0.01)
    bad = CliRunner().invoke(sim, ["scale", "--group-size", "1"])
    assert bad.exit_code == 2
    # a population beyond what one process can simulate is refused at once (it ran until
    # killed), as is a window of more than a day
    for args in (["--users", "100000000"], ["--minutes", "100000"]):
        bad = CliRunner().invoke(sim, ["scale", *args])
        assert bad.exit_code == 2 and "users" in bad.output, bad.output


def test_piggybacked_acks_save_receipt_frames() -> None:
    """The same traffic with replies (acks ride on them) needs fewer receipt frames than
    without: piggybacking is measurable, not assumed."""
    from sim.traffic import TrafficModel, measure

    base = {"users": 20, "minutes": 1.0, "group_share": 0.0, "read_on_arrival": False}
    chatty = measure(TrafficModel(**base, reply_share=1.0))  # type: ignore[arg-type]
    broadcast = measure(TrafficModel(**base, reply_share=0.0))  # type: ignore[arg-type]
    assert chatty["delivery_rate"] == broadcast["delivery_rate"] == 1.0
    assert (
        chatty["by_kind"]["receipt"]["frames_per_message"]
        < broadcast["by_kind"]["receipt"]["frames_per_message"]
    )


def test_group_receipts_are_delivered_once_not_to_every_member() -> None:
    """Group receipts go pairwise to the author: each receipt frame is delivered once (the
    topic would deliver it to every member: O(members²) per window)."""
    from sim.traffic import TrafficModel, measure

    m = measure(TrafficModel(users=20, minutes=1.0, group_share=1.0, group_size=10))
    r = m["by_kind"]["receipt"]
    assert m["delivery_rate"] == 1.0 and r["frames_per_message"] > 0
    assert r["egress_bytes_per_message"] == pytest.approx(r["ingress_bytes_per_message"])
    msg = m["by_kind"]["message"]
    assert msg["egress_bytes_per_message"] > 5 * msg["ingress_bytes_per_message"]  # the topic


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotation_and_recovery_keep_every_invariant(seed: int) -> None:
    """Prekeys rotate, installations are replaced (revoked once what they sent is acked),
    a user loses every device and recovers on a new one: whatever is still required
    (everything not addressed to, or lost with, a revoked device) arrives exactly once."""
    rot, rec = run("rotation", seed), run("recovery", seed)
    for r in (rot, rec):
        assert r.violations == [], (r.scenario, seed, r.violations[:5])
        assert r.delivery_rate == 1.0 and r.messages > 0
        assert r.stats["linked"] >= 1 and r.stats["revoked"] >= 1
    assert rot.stats["prekeys_rotated"] >= 1


def test_rotated_prekey_without_its_secret_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rotation scenario really makes handshakes to the rotated prekeys: a device that
    publishes its new bundle without keeping the secret refuses intact handshakes (and
    end-to-end retransmission still gets those messages through)."""
    from chatcore.keys import SignedPrekey
    from sim import node
    from sim.node import SPK_NOT_AFTER

    def unknown_prekey(r: object) -> bool:
        return any("unknown signed prekey id" in n for n in getattr(r, "notes", []))

    seeds = range(4)
    assert not any(unknown_prekey(run("rotation", s)) for s in seeds)

    def forgetful(self: node.Device) -> None:
        if self.revoked:
            return
        w = self.world
        self.spk = SignedPrekey.generate(w.key_rng, self.spk.id + 1, SPK_NOT_AFTER)
        self.peer_keys = self.keys.peer_keys(self.spk)  # the secret is not stored
        w.directory.update(self.identity_id, self.peer_keys)

    monkeypatch.setattr(node.Device, "rotate_prekey", forgetful)
    broken = [run("rotation", s) for s in seeds]
    assert any(unknown_prekey(r) for r in broken)
    assert all(r.ok and r.delivery_rate == 1.0 for r in broken)


def test_fault_scenarios_run_the_real_receipts() -> None:
    """1:1 acknowledgements in the fault scenarios are Features' receipt frames (and acks
    riding on messages), not a simulator message; retransmissions are re-encrypted."""
    r = run("multi-device", 2)
    assert r.ok and r.stats["receipts_received"] > 0 and r.stats["retransmits"] > 0
    silent = run("multi-device", 2, cfg=SimConfig(send_receipts=False, drain_ms=600_000))
    assert silent.stats.get("receipts_received", 0) == 0
    assert silent.stats["retransmits"] > r.stats["retransmits"]
