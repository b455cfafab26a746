"""A ``tls://`` URL means TLS or nothing: nats-py upgrades only when the server asks for TLS,
so a server (or anyone in between) that does not ask must not get the connection in plain
text. A real TLS server (self-signed certificate, trusted through SSL_CERT_FILE) still works."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from chatcore.errors import TransportError
from chatcore.transport import inbox_subject
from chatcore.transport.nats import NatsTransport
from devnet.nats import HOST
from devnet.process import ManagedProcess, find_binary, free_port, spawn
from tests.fixtures.certs import self_signed
from tests.fixtures.nats import NatsServer, Wiretap

pytestmark = pytest.mark.devnet

A = inbox_subject(b"\x01" * 16)


async def test_a_tls_url_refuses_a_server_that_does_not_ask_for_tls(
    nats_server: NatsServer, wiretap: Wiretap
) -> None:
    url = nats_server.url.replace("nats://", "tls://")
    # refused (not "unreachable": trying again later does not help), and at once: the
    # connection gives up on the refusal, not when its (long) timeout runs out
    with pytest.raises(TransportError, match=r"^refused the delivery network: .*did not ask") as ei:
        await NatsTransport.connect(url, connect_timeout=60.0)
    assert not isinstance(ei.value.__cause__, TimeoutError)
    await wiretap.settle()
    # nothing crossed the server in plain text: no stream set-up, no publish
    assert wiretap.subjects() == set()


@pytest.mark.parametrize("order", ["tls-first", "plain-first"])
async def test_a_url_mixing_tls_and_plain_servers_is_refused(
    nats_server: NatsServer, wiretap: Wiretap, order: str
) -> None:
    """Several servers in one URL: nats-py went on to the plain one when the tls:// one did
    not answer (anyone able to block it downgraded the connection), and took the servers its
    INFO names as plain ones too."""
    dead = f"tls://{HOST}:{free_port(HOST)}"
    urls = [dead, nats_server.url] if order == "tls-first" else [nats_server.url, dead]
    with pytest.raises(TransportError, match="tls://"):
        await NatsTransport.connect(",".join(urls), connect_timeout=2.0)
    await wiretap.settle()
    assert wiretap.subjects() == set()


@pytest.mark.parametrize("scheme", ["TLS", "Tls"])
async def test_a_tls_url_in_capitals_is_tls_too(
    nats_server: NatsServer, wiretap: Wiretap, scheme: str
) -> None:
    url = nats_server.url.replace("nats://", f"{scheme}://")
    with pytest.raises(TransportError, match="did not ask for TLS"):
        await NatsTransport.connect(url, connect_timeout=2.0)
    await wiretap.settle()
    assert wiretap.subjects() == set()


async def test_a_tls_url_works_with_a_tls_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path, HOST)
    port = free_port(HOST)
    argv = [find_binary("nats-server"), "-js", "-a", HOST, "-p", str(port)]
    argv += ["-sd", str(tmp_path / "store"), "--tls", "--tlscert", str(cert), "--tlskey", str(key)]
    proc: ManagedProcess = spawn("nats-server", argv, HOST, port, log_path=tmp_path / "log")
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        t = await NatsTransport.connect(f"tls://{HOST}:{port}", connect_timeout=3.0)
        try:
            await t.publish(A, b"over tls")
            got = await t.fetch(A, 0)
            assert [d.data for d in got] == [b"over tls"]
        finally:
            await t.close()
    finally:
        proc.stop()


async def test_a_reconnect_never_falls_back_to_plain_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TLS server goes away and a plain one takes its port: the client keeps trying but
    sends it nothing (no consumer set-up, no publish)."""
    cert, key = self_signed(tmp_path, HOST)
    port = free_port(HOST)
    argv = [find_binary("nats-server"), "-js", "-a", HOST, "-p", str(port)]
    argv += ["-sd", str(tmp_path / "store")]
    tls_args = ["--tls", "--tlscert", str(cert), "--tlskey", str(key)]
    proc = spawn("nats-server", argv + tls_args, HOST, port, log_path=tmp_path / "log")
    plain: ManagedProcess | None = None
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    t = await NatsTransport.connect(f"tls://{HOST}:{port}", connect_timeout=3.0, heartbeat_s=0.3)
    try:
        sub = await t.subscribe([A])
        proc.stop()
        plain = spawn("nats-server", argv, HOST, port, log_path=tmp_path / "log2")
        tap = await Wiretap(f"nats://{HOST}:{port}").start()
        try:
            await asyncio.sleep(2.0)  # ~10 reconnect attempts and consumer resets
            with contextlib.suppress(TransportError, TimeoutError):
                await asyncio.wait_for(t.publish(A, b"secret"), 1.0)
            await tap.settle()
            assert tap.subjects() == set()
        finally:
            await tap.close()
        await sub.close()
    finally:
        await t.close()
        proc.stop()
        if plain is not None:
            plain.stop()
