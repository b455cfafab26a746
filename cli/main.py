"""``logos-chat``: the command-line interface. A thin layer over ``chatcore.Client``.

Every command takes ``--json`` (one JSON document on stdout). Errors print one line to
stderr and exit non-zero, never a traceback (``-v`` adds the traceback for debugging).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar, overload

import click

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_NOT_FOUND = 3
EXIT_INVALID = 4
EXIT_UNAVAILABLE = 5
EXIT_AUTH = 6
EXIT_INTERNAL = 70


@dataclass
class Ctx:
    home: Path
    network_file: Path | None
    json: bool
    verbose: int

    def network(self) -> Any:
        from discovery.network import NetworkConfig, default_network_file

        return NetworkConfig.load(self.network_file or default_network_file())


def default_home() -> Path:
    env = os.environ.get("LOGOS_CHAT_HOME")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("logos-chat", appauthor=False)) / "home"


@overload
def hx(b: bytes) -> str: ...
@overload
def hx(b: None) -> None: ...
def hx(b: bytes | None) -> str | None:
    return None if b is None else "0x" + b.hex()


# Text from peers (messages, names, group titles) reaches the terminal: control characters
# (ESC sequences can set the window title, clear the screen, hide text; CR rewrites a line)
# and the bidi overrides that reorder what is shown are printed as visible escapes instead.
_UNSAFE = {
    c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
    for c in (
        *range(0x20), 0x7F, *range(0x80, 0xA0),
        *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029,
    )
    if chr(c) not in "\n\t"
}  # fmt: skip


def terminal_safe(text: str) -> str:
    """``text`` with every control character but newline and tab shown as an escape."""
    return text.translate(_UNSAFE)


def one_line(text: str) -> str:
    """A peer's short text (a group's name) on one line: newlines and tabs as escapes too,
    so that it cannot pass for a line of its own."""
    return terminal_safe(text).replace("\n", "\\n").replace("\t", "\\t")


def one_entry(text: str, indent: str = "    ") -> str:
    """A peer's multi-line text as one entry: later lines indented, so that no line of it
    can pass for a line of its own (another sender's message, say)."""
    return terminal_safe(text).replace("\n", "\n" + indent)


def emit(ctx: Ctx, doc: Any, text: str | Callable[[], str]) -> None:
    if ctx.json:  # JSON escapes every control character itself
        click.echo(json.dumps(doc, indent=2, sort_keys=False, default=str))
    else:
        click.echo(terminal_safe(text() if callable(text) else text))


# Why this command answers from what the home holds (e.g. our identity is not on this chain):
# shown after its output, or, if it fails, in its one error line.
_notes: list[str] = []


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    if _notes:
        message += f" ({'; '.join(_notes)})"
        _notes.clear()
    click.echo(f"error: {terminal_safe(message)}", err=True)
    sys.exit(code)


def _exit_code(exc: BaseException) -> int:
    from chatcore.errors import (
        AmbiguousName,
        NotInitialised,
        TransportError,
        UnknownContact,
        UnknownMessage,
        UntrustedIdentity,
        WrongPassphrase,
    )
    from devnet.errors import DevnetNotRunning
    from discovery.errors import ChainUnavailable, InvalidRecord, RecordNotFound
    from discovery.network import NetworkFileError

    if isinstance(exc, ValueError):  # typed and bad input too (NotAMessageId, NotAPeer)
        return EXIT_ERROR
    if isinstance(exc, AmbiguousName):  # found more than one: the input needs an id
        return EXIT_ERROR
    if isinstance(exc, WrongPassphrase):
        return EXIT_AUTH
    if isinstance(exc, RecordNotFound | UnknownContact | UnknownMessage | NotInitialised):
        return EXIT_NOT_FOUND
    if isinstance(exc, InvalidRecord | UntrustedIdentity):
        return EXIT_INVALID
    if isinstance(exc, ChainUnavailable | TransportError | DevnetNotRunning | NetworkFileError):
        return EXIT_UNAVAILABLE
    return EXIT_ERROR


def _error_line(exc: BaseException) -> str:
    from chatcore.errors import DeliveryPending
    from discovery.errors import RegistryReverted

    line = str(exc) or type(exc).__name__
    if isinstance(exc, RegistryReverted) and exc.reason == "NotAuthorized":
        # the owner key this home holds is not the owner's any more: usually another of our
        # devices ran 'keys rotate --owner' and the new key waits in this device's inbox
        line += (
            " (the key this device signed with is not your identity's owner on chain; if the"
            " owner key was rotated on another device, run 'sync' here to receive it)"
        )
    if isinstance(exc, DeliveryPending):
        mid = getattr(exc.result, "message_id", None)
        saved = f"message {hx(mid)} is saved" if mid else "it is saved"
        line = f"not sent yet, {saved} and goes out with your next send or sync: {line}"
    return line


def _refuse_blank_arguments(cctx: click.Context) -> None:
    """An empty or blank argument (a name, an id, a FILE) is bad input, the same for every
    command (exit 1): it was "not found" for some (exit 3), "not a valid name" for others,
    and 'group list ""' listed every group."""
    for param in cctx.command.params:
        if not isinstance(param, click.Argument) or param.name is None:
            continue
        if cctx.get_parameter_source(param.name) != click.core.ParameterSource.COMMANDLINE:
            continue
        value = cctx.params.get(param.name)
        if isinstance(value, str) and not value.strip():
            what = "is empty"
        elif isinstance(value, Path) and str(value) == ".":  # "" became ".": no file either
            what = "names no file"
        else:
            continue
        fail(f"{param.human_readable_name} {what} (see '{cctx.command_path} --help')", EXIT_ERROR)


def guarded(fn: F) -> F:
    """Map every error to one line on stderr and an exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from chatcore.errors import ChatCoreError
        from devnet.errors import DevnetError
        from discovery.errors import DiscoveryError

        cctx = click.get_current_context()
        verbose = bool(cctx.find_root().params.get("verbose"))
        _refuse_blank_arguments(cctx)
        _notes.clear()
        try:
            result = fn(*args, **kwargs)
            for note in _notes:
                click.echo(f"warning: {terminal_safe(note)}; shown: what this home holds", err=True)
            _notes.clear()
            return result
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except (ChatCoreError, DiscoveryError, DevnetError) as exc:
            if verbose:
                traceback.print_exc()
            fail(_error_line(exc), _exit_code(exc))
        except ValueError as exc:
            if verbose:
                traceback.print_exc()
            fail(str(exc), EXIT_ERROR)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except BrokenPipeError:  # e.g. '| head' closed our output: stop quietly, as cat does
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")
            sys.exit(141)
        except Exception as exc:
            if verbose:
                traceback.print_exc()
            fail(f"internal error: {type(exc).__name__}: {exc} (rerun with -v)", EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


def passphrase(confirm: bool = False) -> str:
    """This home's passphrase (``confirm``: a new one, asked twice; it may not be empty)."""
    value = os.environ.get("LOGOS_CHAT_PASSPHRASE")
    if value is None:
        if not sys.stdin.isatty():
            fail("no passphrase: set LOGOS_CHAT_PASSPHRASE or run in a terminal", EXIT_AUTH)
        value = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm, err=True)
    if confirm and not value.strip():
        fail("the passphrase may not be empty: it encrypts this home's keys and history")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Home directory of this identity (env LOGOS_CHAT_HOME).",
)
@click.option(
    "--network",
    "network_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Network file (default: the running devnet's network.json).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("-v", "--verbose", count=True, help="More logging; tracebacks on errors.")
@click.version_option(package_name="logos-chat")
@click.pass_context
def cli(
    ctx: click.Context, home: Path | None, network_file: Path | None, as_json: bool, verbose: int
) -> None:
    """Logos Chat: end-to-end-encrypted chat; people find each other on chain."""
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = Ctx(home or default_home(), network_file, as_json, verbose)


def _with_json(fn: F) -> F:
    """Accept --json after the subcommand too (``logos-chat lookup bob --json``)."""

    @click.option("--json", "sub_json", is_flag=True, help="Print one JSON document.")
    @wraps(fn)
    def wrapper(*args: Any, sub_json: bool = False, **kwargs: Any) -> Any:
        if sub_json:
            click.get_current_context().find_object(Ctx).json = True  # type: ignore[union-attr]
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# devnet
# ----------------------------------------------------------------------------------------------
@cli.group()
def devnet() -> None:
    """Local chain (anvil) + delivery network (nats-server) on loopback."""


_dir_opt = click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Devnet directory (default: per-user data dir; env LOGOS_CHAT_DEVNET_DIR).",
)


@devnet.command("up")
@_dir_opt
@_with_json
@click.pass_obj
@guarded
def devnet_up(ctx: Ctx, directory: Path | None) -> None:
    """Start anvil and nats-server, deploy the registries, write network.json."""
    from devnet.manager import Devnet

    d = Devnet(directory)
    cfg, already = d.up()
    doc = {
        "already_running": already,
        "network_file": str(d.network_file),
        "chain_id": cfg.chain_id,
        "rpc_url": cfg.rpc_url,
        "nats_url": cfg.nats_url,
        "identity_registry": cfg.identity_registry,
        "name_registry": cfg.name_registry,
    }
    head = "devnet already up" if already else "devnet up"
    emit(
        ctx,
        doc,
        f"{head}: chain {cfg.chain_id} at {cfg.rpc_url}, NATS at {cfg.nats_url}\n"
        f"  identity registry {cfg.identity_registry}\n  name registry     {cfg.name_registry}\n"
        f"  network file      {d.network_file}",
    )


@devnet.command("down")
@_dir_opt
@_with_json
@click.pass_obj
@guarded
def devnet_down(ctx: Ctx, directory: Path | None) -> None:
    """Stop the devnet's servers (chain state is kept for the next 'up')."""
    from devnet.manager import Devnet

    d = Devnet(directory)
    stopped = d.down()
    emit(
        ctx,
        {"stopped": stopped, "directory": str(d.dir)},
        "devnet stopped" if stopped else "devnet was not running",
    )


@devnet.command("status")
@_dir_opt
@_with_json
@click.pass_obj
@guarded
def devnet_status(ctx: Ctx, directory: Path | None) -> None:
    """Is the devnet running? (exit 0 either way)"""
    from devnet.manager import Devnet

    st = Devnet(directory).status()
    if st.running:
        text = (
            f"devnet running: chain at {st.rpc_url} (block {st.block_number}), "
            f"NATS at {st.nats_url}\n  network file {st.network_file}"
        )
    elif st.anvil_pid or st.nats_pid:
        up, down = ("anvil", st.anvil_pid), "nats-server"
        if not st.anvil_pid:
            up, down = ("nats-server", st.nats_pid), "anvil"
        text = (
            f"devnet not running ({st.directory}): {down} stopped, {up[0]} (pid {up[1]}) "
            "still runs; 'logos-chat devnet up' starts both again, 'devnet down' stops it"
        )
    else:
        text = f"devnet not running ({st.directory})"
    emit(ctx, st.as_dict(), text)


# ----------------------------------------------------------------------------------------------
# identity and discovery
# ----------------------------------------------------------------------------------------------
@cli.command()
@click.option("--name", default=None, help="Claim this name (3-32 of a-z 0-9 - _).")
@click.option(
    "--prekey-ttl",
    type=click.IntRange(min=1),
    default=None,
    help="Prekey lifetime, seconds (at most a year).",
)
@_with_json
@click.pass_obj
@guarded
def init(ctx: Ctx, name: str | None, prekey_ttl: int | None) -> None:
    """Create an identity: owner key, recovery phrase, first device; register it on chain."""
    from chatcore.client import PREKEY_TTL_S, Client
    from chatcore.errors import InitIncomplete, InitInterrupted

    network = ctx.network()
    # (a home an init died in before registering starts over; one it died in after it
    # sent the registration is finished)
    pw = passphrase(confirm=True)
    try:
        client, res = Client.init(
            ctx.home, pw, network, name, prekey_ttl_s=prekey_ttl or PREKEY_TTL_S
        )
    except (InitIncomplete, InitInterrupted) as exc:
        if exc.step == "register":
            # sent, not confirmed: the home keeps the keys and the phrase; init run again
            # finishes the identity and shows the phrase then
            if isinstance(exc, InitInterrupted):
                fail(
                    "interrupted before the chain confirmed the registration: run "
                    f"'logos-chat --home {ctx.home} init' again to finish it",
                    130,
                )
            fail(_error_line(exc), _exit_code(exc.__cause__ or exc))
        # registered on chain: the recovery phrase exists nowhere else, so it is shown
        # before the one error line says what is left to do
        _show_init(ctx, exc.result)
        todo = (
            f"claim it with 'logos-chat --home {ctx.home} bind name NAME'"
            if exc.step == "name"
            else f"finish with 'logos-chat --home {ctx.home} publish'"
            + (" and claim the name with 'bind name NAME'" if name else "")
        )
        if isinstance(exc, InitInterrupted):
            fail(f"interrupted after the identity was registered: {todo}", 130)
        cause = exc.__cause__ or exc
        fail(f"{_error_line(cause)}; the identity is registered: {todo}", _exit_code(cause))
    client.close()
    _show_init(ctx, res)


def _show_init(ctx: Ctx, res: Any) -> None:
    doc = {
        "identity_id": hx(res.identity_id),
        "installation_id": hx(res.installation_id),
        "owner": res.owner,
        "recovery": res.recovery,
        "recovery_phrase": res.recovery_phrase,
        "name": res.name,
        "seq": res.bundle_seq,
        "home": str(ctx.home),
    }
    emit(
        ctx,
        doc,
        f"identity   {hx(res.identity_id)}\nowner      {res.owner}\n"
        f"device     {hx(res.installation_id)}\n"
        + (f"name       {res.name}\n" if res.name else "")
        + "\nRecovery phrase (shown once; write it down and keep it offline):\n"
        f"  {res.recovery_phrase}",
    )


def _open(ctx: Ctx) -> Any:
    from cli.identity import open_client  # finishes a pending device link first

    return open_client(ctx, passphrase())


@cli.command()
@click.option(
    "--prekey-ttl",
    type=click.IntRange(min=1),
    default=None,
    help="Prekey lifetime, seconds (at most a year).",
)
@_with_json
@click.pass_obj
@guarded
def publish(ctx: Ctx, prekey_ttl: int | None) -> None:
    """Publish a fresh intro bundle for this device (new signed prekey, seq + 1)."""
    from chatcore.client import PREKEY_TTL_S

    pw = passphrase()
    client = _open_with(ctx, pw)
    try:
        res = client.publish(pw, prekey_ttl or PREKEY_TTL_S)
    finally:
        client.close()
    doc = {
        "identity_id": hx(res.identity_id),
        "installation_id": hx(res.installation_id),
        "seq": res.seq,
        "prekey_id": res.prekey_id,
        "prekey_expires": res.prekey_expires,
        "gas_used": res.gas_used,
    }
    emit(
        ctx,
        doc,
        f"published bundle seq {res.seq} (prekey {res.prekey_id}, "
        f"expires {_ts(res.prekey_expires)}, {res.gas_used} gas)",
    )


def _open_with(ctx: Ctx, pw: str) -> Any:
    from cli.identity import open_client  # finishes a pending device link first

    return open_client(ctx, pw)


def _ts(unix_s: int | float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A date and time as every command prints it: local time, with its zone as an offset
    ("UTC", "UTC+05:30"; abbreviations such as "CST" are ambiguous, and some zones have
    none)."""
    t = time.localtime(unix_s)
    off = t.tm_gmtoff or 0
    h, m = divmod(abs(off) // 60, 60)
    zone = "UTC" if off == 0 else f"UTC{'+' if off > 0 else '-'}{h:02d}:{m:02d}"
    return f"{time.strftime(fmt, t)} {zone}"


def _clock(unix_s: int | float) -> str:
    """A time of day soon to come (a code's expiry): local time, with its zone."""
    return _ts(unix_s, "%H:%M:%S")


def resolved_doc(r: Any) -> dict[str, Any]:
    insts = []
    for i in r.installations:
        b = i.bundle
        insts.append(
            {
                "installation_id": hx(b.installation_id),
                "ed25519_key": hx(b.installation_id),
                "x25519_key": hx(b.ik_x25519),
                "prekey_id": b.spk_id,
                "prekey": hx(b.spk_pub),
                "prekey_expires": b.spk_not_after,
                "pq_key_id": i.pq.pq_key_id if i.pq else None,
                "mlkem768_key_sha256": (
                    "0x" + __import__("hashlib").sha256(i.pq.pq_pub).hexdigest() if i.pq else None
                ),
                "seq": b.seq,
                "issued_at": b.issued_at,
                "block": i.bundle_block,
                "bundle": b.to_text(),
                "verified": True,
            }
        )
    return {
        "identity_id": hx(r.identity_id),
        "owner": r.owner,
        "recovery": r.recovery,
        "names": list(r.names),
        "wallets": list(r.wallets),
        "installations": insts,
        "revoked": [hx(x) for x in r.revoked],
        "rejected": [{"installation_id": hx(i), "reason": why} for i, why in r.rejected],
    }


def resolved_text(r: Any) -> str:
    lines = [
        f"identity  {hx(r.identity_id)}",
        f"names     {', '.join(r.names) if r.names else '-'}",
        f"owner     {r.owner}",
    ]
    if r.wallets:
        lines.append(f"wallets   {', '.join(r.wallets)}")
    lines.append(
        f"devices   {len(r.installations)} active, verified"
        + (f"; {len(r.revoked)} revoked" if r.revoked else "")
    )
    for i in r.installations:
        b = i.bundle
        pq = f"ML-KEM-768 key {i.pq.pq_key_id}" if i.pq else "no post-quantum key"
        lines.append(
            f"  ✓ {hx(b.installation_id)[:18]}…  bundle seq {b.seq}, prekey {b.spk_id} "
            f"valid until {_ts(b.spk_not_after)}, {pq}"
        )
    for inst, why in r.rejected:
        lines.append(f"  ✗ {hx(inst)[:18]}…  rejected: {why}")
    return "\n".join(lines)


@cli.command()
@click.argument("query")
@click.option("--history", "show_history", is_flag=True, help="List every key change on chain.")
@click.option("--cold", is_flag=True, help="Read the chain directly, not the local index.")
@_with_json
@click.pass_obj
@guarded
def lookup(ctx: Ctx, query: str, show_history: bool, cold: bool) -> None:
    """Resolve and verify an identity by id (0x+64 hex), address (0x+40 hex), name or bundle."""
    network = ctx.network()
    from chatcore.home import Home
    from discovery.registry import Registry

    registry = Registry(network)
    registry.check_chain()
    home = Home(ctx.home)
    if not cold and home.exists():
        # the home's local index: synced incrementally, then lookups need no RPC at all
        from discovery.index import Index
        from discovery.resolver import Resolver

        index = Index(home.index_file, registry)
        try:
            index.sync()
            r = Resolver(index, network.binding, network.name_registry).resolve(
                query, require_active=not show_history
            )
        finally:
            index.close()
    else:
        from chatcore.client import cold_resolver

        r = cold_resolver(network, registry).resolve(query, require_active=not show_history)
    doc = resolved_doc(r)
    text = resolved_text(r)
    if show_history:
        doc["history"] = [
            {
                "block": h.block_number,
                "log_index": h.log_index,
                "event": h.event,
                "detail": h.detail,
                "tx": h.tx_hash,
                "verified": h.verified,
                **({"note": h.note} if h.note else {}),
            }
            for h in r.history
        ]
        text += "\nhistory:\n" + "\n".join(
            f"  {'✓' if h.verified else '✗'} block {h.block_number:>6}  {h.event:<20} "
            + ", ".join(f"{k}={v[:18] + '…' if len(v) > 20 else v}" for k, v in h.detail.items())
            + (f"  ({h.note})" if h.note else "")
            for h in r.history
        )
    emit(ctx, doc, text)


@cli.command()
@_with_json
@click.pass_obj
@guarded
def whoami(ctx: Ctx) -> None:
    """This home's identity, device and shareable bundle text."""
    from discovery.errors import RecordNotFound

    client = _open(ctx)
    try:
        # offline: as of the last sync
        offline = _sync_directory_if_reachable(client, gone_is_error=True)
        try:
            r = client.resolver.resolve_id(client.identity_id, fresh_prekeys=False)
        except RecordNotFound:
            if offline is not None:
                raise offline from None  # nothing synced yet: the chain is what is missing
            from chatcore.identity import not_on_chain

            raise not_on_chain(client.identity_id) from None
        mine = r.installation(client.installation_id)
        doc = resolved_doc(r)
        doc["this_device"] = hx(client.installation_id)
        doc["bundle"] = mine.bundle.to_text() if mine else None
    finally:
        client.close()
    emit(
        ctx,
        doc,
        lambda: resolved_text(r) + (f"\nbundle    {doc['bundle']}" if doc["bundle"] else ""),
    )


# ----------------------------------------------------------------------------------------------
# messaging
# ----------------------------------------------------------------------------------------------
def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def message_doc(client: Any, m: Any) -> dict[str, Any]:
    sender = m.sender_identity
    return {
        "conversation_id": hx(m.conversation_id),
        "message_id": hx(m.message_id),
        "sender": hx(sender),
        "sender_name": None if sender == client.identity_id else client.store.peer_display(sender),
        "outgoing": bool(m.outgoing),
        "text": m.body.decode("utf-8", errors="replace"),
        "sent_at": m.sent_at,
        "received_at": m.received_at,
        "lamport": m.lamport,
        **({"status": m.status} if hasattr(m, "status") else {}),
        **_feature_fields(client, m),
    }


def _feature_fields(client: Any, m: Any) -> dict[str, Any]:
    from cli.features import message_fields

    return message_fields(client, m)


def message_line(client: Any, m: Any) -> str:
    who = "me" if m.outgoing else client.display(m.sender_identity)
    t = time.strftime("%H:%M:%S", time.localtime(m.sent_at / 1000))
    from cli.features import line_text

    return f"[{t}] {one_entry(who)}: {one_entry(line_text(client, m))}"


async def _say_if_revoked(client: Any) -> None:
    """DeviceRevoked before anything else a send could say (that a name is ambiguous, or
    whom it names): a revoked device can send nothing. From the chain (which a send asks
    anyway); unreachable, from the index as last synced."""
    from chatcore.identity import check_not_revoked

    if not await client._refresh_directory():
        check_not_revoked(client)


@cli.command()
@click.argument("to")
@click.argument("text")
@_with_json
@click.pass_obj
@guarded
def send(ctx: Ctx, to: str, text: str) -> None:
    """Send TEXT to TO: a person (name, identity id, address), a group (name or id), or a
    conversation id."""
    from chatcore.errors import AmbiguousName, UnknownContact

    client = _open(ctx)
    _run(_say_if_revoked(client))
    target, group = to, False
    try:
        client.find_group(to)
        group = True
    except AmbiguousName:
        raise
    except UnknownContact:
        conv = client.find_conversation(to, required=False)
        if conv is not None and conv.peer_identity is not None:
            target = "0x" + conv.peer_identity.hex()
        hexed = client._hex_prefix(to, 64)
        if conv is None and hexed is not None and len(hexed) not in (40, 64):
            # a short hex id that is no group's or conversation's (40 / 64 digits: a person)
            # — unless it is a name (names of hex letters only, such as "cafe", exist)
            from discovery.errors import DiscoveryError

            try:
                client.resolve_peer(to)
            except (UnknownContact, DiscoveryError):
                raise UnknownContact(f"no group, conversation or identity matches {to!r}") from None

    async def go() -> Any:
        try:
            if group:
                return await client.send_group_text(target, text)
            return await client.send_text(target, text)
        finally:
            await client.aclose()

    res = _run(go())
    doc = {
        "conversation_id": hx(res.conversation_id),
        "message_id": hx(res.message_id),
        "devices": len(res.frames),
        "sent_at": res.sent_at,
    }
    emit(ctx, doc, f"sent to {to}, message {hx(res.message_id)}")


@cli.command()
@_with_json
@click.pass_obj
@guarded
def sync(ctx: Ctx) -> None:
    """Fetch, decrypt and store what arrived; print new messages."""
    pw = passphrase()
    client = _open_with(ctx, pw)

    async def go() -> Any:
        try:
            _warn_recovery_change(client)  # first: a thief may have revoked this device too
            msgs = await client.sync()
            _refresh_prekey(client, pw)
            return [message_doc(client, m) for m in msgs], [
                _where(client, m) + message_line(client, m) for m in msgs
            ]
        finally:
            await client.aclose()

    docs, lines = _run(go())
    emit(ctx, docs, "\n".join(lines) if lines else "no new messages")


def _refresh_prekey(client: Any, pw: str) -> None:
    """A fresh signed prekey when this one nears its end (so that people can still start
    conversations with this device); a failure only says so: the sync itself worked (the
    next one tries again), whatever went wrong on the chain (no funds for gas, say)."""
    try:
        res = client.refresh_prekey_if_due(pw)
    except Exception as exc:  # best effort, reported in one line
        click.echo(f"warning: prekey not refreshed: {terminal_safe(str(exc))}", err=True)
        return
    if res is not None:
        logging.getLogger("cli").info("published a fresh signed prekey (seq %d)", res.seq)


def _foreign_recovery_change(client: Any) -> Any | None:
    """The recovery change this home did not propose that is waiting, or None (also when
    the chain cannot say: a warning must not turn a command that works into a failure)."""
    from chatcore.errors import ChatCoreError
    from chatcore.identity import foreign_recovery_change
    from discovery.errors import DiscoveryError

    try:
        return foreign_recovery_change(client)
    except (ChatCoreError, DiscoveryError):
        return None


def _warn_recovery_change(client: Any, pending: Any | None = None) -> None:
    """One stderr line when a recovery change this home did not propose is waiting: the
    registry's delay is there for the user to see it and cancel it if it is a thief's.
    ``pending``: that change, already asked for."""
    if pending is None:
        pending = _foreign_recovery_change(client)
    if pending is not None:
        click.echo(
            f"warning: a change of your recovery account to {pending.recovery} can be confirmed "
            f"from {_ts(pending.ready_at)}; not proposed from this device — if not yours, run "
            "'logos-chat recovery cancel --recovery' or 'recovery restore'",
            err=True,
        )


def _where(client: Any, m: Any) -> str:
    """Where a synced message belongs, for the human 'sync' output: a group's name, whom
    a message another device of ours sent went to, or a mark on a contact request."""
    conv = client.store.conversation(m.conversation_id)
    if conv is None:  # deleted here meanwhile
        return ""
    if conv.kind == "group":
        return f"[{one_line(conv.title or hx(conv.id)[:10])}] "
    if m.outgoing and conv.peer_identity is not None:
        return f"(to {one_entry(client.display(conv.peer_identity))}) "
    if not m.outgoing and client.is_request(m.conversation_id):
        return "(request) "
    return ""


@cli.command()
@click.argument("conversation")
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--limit", type=click.IntRange(1, 10_000), default=50)
@click.option("--before", default=None, help="A message id: show messages before it.")
@click.option(
    "--phrase", "use_phrase", is_flag=True, help="export/import: use the recovery phrase."
)
@_with_json
@click.pass_obj
@guarded
def history(
    ctx: Ctx,
    conversation: str,
    file: Path | None,
    limit: int,
    before: str | None,
    use_phrase: bool,
) -> None:
    """Show a conversation (by id prefix, or the peer's name / id / address), oldest first.

    \b
    history export FILE [--phrase]   encrypted backup of all history (same as 'backup export')
    history import FILE [--phrase]   merge such a backup into this home
    """
    given = {
        p: click.get_current_context().get_parameter_source(p)
        == click.core.ParameterSource.COMMANDLINE
        for p in ("limit", "before", "use_phrase")
    }
    if conversation in ("export", "import") and file is not None:
        from cli.identity import backup_export, backup_import

        if given["limit"] or given["before"]:
            raise click.UsageError(f"history {conversation} takes no --limit or --before")

        cmd = backup_export if conversation == "export" else backup_import
        click.get_current_context().invoke(cmd, file=file, use_phrase=use_phrase)
        return
    if file is not None:
        raise ValueError("history takes one conversation (or: history export|import FILE)")
    if conversation in ("export", "import"):
        raise ValueError(
            f"history {conversation} needs a FILE (a person named {conversation}: "
            f"history @{conversation})"
        )
    if given["use_phrase"]:
        raise click.UsageError("--phrase goes with history export|import FILE")
    client = _open(ctx)
    try:
        _sync_directory_if_reachable(client)
        conv = client.find_conversation(conversation)
        point = None
        if before is not None:
            at = client.message(before, conversation=conv.id)
            point = (at.lamport, at.seq)
        msgs = client.history(conv.id, limit, point)
        _mark_read_quietly(client, conv.id)
        docs = [message_doc(client, m) for m in msgs]
        lines = [message_line(client, m) for m in msgs]
        title = client.display(conv.peer_identity) if conv.peer_identity else conv.title
    finally:
        client.close()
    emit(
        ctx,
        {"conversation_id": hx(conv.id), "title": title, "messages": docs},
        "\n".join([f"— {one_line(title or '')} ({hx(conv.id)}) —", *lines])
        if lines
        else "no messages",
    )


log = logging.getLogger("logos_chat.cli")


def _mark_read_quietly(client: Any, conv_id: bytes) -> None:
    """The user saw the conversation: read receipts go now if the network is there; a
    local read never fails for them (offline they go with a later send or sync)."""
    from chatcore.errors import TransportError

    async def go() -> None:
        try:
            await client.mark_read(conv_id)
        except TransportError:
            pass
        finally:
            if client.transport is not None:
                await client.transport.close()
                client.transport = None

    _run(go())


def _sync_directory_if_reachable(
    client: Any, reading: bool = True, *, gone_is_error: bool = False
) -> Exception | None:
    """Learn new names and devices before a local read; with the chain unreachable, the
    local index (as of the last sync) answers instead of the command failing. Returns the
    ChainUnavailable error, if any, for a caller whose index turns out to be empty.
    ``reading=False``: before an action, which a revoked device cannot take (DeviceRevoked
    is raised, its one error line, rather than a warning that it shows what it holds).
    A chain that answers and does not know our identity (started again without its state)
    is a warning on a read, what this home holds stays readable; before an action (or
    with ``gone_is_error``) it is the error."""
    from chatcore.identity import DeviceRevoked
    from discovery.errors import ChainUnavailable, RecordNotFound

    try:
        client.sync_directory()
    except ChainUnavailable as exc:
        log.info("chain unreachable, using the local index: %s", exc)
        return exc
    except RecordNotFound as exc:
        if gone_is_error or not reading:
            raise
        _notes.append(str(exc))
    except DeviceRevoked:  # what is on this device stays readable here
        if not reading:
            raise
        click.echo(
            "warning: this device was revoked on chain (it can no longer send or receive); "
            "showing what it holds",
            err=True,
        )
    return None


def _hex(s: str) -> str:
    s = s.strip().lower().removeprefix("0x")
    if not s or any(c not in "0123456789abcdef" for c in s):
        raise ValueError(f"{s!r} is not a hex id")
    return s[: len(s) // 2 * 2]


# ----------------------------------------------------------------------------------------------
# groups
# ----------------------------------------------------------------------------------------------
@cli.group()
def group() -> None:
    """Group chats: create, send, add, remove, promote, rename, leave, list."""


def _group_run(ctx: Ctx, fn: Callable[[Any], Any]) -> Any:
    client = _open(ctx)

    async def go() -> Any:
        try:
            return await fn(client)
        finally:
            await client.aclose()

    return _run(go())


def _members(n: int) -> str:
    return f"{n} member" + ("" if n == 1 else "s")


def group_doc(client: Any, gid: bytes, shown: dict[str, str] | None = None) -> dict[str, Any]:
    """A group as ``--json`` gives it. A person's ``name`` is their verified name or null
    (ours too: ``"me": true``), as ``sender_name`` in history; what the text output shows
    for them ("me", a short id, a moved name's mark) goes into ``shown``."""
    info = client.group_info(gid)

    def person(i: bytes) -> dict[str, Any]:
        display = client.display(i)  # (remembers a name found in the index)
        if shown is not None:
            shown[hx(i)] = display
        me = i == client.identity_id
        return {
            "identity_id": hx(i),
            "name": None if me else client.store.peer_display(i),
            "me": me,
        }

    return {
        "conversation_id": hx(gid),
        "name": info.name,
        "epoch": info.epoch,
        "is_member": info.is_member,
        "held_out": info.held_out,
        "members": [person(m) for m in sorted(info.members)],
        "admins": [person(a) for a in sorted(info.admins)],
    }


def _check_free_group_name(client: Any, name: str, renaming: bytes | None = None) -> None:
    """Refuse (ValueError) a name for a group of ours that already names a person we know or
    another group we are in: 'send NAME', 'history NAME' would then be ambiguous (find_group
    refuses such a name until an id is given). Groups others name so are still followed."""
    from chatcore.groupchat import check_group_name

    check_group_name(name)  # its own errors first (blank, like an id, control characters)
    _sync_directory_if_reachable(client, reading=False)  # on-chain names as of now
    q = name.strip()
    person = client._person_named(q)
    if person is not None:
        whose = "your own name" if person == client.identity_id else "a person's name here"
        raise ValueError(
            f"{q!r} is {whose} ({hx(person)[:10]}…): a group of that name would make it "
            "ambiguous wherever a name is asked for; choose another group name"
        )
    for gid in client.group_ids():
        info = client.group_info(gid)
        if gid != renaming and info.is_member and info.name in (name, q):
            raise ValueError(
                f"you are already in a group named {q!r} ({hx(gid)[:10]}…); "
                "choose another group name"
            )


@group.command("create")
@click.argument("name")
@click.option("--member", "members", multiple=True, help="Name, identity id or address.")
@_with_json
@click.pass_obj
@guarded
def group_create(ctx: Ctx, name: str, members: tuple[str, ...]) -> None:
    """Create group NAME with you as admin and the given members."""

    async def fn(c: Any) -> Any:
        _check_free_group_name(c, name)
        gid = await c.create_group(name, list(members))
        return group_doc(c, gid)

    doc = _group_run(ctx, fn)
    emit(
        ctx,
        doc,
        f"created group “{name}” {doc['conversation_id']} with {_members(len(doc['members']))}",
    )


def _group_change(ctx: Ctx, grp: str, how: str, who: str | None) -> None:
    shown: dict[str, str] = {}

    async def fn(c: Any) -> Any:
        await c.group_change(grp, how, who)
        doc = group_doc(c, c.find_group(grp))
        if who is not None:  # whom WHO named, as resolved (and verified) for the change
            try:  # (from the index the change just synced: no second chain read)
                target = c._member_ids([who])[0]
            except Exception:  # done already: say it as typed rather than fail
                shown["who"] = who
                return doc
            me = target == c.identity_id
            name = None if me else c.store.peer_display(target)
            doc["member"] = {"identity_id": hx(target), "name": name, "me": me}
            shown["who"] = f"{c.display(target)} ({hx(target)[:10]}…)"
        return doc

    doc = _group_run(ctx, fn)
    emit(
        ctx,
        doc,
        f"{how}{' ' + shown['who'] if shown else ''}: “{doc['name']}” is now at epoch "
        f"{doc['epoch']} with {_members(len(doc['members']))}",
    )


@group.command("add")
@click.argument("grp", metavar="GROUP")
@click.argument("who")
@_with_json
@click.pass_obj
@guarded
def group_add(ctx: Ctx, grp: str, who: str) -> None:
    """Add WHO to GROUP (admins only)."""
    _group_change(ctx, grp, "add", who)


@group.command("remove")
@click.argument("grp", metavar="GROUP")
@click.argument("who")
@_with_json
@click.pass_obj
@guarded
def group_remove(ctx: Ctx, grp: str, who: str) -> None:
    """Remove WHO from GROUP (admins only); every remaining member's key rotates."""
    _group_change(ctx, grp, "remove", who)


@group.command("promote")
@click.argument("grp", metavar="GROUP")
@click.argument("who")
@_with_json
@click.pass_obj
@guarded
def group_promote(ctx: Ctx, grp: str, who: str) -> None:
    """Make WHO an admin of GROUP (admins only)."""
    _group_change(ctx, grp, "promote", who)


@group.command("rename")
@click.argument("grp", metavar="GROUP")
@click.argument("name")
@_with_json
@click.pass_obj
@guarded
def group_rename(ctx: Ctx, grp: str, name: str) -> None:
    """Give GROUP the new name NAME (admins only)."""

    async def fn(c: Any) -> Any:
        gid = c.find_group(grp)  # after the rename, the old name no longer finds it
        _check_free_group_name(c, name, renaming=gid)
        await c.rename_group(gid, name)
        return group_doc(c, gid)

    doc = _group_run(ctx, fn)
    emit(
        ctx,
        doc,
        f"renamed {grp} to “{doc['name']}” {doc['conversation_id']}, now at epoch "
        f"{doc['epoch']} with {_members(len(doc['members']))}",
    )


@group.command("leave")
@click.argument("grp", metavar="GROUP")
@_with_json
@click.pass_obj
@guarded
def group_leave(ctx: Ctx, grp: str) -> None:
    """Leave GROUP."""
    _group_change(ctx, grp, "leave", None)


@group.command("send")
@click.argument("grp", metavar="GROUP")
@click.argument("text")
@_with_json
@click.pass_obj
@guarded
def group_send(ctx: Ctx, grp: str, text: str) -> None:
    """Send TEXT to GROUP (encrypted once, published once)."""

    async def fn(c: Any) -> Any:
        await _say_if_revoked(c)
        return await c.send_group_text(grp, text)

    res = _group_run(ctx, fn)
    emit(
        ctx,
        {
            "conversation_id": hx(res.conversation_id),
            "message_id": hx(res.message_id),
            "sent_at": res.sent_at,
        },
        f"sent to group {grp}, message {hx(res.message_id)}",
    )


@group.command("list")
@click.argument("grp", metavar="GROUP", required=False)
@_with_json
@click.pass_obj
@guarded
def group_list(ctx: Ctx, grp: str | None) -> None:
    """Members, admins and epoch of GROUP (or all your groups)."""
    client = _open(ctx)
    try:
        _sync_directory_if_reachable(client)
        gids = [client.find_group(grp)] if grp else client.group_ids()
        shown: dict[str, str] = {}
        docs = [group_doc(client, g, shown) for g in gids]
    finally:
        client.close()

    emit(ctx, docs[0] if grp else docs, lambda: group_text(docs, shown))


def group_text(docs: list[dict[str, Any]], shown: dict[str, str]) -> str:
    """'group list' as text: per group a line, then its members (★ admins) as ``shown``."""
    out = []
    for d in docs:
        admins = {a["identity_id"] for a in d["admins"]}
        if d["is_member"]:
            how = ""
        elif d.get("held_out"):  # among the members below, yet not one: say why
            how = (
                " (you are held out for now: an admin removed you; only their leave undoes it;"
                " you can still leave: group leave)"
            )
        else:
            how = " (you are not a member)"
        out.append(f"“{one_line(d['name'])}” {d['conversation_id']} epoch {d['epoch']}{how}")
        for m in d["members"]:
            who = shown[m["identity_id"]]
            out.append(f"  {'★' if m['identity_id'] in admins else ' '} {one_line(who)}")
    return "\n".join(out) if out else "no groups"


def _register_optional() -> None:
    from cli.sim import sim

    cli.add_command(sim)
    from cli.features import COMMANDS  # contacts, requests, conversations, chat, edit, ...

    for command in COMMANDS:
        cli.add_command(command)


_register_optional()


def _register_identity() -> None:
    from cli import identity

    cli.add_command(identity.devices)
    cli.add_command(identity.keys)
    cli.add_command(identity.recovery)
    cli.add_command(identity.backup)
    cli.add_command(identity.bind)


_register_identity()


def main() -> None:
    """The console script: click's own errors (a mistyped option, a missing argument) are
    one ``error:`` line too, exit code 2, as click gives them."""
    try:
        rc = cli.main(prog_name="logos-chat", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # a group without a command: its help
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
        sys.exit(0)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        fail(exc.format_message() + hint, exc.exit_code)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        fail("interrupted", 130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
