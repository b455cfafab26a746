"""CLI commands for the chat features (a thin layer over the ``chatcore.Client`` facade):

    contacts add|remove|block|unblock|list     requests list|accept|decline
    conversations [--all] | mute|unmute|archive|unarchive|delete CONV
    edit MSG TEXT · delete MSG · react MSG EMOJI · reply MSG TEXT · search TEXT
    receipts [on|off] · typing TO · chat TO (typing indicators, receipt marks, edits)

Registered from ``cli/main.py`` with ``cli.add_command``. Frames these commands produce are
published at once; if the delivery network is down they stay in the outbox for the next send.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import click

from cli.main import (
    EXIT_NOT_FOUND,
    Ctx,
    _open,
    _open_with,
    _refresh_prekey,
    _run,
    _sync_directory_if_reachable,
    _with_json,
    emit,
    fail,
    guarded,
    hx,
    message_doc,
    message_line,
    one_entry,
    one_line,
    passphrase,
    terminal_safe,
)

# ---- helpers ------------------------------------------------------------------------------------


def name_of(client: Any, identity: bytes) -> str:
    if identity == client.identity_id:
        return "me"
    c = client.contact(identity)
    if c is not None and c.alias:
        return str(c.alias)
    return str(client.display(identity))


def act(client: Any, action: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
    """Run one facade action and publish what is queued: (its result, published?).

    The action has already taken effect here when the delivery network is unreachable
    (``DeliveryPending``): its frames wait in the outbox for the next send or sync, and the
    command fails saying so (exit 5)."""
    from chatcore.errors import TransportError

    async def go() -> tuple[Any, bool]:
        try:
            result = await action()
            try:
                await client.flush_features()
            except TransportError:
                return result, False
            return result, True
        finally:
            if client.transport is not None:
                await client.transport.close()
                client.transport = None

    out: tuple[Any, bool] = _run(go())
    return out


def message_fields(client: Any, m: Any) -> dict[str, Any]:
    """Feature fields of a message document (type, current text, edits, reactions, receipts)."""
    from chatcore import content
    from chatcore.payload import ContentType

    try:
        ct = ContentType(m.content_type)
    except ValueError:
        return {}
    out: dict[str, Any] = {"type": ct.name.lower()}
    if ct in content.OP_TYPES:
        t = content.decode_targeted(ct, m.body)
        out.update(target=hx(t.target), text=t.text)
        return out
    if ct not in content.MESSAGE_TYPES:
        return out
    stored = client.store.message(m.conversation_id, m.message_id)
    if stored is None:
        out["text"] = content.display_text(m.content_type, m.body)
        return out
    v = client.view(stored)
    out.update(
        text=v.text,
        edited=v.edited,
        deleted=v.deleted,
        reply_to=hx(v.reply_to),
        reactions={e: [name_of(client, i) for i in who] for e, who in v.reactions.items()},
        status=stored.status,
    )
    if stored.outgoing:
        out["receipts"] = [
            {"member": hx(x), "name": name_of(client, x), "status": st}
            for x, st in client.receipts(stored).items()
        ]
    else:
        out["request"] = client.is_request(m.conversation_id)
    return out


MARKS = {
    "sending": "…",
    "sent": "✓ sent",
    "delivered": "✓✓ delivered",
    "read": "✓✓ read",
    "failed": "✗ failed",
}


def line_text(client: Any, m: Any) -> str:
    """The text part of a message line: current text and marks (edited, reactions, status)."""
    d = message_fields(client, m)
    t = d.get("type")
    if t == "edit":
        return f"(edited a message) {d['text']}"
    if t == "delete":
        return "(deleted a message)"
    if t == "reaction":
        return f"(reacted {d['text'] or 'nothing'} to {d['target'][:10]})"
    if "text" not in d:
        return str(m.body.decode("utf-8", errors="replace"))
    text = "(message deleted)" if d.get("deleted") else d["text"]
    if d.get("reply_to"):
        text = f"↪ {d['reply_to'][:10]} {text}"
    if d.get("edited"):
        text += " (edited)"
    if d.get("reactions"):
        text += "  [" + " ".join(f"{e} {','.join(w)}" for e, w in d["reactions"].items()) + "]"
    if getattr(m, "outgoing", False) and "status" in d:
        text += "  " + MARKS.get(d["status"], "")
    return text


# ---- contacts -----------------------------------------------------------------------------------
def _contact_doc(client: Any, c: Any, names: bool = True) -> dict[str, Any]:
    verified: list[str] = []
    if names:
        try:
            # names storage says they hold (the checked view; the logs alone could lie)
            checked = client.directory.resolver
            verified = list(checked.resolve_id(c.identity_id, fresh_prekeys=False).names)
        except Exception:  # the chain may not know it (yet): no verified names
            verified = []
    return {
        "identity_id": hx(c.identity_id),
        "alias": c.alias,
        "state": c.state.name.lower(),
        "names": verified,
        "name": name_of(client, c.identity_id),
        "updated_at": c.updated_at,
    }


@click.group()
def contacts() -> None:
    """Your contacts: add, remove, block, unblock, list (synced to your other devices)."""


def _set_contact(
    ctx: Ctx, who: str, state_name: str, alias: str | None = None, *, request: bool = False
) -> None:
    """``request``: answering a contact request (there must be one)."""
    from chatcore.content import ContactState

    client = _open(ctx)
    try:
        if request:
            _sync_directory_if_reachable(client, reading=False)
            pending = client.contact(client.resolve_peer(who).identity_id)
            if pending is None or pending.state != ContactState.REQUEST:
                hint = {
                    ContactState.DECLINED: " (you declined it; 'contacts add' takes them back)",
                    ContactState.BLOCKED: " (blocked; 'contacts unblock' first)",
                    ContactState.CONTACT: " (already a contact)",
                }.get(pending.state if pending is not None else ContactState.NONE, "")
                fail(f"no contact request from {who}{hint}", EXIT_NOT_FOUND)
        c, _published = act(
            client, lambda: client.set_contact(who, ContactState[state_name], alias)
        )
        peer = client.resolve_peer(who)
        doc = (
            _contact_doc(client, c, names=False)
            if c is not None
            else {"identity_id": hx(peer.identity_id), "state": "none"}
        )
        doc["names"] = [peer.display] if peer.display else []
    finally:
        client.close()
    kept = doc.get("alias")  # the alias given now, or the one kept
    emit(ctx, doc, f"{who}: {doc['state']}" + (f" (alias {kept})" if kept else ""))


@contacts.command("add")
@click.argument("who")
@click.option("--alias", default=None, help="Your own name for them.")
@_with_json
@click.pass_obj
@guarded
def contacts_add(ctx: Ctx, who: str, alias: str | None) -> None:
    """Add WHO (name, identity id, address) as a contact."""
    _set_contact(ctx, who, "CONTACT", alias)


@contacts.command("remove")
@click.argument("who")
@_with_json
@click.pass_obj
@guarded
def contacts_remove(ctx: Ctx, who: str) -> None:
    """Remove WHO from your contacts (their next message is a request again)."""
    _set_contact(ctx, who, "NONE")


@contacts.command("block")
@click.argument("who")
@_with_json
@click.pass_obj
@guarded
def contacts_block(ctx: Ctx, who: str) -> None:
    """Block WHO: their messages are dropped before storage, on all your devices."""
    _set_contact(ctx, who, "BLOCKED")


@contacts.command("unblock")
@click.argument("who")
@_with_json
@click.pass_obj
@guarded
def contacts_unblock(ctx: Ctx, who: str) -> None:
    """Unblock WHO (they become a contact again)."""
    _set_contact(ctx, who, "CONTACT")


@contacts.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also blocked and declined identities.")
@_with_json
@click.pass_obj
@guarded
def contacts_list(ctx: Ctx, show_all: bool) -> None:
    """Contacts with alias, identity id and verified names."""
    from chatcore.content import ContactState

    client = _open(ctx)
    try:
        _sync_directory_if_reachable(client)
        states = () if show_all else (ContactState.CONTACT, ContactState.BLOCKED)
        docs = [_contact_doc(client, c) for c in client.contacts(*states)]
    finally:
        client.close()

    def text() -> str:
        if not docs:
            return "no contacts"
        return "\n".join(
            f"{d['name']:<20} {d['state']:<8} {d['identity_id'][:18]}…  "
            f"{', '.join(d['names']) or '-'}"
            for d in docs
        )

    emit(ctx, docs, text)


# ---- requests -----------------------------------------------------------------------------------
@click.group()
def requests() -> None:
    """Messages from people who are not your contacts yet."""


@requests.command("list")
@_with_json
@click.pass_obj
@guarded
def requests_list(ctx: Ctx) -> None:
    """Pending contact requests, with their messages."""
    from chatcore.content import ContactState
    from chatcore.engine import direct_conversation_id

    client = _open(ctx)
    try:
        docs = []
        for c in client.contacts(ContactState.REQUEST):
            conv = direct_conversation_id(client.identity_id, c.identity_id)
            msgs = client.history(conv, 20)
            docs.append(
                {
                    "identity_id": hx(c.identity_id),
                    "name": name_of(client, c.identity_id),
                    "conversation_id": hx(conv),
                    "messages": [message_doc(client, m) for m in msgs],
                }
            )
    finally:
        client.close()

    def text() -> str:
        if not docs:
            return "no requests"
        out = []
        for d in docs:
            out.append(f"{d['name']} ({d['identity_id'][:18]}…), {len(d['messages'])} message(s)")
            out += [f"  {one_entry(m['text'])}" for m in d["messages"][-3:]]
        return "\n".join(out)

    emit(ctx, docs, text)


@requests.command("accept")
@click.argument("who")
@_with_json
@click.pass_obj
@guarded
def requests_accept(ctx: Ctx, who: str) -> None:
    """Accept WHO's request: they become a contact (read receipts start flowing)."""
    _set_contact(ctx, who, "CONTACT", request=True)


@requests.command("decline")
@click.argument("who")
@_with_json
@click.pass_obj
@guarded
def requests_decline(ctx: Ctx, who: str) -> None:
    """Decline WHO's request: their later messages are not shown."""
    _set_contact(ctx, who, "DECLINED", request=True)


# ---- conversations ------------------------------------------------------------------------------
@click.group(invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="Include archived conversations.")
@_with_json
@click.pass_context
@guarded
def conversations(cctx: click.Context, show_all: bool) -> None:
    """Conversations, newest first, with unread counts and the last message.

    Subcommands: mute, unmute, archive, unarchive, delete CONV.
    """
    if cctx.invoked_subcommand is not None:
        return
    ctx: Ctx = cctx.obj
    client = _open(ctx)
    try:
        rows = []
        for c in client.conversations():
            if c.archived and not show_all:
                continue
            last = next(iter(client.history(c.id, 1)), None)
            rows.append(
                {
                    "conversation_id": hx(c.id),
                    "kind": c.kind,
                    "title": name_of(client, c.peer_identity) if c.peer_identity else c.title,
                    "peer": hx(c.peer_identity),
                    "unread": c.unread,
                    "last_at": c.last_at,
                    "muted": c.muted,
                    "archived": c.archived,
                    "request": client.is_request(c.id),
                    "last_message": None if last is None else message_doc(client, last),
                }
            )
    finally:
        client.close()

    def text() -> str:
        if not rows:
            return "no conversations"
        out = []
        for r in rows:
            last = r["last_message"]
            preview = "" if last is None else (("me: " if last["outgoing"] else "") + last["text"])
            preview = " ↵ ".join(preview.splitlines())
            if len(preview) > 50:
                preview = preview[:49] + "…"
            flags = "".join(f" [{k}]" for k in ("request", "muted", "archived") if r[k]) + (
                f" ({r['unread']} unread)" if r["unread"] else ""
            )
            title = one_line(r["title"] or "")
            out.append(f"{r['conversation_id'][:18]}…  {title}{flags}  {preview}")
        return "\n".join(out)

    emit(ctx, rows, text)


def _conv_flag(ctx: Ctx, conv: str, **flags: bool) -> None:
    client = _open(ctx)
    try:
        cid = client.find_conversation(conv).id
        c, _published = act(client, lambda: client.set_conversation_flags(cid, **flags))
    finally:
        client.close()
    doc = {"conversation_id": hx(c.id), "muted": c.muted, "archived": c.archived}
    emit(ctx, doc, f"{hx(c.id)}: muted={c.muted} archived={c.archived}")


def _flag_command(name: str, help_text: str, **flags: bool) -> None:
    @conversations.command(name, help=help_text)
    @click.argument("conv")
    @_with_json
    @click.pass_obj
    @guarded
    def cmd(ctx: Ctx, conv: str) -> None:
        _conv_flag(ctx, conv, **flags)


_flag_command("mute", "Mute CONV (no notices in 'chat'), on all your devices.", muted=True)
_flag_command("unmute", "Unmute CONV.", muted=False)
_flag_command("archive", "Archive CONV (hidden from the list), on all your devices.", archived=True)
_flag_command("unarchive", "Bring CONV back to the list.", archived=False)


@conversations.command("delete")
@click.argument("conv")
@_with_json
@click.pass_obj
@guarded
def conversations_delete(ctx: Ctx, conv: str) -> None:
    """Delete CONV and its messages on this device only."""
    client = _open(ctx)
    try:
        c = client.find_conversation(conv)
        n = client.delete_conversation(c.id)
    finally:
        client.close()
    emit(ctx, {"conversation_id": hx(c.id), "deleted_messages": n}, f"deleted {n} message(s)")


# ---- edit, delete, react, reply -----------------------------------------------------------------
def _send_op(ctx: Ctx, ref: str, kind: str, action: Callable[[Any, bytes], Any]) -> None:
    client = _open(ctx)
    try:
        target = client.message(ref).message_id
        res, ok = act(client, lambda: action(client, target))
    finally:
        client.close()
    doc = {
        "conversation_id": hx(res.conversation_id),
        "message_id": hx(res.message_id),
        "target": hx(target),
        "type": kind,
        "published": ok,
    }
    emit(ctx, doc, f"{kind} sent for {hx(target)}" + ("" if ok else " (queued)"))


@click.command("edit")
@click.argument("msg")
@click.argument("text")
@_with_json
@click.pass_obj
@guarded
def edit(ctx: Ctx, msg: str, text: str) -> None:
    """Replace the text of your message MSG (id or id prefix) for everyone."""
    _send_op(ctx, msg, "edit", lambda c, t: c.edit(t, text))


@click.command("delete")
@click.argument("msg")
@_with_json
@click.pass_obj
@guarded
def delete(ctx: Ctx, msg: str) -> None:
    """Delete your message MSG for everyone."""
    _send_op(ctx, msg, "delete", lambda c, t: c.delete_message(t))


@click.command("react")
@click.argument("msg")
@click.argument("emoji", required=False, default="")
@click.option("--remove", is_flag=True, help="Take your reaction back.")
@_with_json
@click.pass_obj
@guarded
def react(ctx: Ctx, msg: str, emoji: str, remove: bool) -> None:
    """React to MSG with EMOJI (one reaction per person; --remove takes it back)."""
    if not remove and not emoji:
        raise ValueError("give an EMOJI (or --remove)")
    _send_op(ctx, msg, "reaction", lambda c, t: c.react(t, "" if remove else emoji))


@click.command("reply")
@click.argument("msg")
@click.argument("text")
@_with_json
@click.pass_obj
@guarded
def reply(ctx: Ctx, msg: str, text: str) -> None:
    """Reply to MSG with TEXT."""
    _send_op(ctx, msg, "reply", lambda c, t: c.reply(t, text))


# ---- search, receipts, typing -------------------------------------------------------------------
@click.command("search")
@click.argument("text")
@click.option("--conversation", "conv", default=None, help="Only this conversation.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50)
@_with_json
@click.pass_obj
@guarded
def search(ctx: Ctx, text: str, conv: str | None, limit: int) -> None:
    """Full-text search over your messages (every word must match), newest first."""
    client = _open(ctx)
    try:
        cid = client.find_conversation(conv).id if conv else None
        hits = client.search(text, cid, limit)
        docs = [message_doc(client, m) for m in hits]
        lines = [f"{hx(m.conversation_id)[:10]} {message_line(client, m)}" for m in hits]
    finally:
        client.close()
    emit(ctx, docs, "\n".join(lines) if lines else "no matches")


@click.command("receipts")
@click.argument("mode", type=click.Choice(["on", "off"]), required=False)
@_with_json
@click.pass_obj
@guarded
def receipts(ctx: Ctx, mode: str | None) -> None:
    """Show or switch read receipts (delivery receipts always flow; synced to your devices)."""
    client = _open(ctx)
    try:
        if mode is not None:
            act(client, lambda: client.set_read_receipts(mode == "on"))
        on = client.read_receipts
    finally:
        client.close()
    emit(ctx, {"read_receipts": on}, f"read receipts {'on' if on else 'off'}")


class TypingShown:
    """Who is typing in ``chat``: a person types while any of their devices does (an
    indicator lasts ``ttl`` seconds unless renewed; a stop or a message from a device ends
    that device's)."""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._until: dict[tuple[bytes, bytes], float] = {}  # (identity, device) -> until

    def signal(self, who: bytes, device: bytes, on: bool, now: float) -> bool:
        """Record a typing indicator (``on``) or its stop; True if '… X is typing' is to be
        shown now (X was not typing on any device)."""
        shown = any(t > now for (w, _), t in self._until.items() if w == who)
        self._until[(who, device)] = now + self.ttl if on else 0
        return on and not shown

    def wrote(self, who: bytes, device: bytes) -> None:
        """A message from that device: its indicator ends."""
        self._until.pop((who, device), None)


@click.command("typing")
@click.argument("to")
@click.option("--stop", is_flag=True, help="Say you stopped typing.")
@_with_json
@click.pass_obj
@guarded
def typing(ctx: Ctx, to: str, stop: bool) -> None:
    """Send one typing indicator to TO (a person or group); 'chat' does this by itself."""
    client = _open(ctx)
    try:
        conv = client.conversation_id(to)
        ok = act(client, lambda: client.send_typing(conv, not stop))[1]
    finally:
        client.close()
    said = "stopped typing sent" if stop else "typing sent"
    emit(ctx, {"conversation_id": hx(conv), "published": ok}, said if ok else "not sent")


# ---- chat ---------------------------------------------------------------------------------------
class Screen:
    """Output lines above the line being typed (raw terminal) or plainly (pipes)."""

    def __init__(self, raw: bool) -> None:
        self.raw = raw
        self.buf = ""

    def show(self, line: str) -> None:
        line = terminal_safe(line)
        if self.raw:
            line = line.replace("\n", "\r\n")
            sys.stdout.write("\r\x1b[K" + line + "\r\n" + self.buf)
            sys.stdout.flush()
        else:
            click.echo(line)


@click.command("chat")
@click.argument("to")
@click.pass_obj
@guarded
def chat(ctx: Ctx, to: str) -> None:
    """Interactive chat: type lines to send; messages, typing and receipts appear as they
    arrive. Ctrl-D leaves."""
    if ctx.json:
        raise click.UsageError("chat is interactive: --json is not supported (use history)")
    pw = passphrase()
    client = _open_with(ctx, pw)
    _run(_chat(client, to, pw))


#: how long a line typed in ``chat`` waits for the delivery network before the chat says it
#: is saved and not sent yet (the one-shot ``send`` waits the transport's 10 s)
CHAT_PUBLISH_TIMEOUT_S = 2.0
#: while the network does not take what we send: how often what waits is tried again
CHAT_RETRY_S = 2.0
#: how often ``chat`` checks that another process did not replace the home's device keys
CHAT_INSTALLATION_CHECK_S = 1.0


async def _chat(client: Any, to: str, pw: str | None = None) -> None:
    from chatcore import content
    from chatcore.engine import direct_conversation_id
    from chatcore.errors import (
        DeliveryPending,
        FrameRefused,
        InstallationReplaced,
        NotAPeer,
        TransportError,
        UnknownContact,
    )
    from chatcore.payload import ContentType

    raw = sys.stdin.isatty()
    screen = Screen(raw)
    replaced = False
    try:
        await client.sync()  # (the chain first; unreachable, the local index as last synced)
        if pw is not None:
            await asyncio.to_thread(_refresh_prekey, client, pw)
        try:
            conv = client.find_group(to)
            title = client.group_info(conv).name

            async def send(text: str) -> Any:
                return await client.send_group_text("0x" + conv.hex(), text)

        except UnknownContact:
            peer = client.resolve_peer(to)
            if peer.identity_id == client.identity_id:  # (before a conversation is made)
                raise NotAPeer("cannot chat with yourself: name someone else or a group") from None
            # the local conversation, made if there is none yet (as the API's
            # conversation_id does): marked read, and the peer's typing shows before any message
            conv = direct_conversation_id(client.identity_id, peer.identity_id)
            client.store.ensure_conversation(
                conv, "direct", peer.identity_id, None, client.clock_ms()
            )
            title = peer.display or hx(peer.identity_id)
            client.store.set_peer_display(peer.identity_id, peer.display, client.clock_ms())

            async def send(text: str) -> Any:
                return await client.send_text("0x" + peer.identity_id.hex(), text)

        shown_status: dict[bytes, str] = {}
        for m in client.history(conv, 10):
            screen.show(message_line(client, m))
            if m.outgoing:
                shown_status[m.message_id] = m.status
        await client.mark_read(conv)
        await client.flush_features()
        screen.show(
            f"— chatting with {one_line(title)}; type a line and press Enter, Ctrl-D to leave —"
        )
        # from here on a line the network does not take at once is saved and says so (the
        # outbox sends it when the network is back): the chat never waits out an outage
        client.publish_timeout = CHAT_PUBLISH_TIMEOUT_S
        typing = TypingShown()
        sending = asyncio.Lock()  # one sender of the outbox at a time: lines go out in order
        offline = False  # the network did not take something: what waits is retried
        failed_at = 0.0  # when it last did not (monotonic)

        def preview(m: Any) -> str:
            text = str(client.view(m).text)
            return text if len(text) <= 40 else text[:39] + "…"

        def receipt_marks(r: Any) -> None:
            _kind, ids = content.decode_receipt(r.body)
            for mid in ids:
                m = client.store.message(conv, mid)
                if m is None or not m.outgoing or shown_status.get(mid) == m.status:
                    continue
                shown_status[mid] = m.status
                who = name_of(client, r.sender_identity)
                screen.show(f"  {MARKS.get(m.status, m.status)} ({who}): {preview(m)}")

        def gone_out() -> None:
            """Lines saved while the network was away that went out since: their new mark."""
            for mid, was in list(shown_status.items()):
                if was != "sending":
                    continue
                m = client.store.message(conv, mid)
                if m is not None and m.status != "sending":
                    shown_status[mid] = m.status
                    screen.show(f"  {MARKS.get(m.status, m.status)}: {preview(m)}")

        def check_installation() -> None:
            nonlocal replaced
            try:
                client.check_installation()
            except InstallationReplaced as exc:
                replaced = True
                raise InstallationReplaced(f"chat stopped: {exc}; start chat again") from None

        async def incoming() -> None:
            async for r in client.listen(signals=True):
                if r.conversation_id != conv:
                    c = client.store.conversation(r.conversation_id)
                    if r.content_type in content.MESSAGE_TYPES and not (c and c.muted):
                        screen.show(
                            f"(new message from {name_of(client, r.sender_identity)} "
                            "in another conversation)"
                        )
                    continue
                device = (r.sender_identity, r.sender_installation)
                if r.content_type == ContentType.TYPING:
                    if typing.signal(*device, r.body == b"\x01", time.monotonic()):
                        screen.show(f"… {name_of(client, r.sender_identity)} is typing")
                elif r.content_type == ContentType.RECEIPT:
                    receipt_marks(r)
                else:
                    typing.wrote(*device)
                    screen.show(message_line(client, r))
                    if not r.outgoing:
                        await client.mark_read(conv, now=False)  # receipts: batched

        async def flusher() -> None:
            nonlocal offline, failed_at
            checked = time.monotonic()
            while True:
                await asyncio.sleep(0.3)
                if time.monotonic() - checked >= CHAT_INSTALLATION_CHECK_S:
                    check_installation()
                    checked = time.monotonic()
                trouble = False
                async with sending:
                    if offline and time.monotonic() - failed_at < CHAT_RETRY_S:
                        continue
                    try:
                        if offline:  # everything that waits, in order: the network may be back
                            await client.flush_outbox()
                        # receipts wait a moment for one of our messages to carry them
                        await client.flush_features(due_only=True)
                    except FrameRefused as exc:  # the network is up; that frame is not taken
                        offline = False
                        screen.show(f"(refused by the delivery network: {exc})")
                    except TransportError as exc:  # the frames wait in the outbox
                        if not offline:
                            screen.show(f"(not sent yet: {exc})")
                        offline, failed_at = True, time.monotonic()
                        continue
                    except Exception as exc:
                        screen.show(f"(not sent yet: {exc})")
                        trouble = True
                    else:
                        offline = False
                        gone_out()
                if trouble:  # (not holding the lock: lines typed go on meanwhile)
                    await asyncio.sleep(5)

        async def typed(text: str) -> None:
            nonlocal offline, failed_at
            try:
                res = await send(text)
                offline = False
                gone_out()  # what was saved before went out first
                shown_status[res.message_id] = "sent"
                # the line typed was erased on Enter (raw) or never shown (pipe): the
                # message as sent takes its place, as the messages that arrive show
                m = client.store.message(conv, res.message_id)
                if m is not None:
                    shown_status[res.message_id] = m.status
                    screen.show(message_line(client, m))
            except DeliveryPending as exc:  # saved: typing it again would send it twice
                offline, failed_at = True, time.monotonic()
                mid = exc.result.message_id  # type: ignore[attr-defined]  # a SendResult here
                shown_status[mid] = "sending"
                screen.show(
                    f"(not sent yet: saved as {hx(mid)}, it goes out when the network is "
                    f"back: {exc})"
                )
            except Exception as exc:
                screen.show(f"error: not sent: {exc}")

        # lines typed are sent one at a time, in order, by this task: typing (and Ctrl-D)
        # never waits for the network
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        async def sender() -> None:
            while (text := await lines.get()) is not None:
                check_installation()  # not as a device the home no longer is
                async with sending:
                    await typed(text)

        async def enqueue(text: str) -> None:
            lines.put_nowait(text)

        async def typing_signal() -> None:
            try:
                await client.send_typing(conv)
            except Exception:  # an indicator is best effort
                pass

        listener = asyncio.create_task(incoming())
        flush_task = asyncio.create_task(flusher())
        send_task = asyncio.create_task(sender())
        watched = {listener, flush_task, send_task}
        loop = asyncio.get_running_loop()
        try:
            if raw:
                await _raw_input(loop, screen, enqueue, typing_signal, watched)
            else:
                await _pipe_input(loop, enqueue, watched)
            lines.put_nowait(None)  # the lines typed so far go first
            running = set(watched)
            while not send_task.done():
                _, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                _raise_failed(watched)
        finally:
            for t in (listener, flush_task, send_task):
                t.cancel()
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass
            if not replaced:
                try:  # what is still queued goes now (queued receipts live in memory only)
                    await client.flush_features()
                except Exception:  # offline: the senders retransmit and we acknowledge later
                    pass
        screen.buf = ""
        screen.show("— bye —")
    finally:
        await client.aclose()


def _raise_failed(tasks: set[asyncio.Task[None]]) -> None:
    """Raise the error of a task of ``tasks`` that failed (the chat ends with it)."""
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]


async def _next_chunk(
    chunks: asyncio.Queue[bytes], watched: set[asyncio.Task[None]]
) -> bytes | None:
    """The next chunk of input, or None once a task of ``watched`` ended first (its error
    is raised)."""
    getter = asyncio.ensure_future(chunks.get())
    done, _ = await asyncio.wait({getter, *watched}, return_when=asyncio.FIRST_COMPLETED)
    if getter not in done:
        getter.cancel()
        _raise_failed(watched)
        return None
    return getter.result()


async def _pipe_input(
    loop: asyncio.AbstractEventLoop,
    typed: Callable[[str], Any],
    watched: set[asyncio.Task[None]],
) -> None:
    """Read lines from a pipe (or file) until its end, or until a task of ``watched`` ends."""
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    try:
        fd = sys.stdin.fileno()

        def readable() -> None:
            data = os.read(fd, 65536)
            if not data:
                loop.remove_reader(fd)
            chunks.put_nowait(data)

        loop.add_reader(fd, readable)
    except (OSError, ValueError):  # a regular file, /dev/null: reading one never waits
        while (line := await loop.run_in_executor(None, sys.stdin.readline)) != "":
            text = line.rstrip("\n")
            if text.strip():
                await typed(text)
            _raise_failed(watched)
        return
    encoding = sys.stdin.encoding or "utf-8"
    buf = b""
    try:
        while (data := await _next_chunk(chunks, watched)) is not None:
            buf += data if data else b"\n"  # (the end: a last line without its newline)
            *complete, buf = buf.split(b"\n")
            for line in complete:
                text = line.decode(encoding, errors="surrogateescape")
                if text.strip():
                    await typed(text)
            if not data:
                return
    finally:
        loop.remove_reader(fd)


async def _raw_input(
    loop: asyncio.AbstractEventLoop,
    screen: Screen,
    typed: Callable[[str], Any],
    typing_signal: Callable[[], Any],
    watched: set[asyncio.Task[None]],
) -> None:
    """Read keystrokes (cbreak mode): echo them, send a typing indicator, Enter sends.
    Returns at Ctrl-D (or the end of input), or when a task of ``watched`` ends."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    keys: asyncio.Queue[bytes] = asyncio.Queue()
    pending: set[asyncio.Future[Any]] = set()
    tty.setcbreak(fd)
    loop.add_reader(fd, lambda: keys.put_nowait(os.read(fd, 1024)))
    try:
        while (chunk := await _next_chunk(keys, watched)) is not None:
            if not chunk:
                return
            for ch in chunk.decode("utf-8", errors="ignore"):
                if ch == "\x04":
                    if not screen.buf:
                        return
                elif ch in "\r\n":
                    text, screen.buf = screen.buf, ""
                    sys.stdout.write("\r\x1b[K")
                    sys.stdout.flush()
                    if text.strip():
                        await typed(text)
                elif ch in "\x7f\x08":
                    if screen.buf:
                        screen.buf = screen.buf[:-1]
                        sys.stdout.write("\b \b")
                        sys.stdout.flush()
                elif ch.isprintable():
                    screen.buf += ch
                    sys.stdout.write(ch)
                    sys.stdout.flush()
                    task = asyncio.ensure_future(typing_signal())
                    pending.add(task)
                    task.add_done_callback(pending.discard)
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


COMMANDS = [
    contacts,
    requests,
    conversations,
    edit,
    delete,
    react,
    reply,
    search,
    receipts,
    typing,
    chat,
]
