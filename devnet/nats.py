"""Start a local nats-server with JetStream (loopback only) and prepare the chat stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devnet.errors import DevnetError
from devnet.process import ManagedProcess, find_binary, free_port, spawn

DEFAULT_STREAM = "LOGOS"
HOST = "127.0.0.1"


def nats_url(port: int, host: str = HOST) -> str:
    return f"nats://{host}:{port}"


def start_nats(
    port: int | None = None,
    *,
    store_dir: Path,
    log_path: Path | None = None,
    detach: bool = False,
    ready_timeout: float = 20.0,
) -> ManagedProcess:
    """Run ``nats-server -js -a 127.0.0.1 -p PORT -sd DIR`` and wait until it accepts TCP.

    ``store_dir`` holds the JetStream file store; restarting with the same directory and port
    brings the stored messages back. The returned process is stopped with ``.stop()`` (by pid).
    """
    binary = find_binary("nats-server")
    port = port if port is not None else free_port(HOST)
    store_dir = Path(store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    argv = [binary, "-js", "-a", HOST, "-p", str(port), "-sd", str(store_dir)]
    if log_path is not None:
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
    return spawn(
        "nats-server",
        argv,
        HOST,
        port,
        log_path=log_path,
        ready_timeout=ready_timeout,
        detach=detach,
    )


async def ensure_stream_async(
    url: str,
    stream: str = DEFAULT_STREAM,
    max_age_s: float = 30 * 86400,
    duplicate_window_s: float = 600.0,
    timeout: float = 10.0,
) -> dict[str, object]:
    """Create the chat stream if missing (idempotent); returns a summary of its state."""
    from chatcore.errors import TransportError
    from chatcore.transport.nats import NatsTransport

    try:
        t = await NatsTransport.connect(
            url,
            stream=stream,
            max_age_s=max_age_s,
            duplicate_window_s=duplicate_window_s,
            connect_timeout=min(timeout, 5.0),
        )
    except TransportError as e:
        raise DevnetError(str(e)) from e
    try:
        return await t.stream_summary()
    finally:
        await t.close()


def ensure_stream(
    url: str,
    stream: str = DEFAULT_STREAM,
    max_age_s: float = 30 * 86400,
    duplicate_window_s: float = 600.0,
) -> dict[str, object]:
    """Synchronous wrapper of :func:`ensure_stream_async` (for ``devnet up``)."""
    return asyncio.run(
        ensure_stream_async(
            url, stream=stream, max_age_s=max_age_s, duplicate_window_s=duplicate_window_s
        )
    )
