"""CLI groups for the identity model: ``devices``, ``keys``, ``recovery``, ``bind``, ``backup``.

Registered from :mod:`cli.main`. Secrets other than the passphrase come from the environment
(for scripts) or a hidden prompt: ``LOGOS_CHAT_RECOVERY_PHRASE``, ``LOGOS_CHAT_WALLET_KEY``,
``LOGOS_CHAT_BACKUP_PASSPHRASE``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from cli.main import EXIT_AUTH, Ctx, _clock, _with_json, emit, fail, guarded, hx, passphrase


def _secret(env: str, prompt: str) -> str:
    v = os.environ.get(env)
    if v is not None:
        return v
    if not sys.stdin.isatty():
        fail(f"no {prompt.lower()}: set {env} or run in a terminal", EXIT_AUTH)
    value: str = click.prompt(prompt, hide_input=True, err=True)
    return value


def open_client(ctx: Ctx, pw: str) -> Any:
    """Open this home's client; a device waiting to be linked finishes linking first."""
    from chatcore.client import Client
    from chatcore.errors import NotInitialised
    from chatcore.home import Home

    home = Home(ctx.home)
    if not home.meta_file.exists():
        return Client.open(ctx.home, pw, ctx.network())  # (says what is missing)
    if home.keystore_file.exists():
        # made by init, or linked. Or a link killed after it saved the handover's owner
        # key, before it took the identity: Client.open says the home holds no identity
        # (every command said so, for good), and the link is finished below
        try:
            return Client.open(ctx.home, pw, ctx.network())
        except NotInitialised:
            from chatcore.identity import link_pending

            if not link_pending(ctx.home, pw):
                raise
    from chatcore.identity import finish_link, link_pending, linked_identity

    if link_pending(ctx.home, pw):
        res = asyncio.run(finish_link(ctx.home, pw, ctx.network()))
        if res is None and linked_identity(ctx.home, pw) is None:
            raise NotInitialised(
                "this device is waiting to be approved: run "
                "'logos-chat devices approve CODE' on one of your other devices"
            )
        if res is not None:  # (else another command on this home took the approval)
            click.echo(
                f"linked this device to identity {hx(res.identity_id)}"
                + (f" ({', '.join(res.names)})" if res.names else "")
                + f"; {res.messages_imported} message(s) of history received",
                err=True,
            )
    return Client.open(ctx.home, pw, ctx.network())


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


# ----------------------------------------------------------------------------------------------
# devices
# ----------------------------------------------------------------------------------------------
@click.group()
def devices() -> None:
    """Your devices (installations): link, approve, list, revoke."""


@devices.command("link")
@click.option("--wait", is_flag=True, help="Block until another device approves the code.")
@click.option("--timeout", type=click.IntRange(1), default=600, help="With --wait: seconds.")
@_with_json
@click.pass_obj
@guarded
def devices_link(ctx: Ctx, wait: bool, timeout: int) -> None:
    """Make this (new) home a device of an existing identity: prints a pairing code."""
    source = click.get_current_context().get_parameter_source("timeout")
    if not wait and source == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--timeout goes with --wait")
    from chatcore.identity import finish_link, linked_identity, start_link

    pw = passphrase()
    network = ctx.network()
    res = start_link(ctx.home, pw, network)
    doc: dict[str, Any] = {
        "code": res.code,
        "installation_id": hx(res.installation_id),
        "expires": res.expires,
        "linked": False,
    }
    text = (
        f"pairing code (valid until {_clock(res.expires)}):\n"
        f"{res.code}\n\nOn a device that already has your identity, run:\n"
        f"  logos-chat devices approve <code>\n"
        "This device finishes linking on its next network command (e.g. 'logos-chat sync')."
    )
    if wait:
        if ctx.json:  # the one JSON document comes at the end; the code is needed now
            click.echo(f"pairing code: {res.code}", err=True)
        else:
            click.echo(text)
        deadline = time.monotonic() + timeout
        linked: tuple[bytes, tuple[str, ...]] | None = None
        while linked is None:
            got = _run(finish_link(ctx.home, pw, network))
            if got is not None:
                linked = (got.identity_id, got.names)
            elif (taken := linked_identity(ctx.home, pw)) is not None:
                # another command on this home ('sync', as the text above says) took the
                # approval: linked all the same (that command finishes it)
                linked = (taken, _names_of(ctx, pw, network, taken))
            elif time.monotonic() >= deadline:
                fail("not approved in time (the code stays valid until it expires)", 1)
            else:
                time.sleep(1.0)
        identity_id, names = linked
        doc.update(linked=True, identity_id=hx(identity_id), names=list(names))
        text = f"linked to identity {hx(identity_id)}" + (f" ({', '.join(names)})" if names else "")
    emit(ctx, doc, text)


def _names_of(ctx: Ctx, pw: str, network: Any, identity_id: bytes) -> tuple[str, ...]:
    """The names of an identity, from the chain (none if it cannot be asked just now)."""
    from chatcore.client import Client
    from chatcore.errors import ChatCoreError
    from discovery.errors import DiscoveryError

    try:
        client = Client.open(ctx.home, pw, network)
    except (ChatCoreError, DiscoveryError):
        return ()
    try:
        client.sync_directory()
        return tuple(client.resolver.resolve_id(identity_id, fresh_prekeys=False).names)
    except (ChatCoreError, DiscoveryError):
        return ()
    finally:
        client.close()


@devices.command("approve")
@click.argument("code")
@_with_json
@click.pass_obj
@guarded
def devices_approve(ctx: Ctx, code: str) -> None:
    """Authorise a new device from its pairing CODE: register it on chain, hand it over."""
    from chatcore.identity import approve

    pw = passphrase()
    client = open_client(ctx, pw)

    async def go() -> Any:
        try:
            return await approve(client, pw, code)
        finally:
            await client.aclose()

    res = _run(go())
    emit(
        ctx,
        {"installation_id": hx(res.installation_id), "gas_used": res.gas_used,
         "handover_bytes": res.handover_bytes},
        f"approved device {hx(res.installation_id)} ({res.gas_used} gas); it finishes linking "
        "on its next network command",
    )  # fmt: skip


def _device_doc(d: Any) -> dict[str, Any]:
    return {
        "installation_id": hx(d.installation_id),
        "status": d.status,
        "this_device": d.this_device,
        "added_block": d.added_block,
        "revoked_block": d.revoked_block,
        "bundle_seq": d.bundle_seq,
    }


@devices.command("list")
@_with_json
@click.pass_obj
@guarded
def devices_list(ctx: Ctx) -> None:
    """Every installation of your identity with its status (active, pending, revoked)."""
    from chatcore.identity import list_devices

    client = open_client(ctx, passphrase())
    try:
        devs = list_devices(client)
    finally:
        client.close()
    docs = [_device_doc(d) for d in devs]
    lines = [
        f"{'*' if d['this_device'] else ' '} {d['installation_id']}  {d['status']:<8}"
        + (f" added at block {d['added_block']}" if d["added_block"] is not None else "")
        + (f", revoked at block {d['revoked_block']}" if d["revoked_block"] is not None else "")
        for d in docs
    ]
    emit(ctx, docs, "\n".join(lines) + "\n(* = this device)")


@devices.command("revoke")
@click.argument("installation")
@click.option(
    "--recovery", "use_phrase", is_flag=True,
    help="Sign with the recovery phrase (env LOGOS_CHAT_RECOVERY_PHRASE) instead of a device.",
)  # fmt: skip
@click.option(
    "--this-device", "this_device", is_flag=True,
    help="Allow revoking the device you run this on (it is locked out for good).",
)  # fmt: skip
@click.option(
    "--force", is_flag=True,
    help="With --this-device: do not wait for receipts of what this device sent.",
)  # fmt: skip
@_with_json
@click.pass_obj
@guarded
def devices_revoke(
    ctx: Ctx, installation: str, use_phrase: bool, this_device: bool, force: bool
) -> None:
    """Revoke INSTALLATION (id or unique hex prefix): peers stop using it, reject its frames."""
    from chatcore.identity import revoke, revoke_with_phrase

    mine = None
    if use_phrase:
        phrase = _secret("LOGOS_CHAT_RECOVERY_PHRASE", "Recovery phrase")
        ident, target, gas = revoke_with_phrase(ctx.network(), phrase, installation)
    else:
        pw = passphrase()
        client = open_client(ctx, pw)
        try:
            ident, mine = client.identity_id, client.installation_id
            target, gas = revoke(
                client, pw, installation, allow_this_device=this_device, force=force
            )
        finally:
            client.close()
    text = f"revoked device {hx(target)} ({gas} gas)"
    if target != mine:
        # every linked device holds the owner key (design.md): revoking takes the device's
        # keys off the chain, not the owner key it keeps, with which it can still add and
        # revoke devices. Rotating it now (not before: an active device is sent the new one)
        # leaves the revoked device with a key that no longer counts.
        text += (
            "\nit still holds your owner key: if it was lost or stolen, run"
            " 'logos-chat keys rotate --owner' now (your other devices get the new key on"
            " their next sync)"
        )
    emit(
        ctx,
        {"identity_id": hx(ident), "installation_id": hx(target), "status": "revoked",
         "gas_used": gas},
        text,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# keys
# ----------------------------------------------------------------------------------------------
@click.group()
def keys() -> None:
    """Rotate keys: signed prekey (default), installation keys, owner account."""


@keys.command("rotate")
@click.option("--installation", "inst", is_flag=True, help="New device keys.")
@click.option("--owner", "owner", is_flag=True, help="New owner account.")
@click.option(
    "--force",
    is_flag=True,
    help="With --installation: rotate even while sent messages wait for receipts "
    "(recipients that have not fetched them yet will drop them; they show as 'failed').",
)
@_with_json
@click.pass_obj
@guarded
def keys_rotate(ctx: Ctx, inst: bool, owner: bool, force: bool) -> None:
    """Rotate keys; the identity, contacts and history stay.

    Without an option: a new signed prekey. One rotation per command. --installation
    refuses while messages sent from this device wait for receipts (they would be lost
    to recipients that have not fetched them): sync later, or --force (they are then
    'failed' in history; a receipt still coming in moves one on)."""
    from chatcore.identity import rotate_installation, rotate_owner, rotate_prekey

    if inst and owner:
        raise ValueError("rotate one thing per command: --installation or --owner")
    if force and not inst:
        raise click.UsageError("--force goes with --installation")
    what = "installation" if inst else "owner" if owner else None

    pw = passphrase()
    client = open_client(ctx, pw)
    if what == "installation":

        async def go() -> Any:
            new_client = None
            try:
                res, new_client = await rotate_installation(client, pw, force)
                return res
            finally:
                if new_client is not None:
                    await new_client.aclose()
                else:
                    await client.aclose()

        res = _run(go())
    else:

        async def rotate() -> Any:
            from chatcore.errors import TransportError

            try:
                res = rotate_owner(client, pw) if what == "owner" else rotate_prekey(client, pw)
                if what == "owner":
                    try:  # the new owner key, E2E-encrypted to our other devices
                        await client.flush_outbox()
                    except TransportError:
                        pass  # it stays in the outbox; the next send or sync delivers it
                return res
            finally:
                await client.aclose()

        res = _run(rotate())
    emit(
        ctx,
        {"rotated": res.what, "old": res.old, "new": res.new, "gas_used": res.gas_used},
        f"rotated {res.what}: {res.old} -> {res.new} ({res.gas_used} gas)",
    )


# ----------------------------------------------------------------------------------------------
# recovery
# ----------------------------------------------------------------------------------------------
@click.group()
def recovery() -> None:
    """Recovery phrase: replace it, or restore your identity with it on a new home."""


@recovery.command("restore")
@_with_json
@click.pass_obj
@guarded
def recovery_restore(ctx: Ctx) -> None:
    """Every device lost: regain control with the phrase (env LOGOS_CHAT_RECOVERY_PHRASE),
    revoke the lost devices and register this home as a new one."""
    from chatcore.identity import restore

    phrase = _secret("LOGOS_CHAT_RECOVERY_PHRASE", "Recovery phrase")
    pw = passphrase(confirm=True)
    client, res = restore(ctx.home, pw, ctx.network(), phrase)
    client.close()
    emit(
        ctx,
        {"identity_id": hx(res.identity_id), "installation_id": hx(res.installation_id),
         "owner": res.owner, "revoked": [hx(r) for r in res.revoked], "names": list(res.names),
         "gas_used": res.gas_used},
        f"restored identity {hx(res.identity_id)}"
        + (f" ({', '.join(res.names)})" if res.names else "")
        + f"\nnew device {hx(res.installation_id)}, new owner {res.owner}\n"
        f"revoked {len(res.revoked)} lost device(s). History: 'logos-chat backup import FILE'.",
    )  # fmt: skip


@recovery.command("phrase")
@click.option(
    "--yes", is_flag=True,
    help="Do not ask (needed without a terminal): the current phrase stops working once the "
    "change is confirmed.",
)  # fmt: skip
@_with_json
@click.pass_obj
@guarded
def recovery_phrase(ctx: Ctx, yes: bool) -> None:
    """Replace the recovery phrase with a new one (shown once).

    The registry delays the change (3 days on the devnet's registry): the current phrase
    stays in force, and can cancel it, until 'recovery confirm' after the delay. So a thief
    holding one of your devices cannot lock your recovery out."""
    from eth_account import Account

    from chatcore.identity import change_recovery
    from cli.main import _ts

    if not yes:
        if not sys.stdin.isatty():
            fail(
                "this replaces your recovery phrase once confirmed (after the registry's "
                "delay): pass --yes to go on"
            )
        if not click.confirm(
            "Your current recovery phrase will stop working once the change is confirmed "
            "(after the registry's delay; until then it can cancel it). Make a new one?",
            err=True,
        ):
            fail("nothing changed")
    pw = passphrase()
    client = open_client(ctx, pw)
    try:
        Account.enable_unaudited_hdwallet_features()
        acct, phrase = Account.create_with_mnemonic()
        res = change_recovery(client, pw, acct)
    finally:
        client.close()
    if res.pending:
        assert res.ready_at is not None
        status = (
            f"proposed: it takes effect with 'logos-chat recovery confirm' from "
            f"{_ts(res.ready_at)}.\nUntil then keep your current phrase: it alone restores "
            "your identity, and it can cancel this change ('recovery cancel --recovery')."
        )
    else:
        status = "in force now."
    emit(
        ctx,
        {"recovery": acct.address, "recovery_phrase": phrase, "pending": res.pending,
         "ready_at": res.ready_at, "gas_used": res.gas_used},
        f"new recovery account {acct.address}, {status}\n\n"
        f"New recovery phrase (shown once; write it down):\n  {phrase}",
    )  # fmt: skip


@recovery.command("confirm")
@_with_json
@click.pass_obj
@guarded
def recovery_confirm(ctx: Ctx) -> None:
    """Put a proposed recovery phrase in force, once the registry's delay has passed.

    A change not proposed from this device gets a warning on stderr, as 'sync' gives: it
    can still be cancelled ('recovery cancel --recovery') if it cannot be confirmed yet,
    and once in force, it says so."""
    from chatcore.identity import confirm_recovery_change
    from cli.main import _foreign_recovery_change, _warn_recovery_change

    pw = passphrase()
    client = open_client(ctx, pw)
    try:
        # a change another device proposed (or a thief holding one): said as 'sync' says it
        foreign = _foreign_recovery_change(client)
        try:
            res = confirm_recovery_change(client, pw)
        except Exception:
            if foreign is not None:  # not in force: it can still be cancelled
                _warn_recovery_change(client, foreign)
            raise
    finally:
        client.close()
    if foreign is not None and foreign.recovery.lower() == res.recovery.lower():
        click.echo(
            f"warning: the recovery account now in force, {res.recovery}, was not proposed "
            "from this device — if you did not propose it from another device of yours, "
            "someone holds one of them",
            err=True,
        )
    emit(
        ctx,
        {"recovery": res.recovery, "gas_used": res.gas_used},
        f"recovery account {res.recovery} in force; the previous phrase no longer works",
    )


@recovery.command("cancel")
@click.option(
    "--recovery", "use_phrase", is_flag=True,
    help="Cancel with the current recovery phrase (env LOGOS_CHAT_RECOVERY_PHRASE), "
    "no device needed: for a change you did not make.",
)  # fmt: skip
@_with_json
@click.pass_obj
@guarded
def recovery_cancel(ctx: Ctx, use_phrase: bool) -> None:
    """Cancel a proposed recovery change (yours, or a thief's holding one of your devices)."""
    from chatcore.identity import cancel_recovery_change

    if use_phrase:
        phrase = _secret("LOGOS_CHAT_RECOVERY_PHRASE", "Recovery phrase")
        ident, cancelled, gas = cancel_recovery_change(ctx.network(), phrase=phrase)
    else:
        pw = passphrase()
        client = open_client(ctx, pw)
        try:
            ident, cancelled, gas = cancel_recovery_change(
                ctx.network(), client=client, passphrase=pw
            )
        finally:
            client.close()
    emit(
        ctx,
        {"identity_id": hx(ident), "cancelled": cancelled, "gas_used": gas},
        f"cancelled the change of recovery account to {cancelled}",
    )


@recovery.command("status")
@_with_json
@click.pass_obj
@guarded
def recovery_status_cmd(ctx: Ctx) -> None:
    """The recovery account on chain and any proposed change (warns if not made here)."""
    from chatcore.identity import recovery_status
    from cli.main import _ts

    pw = passphrase()
    client = open_client(ctx, pw)
    try:
        st = recovery_status(client)
    finally:
        client.close()
    lines = [f"recovery account: {st['recovery']}"]
    p = st["pending"]
    if p is not None:
        when = "now" if p["ready"] else f"from {_ts(p['ready_at'])}"
        lines.append(f"proposed change to {p['recovery']}: can be confirmed {when}")
        if not p["proposed_here"]:
            lines.append(
                "WARNING: not proposed from this home. If it is not yours, someone holds one of "
                "your devices: run 'logos-chat recovery cancel --recovery', or "
                "'recovery restore' with your current phrase"
            )
    emit(ctx, st, "\n".join(lines))


# ----------------------------------------------------------------------------------------------
# backup (history export / import)
# ----------------------------------------------------------------------------------------------
@click.group()
def backup() -> None:
    """Encrypted history backup: export to a file, import on a new device."""


def _backup_secret(use_phrase: bool, pw: str) -> str:
    if use_phrase:
        return _secret("LOGOS_CHAT_RECOVERY_PHRASE", "Recovery phrase")
    return os.environ.get("LOGOS_CHAT_BACKUP_PASSPHRASE") or pw


_phrase_opt = click.option(
    "--phrase", "use_phrase", is_flag=True,
    help="Protect with the recovery phrase (env LOGOS_CHAT_RECOVERY_PHRASE), not the passphrase.",
)  # fmt: skip


@backup.command("export")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@_phrase_opt
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@_with_json
@click.pass_obj
@guarded
def backup_export(ctx: Ctx, file: Path, use_phrase: bool, force: bool = False) -> None:
    """Write conversations, contacts and messages to FILE, encrypted (scrypt + AES-GCM).
    An existing FILE (an earlier backup) is replaced only with --force."""
    from chatcore.identity import export_backup

    if file.exists() and not force:
        raise ValueError(f"{file} exists: 'backup export {file} --force' replaces it")
    pw = passphrase()
    client = open_client(ctx, pw)
    try:
        n = export_backup(client, file, _backup_secret(use_phrase, pw), phrase=use_phrase)
    finally:
        client.close()
    emit(ctx, {"file": str(file), "messages": n}, f"exported {n} message(s) to {file}")


@backup.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@_phrase_opt
@_with_json
@click.pass_obj
@guarded
def backup_import(ctx: Ctx, file: Path, use_phrase: bool) -> None:
    """Merge an exported backup into this home (duplicates are skipped).

    Its contacts, blocks and read state come along, all or nothing: what someone the backup
    blocks (or declines) wrote here after the block began (messages, edits, reactions) goes,
    as the block would have dropped it (not what the backup holds); a request it makes a
    contact gets read receipts for what was read."""
    from chatcore.identity import import_backup

    pw = passphrase()
    client = open_client(ctx, pw)
    try:
        n = import_backup(client, file, _backup_secret(use_phrase, pw), phrase=use_phrase)
    finally:
        client.close()
    emit(ctx, {"file": str(file), "imported": n}, f"imported {n} message(s) from {file}")


# ----------------------------------------------------------------------------------------------
# bind
# ----------------------------------------------------------------------------------------------
@click.group()
def bind() -> None:
    """Bind external identities: wallets, names, domains."""


@bind.command("wallet")
@click.argument("address", required=False)
@click.option("--signature", default=None, help="The wallet's EIP-712 LinkWallet signature (hex).")
@click.option("--deadline", type=int, default=None, help="The deadline the wallet signed.")
@click.option("--unlink", is_flag=True, help="Remove the link instead.")
@click.option(
    "--typed-data", "typed", is_flag=True, help="Print the typed data to sign; send nothing."
)
@_with_json
@click.pass_obj
@guarded
def bind_wallet_cmd(
    ctx: Ctx, address: str | None, signature: str | None, deadline: int | None, unlink: bool,
    typed: bool,
) -> None:  # fmt: skip
    """Link another Ethereum account. The wallet consents by signing EIP-712 LinkWallet: with
    its key in LOGOS_CHAT_WALLET_KEY, or pass ADDRESS --signature --deadline from a wallet."""
    from eth_account import Account

    from chatcore.identity import (
        SIG_TTL_S,
        bind_wallet,
        unbind_wallet,
        wallet_link_signature,
    )
    from discovery.eip712 import typed_data

    if address is not None and not (
        len(address) == 42
        and address[:2] in ("0x", "0X")
        and all(c in "0123456789abcdefABCDEF" for c in address[2:])
    ):
        fail(f"{address!r} is not an address (0x + 40 hex)")
    pw = passphrase()
    client = open_client(ctx, pw)
    try:
        reg = client.registry
        if unlink:
            if not address:
                fail("bind wallet --unlink needs the wallet ADDRESS")
            gas = unbind_wallet(client, pw, address)
            emit(ctx, {"wallet": address, "linked": False, "gas_used": gas},
                 f"unlinked wallet {address} ({gas} gas)")  # fmt: skip
            return
        if typed:
            if not address:
                fail("bind wallet --typed-data needs the wallet ADDRESS")
            dl = deadline or reg.latest_timestamp() + SIG_TTL_S
            msg = {"id": hx(client.identity_id), "wallet": address,
                   "nonce": reg.nonce_of(address), "deadline": dl}  # fmt: skip
            doc = typed_data("LinkWallet", msg, client.network.chain_id, reg.identity.address)
            emit(ctx, doc, json.dumps(doc, indent=2))
            return
        if signature is None:
            key = _secret("LOGOS_CHAT_WALLET_KEY", "Wallet private key (hex)")
            try:
                wallet = Account.from_key(key)
            except (ValueError, TypeError):
                fail("LOGOS_CHAT_WALLET_KEY is not a private key (64 hex digits)")
            if address and address.lower() != wallet.address.lower():
                fail("LOGOS_CHAT_WALLET_KEY is not the key of ADDRESS")
            address = wallet.address
            deadline = reg.latest_timestamp() + SIG_TTL_S
            sig = wallet_link_signature(wallet, client.identity_id, client.network, reg, deadline)
        else:
            if not address or deadline is None:
                fail("--signature needs ADDRESS and --deadline")
            sig = bytes.fromhex(signature.removeprefix("0x"))
        gas = bind_wallet(client, pw, address, sig, deadline)
    finally:
        client.close()
    emit(ctx, {"wallet": address, "linked": True, "gas_used": gas},
         f"linked wallet {address} ({gas} gas): 'lookup {address}' now finds you")  # fmt: skip


@bind.command("name")
@click.argument("name")
@click.option("--release", is_flag=True, help="Give the name up.")
@_with_json
@click.pass_obj
@guarded
def bind_name(ctx: Ctx, name: str, release: bool) -> None:
    """Claim NAME (commit-reveal) or release it."""
    from discovery.resolver import parse_query

    kind, norm = parse_query(name)
    if kind != "name":
        fail(f"{name!r} is not a valid name")
    pw = passphrase()
    client = open_client(ctx, pw)
    try:
        if release:
            if client.registry.name_owner(norm) != client.identity_id:
                fail(f"the name {norm!r} is not yours", 1)
            client.registry.release_name(client._owner(pw), norm)
        elif client.registry.name_owner(norm) == client.identity_id:
            fail(f"the name {norm!r} is already yours", 1)
        else:
            client.claim_name(pw, norm)
    finally:
        client.close()
    emit(ctx, {"name": norm, "claimed": not release},
         f"{'released' if release else 'claimed'} the name {norm}")  # fmt: skip


@bind.command("domain")
@click.argument("domain")
@click.option(
    "--print", "print_doc", is_flag=True,
    help="Print the JSON to serve at https://DOMAIN/.well-known/logos-chat.json.",
)  # fmt: skip
@_with_json
@click.pass_obj
@guarded
def bind_domain_cmd(ctx: Ctx, domain: str, print_doc: bool) -> None:
    """Prove control of DOMAIN: https://DOMAIN/.well-known/logos-chat.json must carry the
    owner-signed statement that 'bind domain DOMAIN --print' shows."""
    from chatcore.identity import bind_domain, domain_document

    pw = passphrase()
    client = open_client(ctx, pw)
    try:
        if print_doc:
            doc = domain_document(client, pw, domain)
            emit(ctx, doc, json.dumps(doc, indent=2))
            return
        doc = bind_domain(client, domain)
    finally:
        client.close()
    emit(ctx, {"domain": domain.lower(), "verified": True, "document": doc},
         f"verified: {domain} belongs to identity {doc['identity_id']}")  # fmt: skip


COMMANDS = (devices, keys, recovery, backup, bind)
