"""``chatcore.Client``: the one facade apps and the CLI use.

It wires the pure engine to its adapters: the encrypted SQLite store, the chain (registry,
local index, resolver), and the delivery network (a :class:`~chatcore.transport.Transport`).
Chain calls are blocking (web3) and run in a worker thread from the async methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NoReturn, TypeVar, cast

from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from chatcore.consts import PREKEY_GRACE_S
from chatcore.content import (
    ContactState,
    check_alias,
    check_str,
    check_text,
    encode_delete,
    encode_edit,
    encode_reaction,
    encode_reply,
)
from chatcore.directory import ChainDirectory, to_peer
from chatcore.engine import Engine, OutFrame, OwnIdentity, Peer, Received, SendResult
from chatcore.errors import (
    AmbiguousName,
    ChatCoreError,
    DeliveryPending,
    DuplicateMessage,
    FrameRefused,
    InitIncomplete,
    InitInterrupted,
    InstallationReplaced,
    NotAMessageId,
    NotAPeer,
    NotInitialised,
    StoreError,
    StoreUnavailable,
    TransportError,
    UnknownContact,
    UnknownMessage,
    UntrustedIdentity,
    WrongPassphrase,
)
from chatcore.features import Contact, MessageView
from chatcore.groupchat import ID_LIKE, GroupInfo, NotYet, check_group_name, group_topic
from chatcore.home import Home
from chatcore.keys import InstallationKeys, SignedPrekey
from chatcore.payload import ContentType
from chatcore.store import Conversation, Store, StoredMessage, store_error
from chatcore.transport.base import Transport
from discovery.errors import DiscoveryError, RecordNotFound, RegistryReverted
from discovery.index import Index
from discovery.network import NetworkConfig
from discovery.records import IntroBundle, PqKeyRecord
from discovery.registry import Registry, identity_id_for, name_commitment
from discovery.resolver import ChainSource, ResolvedIdentity, Resolver

log = logging.getLogger("chatcore.client")
_T = TypeVar("_T")

PREKEY_TTL_S = 14 * 86400
#: the longest signed-prekey lifetime ``publish``/``init`` take (a year)
PREKEY_TTL_MAX_S = 365 * 86400
#: a signed prekey is replaced (``refresh_prekey_if_due``) once less than this share of its
#: lifetime is left: 3.5 days of the default 14
PREKEY_REFRESH_SHARE = 4
#: meta: "block:bundle hash" of the last bundle renewal the chain took (see _renewal_dropped)
RENEWAL_META = "bundle_renewal"
PQ_KEY_TTL_S = 90 * 86400
DEV_FUNDING_WEI = 10**18  # 1 ETH from the devnet faucet
MIN_BALANCE_WEI = 10**16
RETRY_BACKOFF_MS = (1_000, 5_000, 30_000, 120_000)
# how stale the on-chain index may be when sending (revocations reach senders within this)
DIRECTORY_MAX_AGE_MS = 1_000
#: after the chain failed to answer (whether an unknown sender exists, or before a send): do
#: not ask again for frames like it, or before sends, for this long (each attempt may take
#: the RPC timeout)
CHAIN_RETRY_MS = 30_000
#: secret: the new owner key of an owner rotation under way here (see ``_owner``)
OWNER_ROTATING = "owner_key_rotating"
#: set by init just before it sends the registration (the bundle it sends; the recovery
#: phrase is kept as a secret beside it) until init did all its steps (registration, post-
#: quantum key record, name) and hands its result, with the phrase, to its caller: a process
#: that died before then leaves a home the next init finishes (and shows the phrase of)
INIT_BUNDLE = "init_bundle"
INIT_PHRASE = "init_recovery_phrase"
#: the name that init was asked to claim (beside INIT_BUNDLE): the init that finishes claims
#: it when given none (the CLI says to run 'init' again, without the name)
INIT_NAME = "init_name"
#: secrets of an installation rotation (``chatcore.identity.rotate_installation``): the new
#: keys until this home switched to them; each old installation, REVOKING until the chain
#: revoked it (see ``finish_key_rotation``)
INSTALLATION_NEXT = "installation-next"
INSTALLATION_OLD = "installation-old:"
REVOKING = b"revoking"
#: meta: when (ms) the installation rotation last moved on; ``finish_key_rotation`` leaves
#: it alone for ROTATION_SETTLE_MS (it may be under way in another process on this home)
ROTATION_AT = "installation_rotation_at"
ROTATION_SETTLE_MS = 10 * 60_000
#: messages a sync() or listen() stored but did not return (broken off by the network or
#: cancelled), kept by close() for the next Client on the home (see Client._keep_unreported)
UNREPORTED_META = "unreported"


def _check_flag(name: str, value: object) -> None:
    """A switch must be a bool: a string such as "no" (truthy) would do the opposite."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {type(value).__name__}")


def _check_id(what: str, value: object) -> None:
    """An id argument must be bytes: a name or hex string there (an app's bug) matched
    nothing, so ``history("bob")`` read as an empty conversation, not as a mistake."""
    if not isinstance(value, bytes):
        raise TypeError(f"{what} is bytes, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class InitResult:
    identity_id: bytes
    installation_id: bytes
    owner: str
    recovery: str
    recovery_phrase: str = field(repr=False)
    name: str | None
    bundle_seq: int


@dataclass(frozen=True, slots=True)
class PublishResult:
    identity_id: bytes
    installation_id: bytes
    seq: int
    prekey_id: int
    prekey_expires: int
    gas_used: int
    #: the post-quantum key record was renewed too (it was near its end)
    pq_renewed: bool = False


def _check_int(
    value: object, what: str, least: int, unit: str = "", most: int | None = None
) -> None:
    """``value`` is an int (not a bool) in ``least``..``most``: TypeError / ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int{unit}, not {type(value).__name__}")
    if value < least:
        raise ValueError(f"{what} must be at least {least}, not {value}")
    if most is not None and value > most:
        raise ValueError(f"{what} must be at most {most}{unit}, not {value}")


def _check_limit(limit: object) -> None:
    """A page size: 0 or more (SQLite takes a negative LIMIT as no limit at all)."""
    _check_int(limit, "limit", 0)


def _check_ttl(ttl_s: object) -> None:
    """A signed prekey's lifetime, at least 1 s (0 or less would put an expired bundle on
    chain: nobody could start a conversation with the device) and at most a year
    (``PREKEY_TTL_MAX_S``: a signed prekey kept longer spoils forward secrecy)."""
    _check_int(ttl_s, "a prekey lifetime", 1, " (seconds)", PREKEY_TTL_MAX_S)


def _check_before(before: object) -> tuple[int, int]:
    """A history page's start: (lamport, seq) of a stored message."""
    if (
        not isinstance(before, (tuple, list))
        or len(before) != 2
        or any(isinstance(x, bool) or not isinstance(x, int) for x in before)
    ):
        raise TypeError(f"before must be (lamport, seq), two ints, not {before!r}")
    return before[0], before[1]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _as_name(text: str) -> str:
    """A name as people type it, compared as lookups do: case and a leading "@" aside."""
    return text.strip().lower().removeprefix("@")


def _claimable(name: str) -> str:
    """A name as ``init`` and ``claim_name`` claim it (lower case, no "@"); InvalidQuery /
    ValueError for anything else, TypeError for no string."""
    from discovery.resolver import parse_query

    check_str("a name", name)
    kind, norm = parse_query(name)
    if kind != "name":
        raise ValueError("a name must be 3-32 characters of a-z 0-9 - _")
    return norm


def _moved(what: str, holder: bytes, was: bytes) -> AmbiguousName:
    return AmbiguousName(
        f"{what} has passed to another identity (0x{holder.hex()}), not the person you "
        f"knew by it (0x{was.hex()}): use the id of the one you mean ('contacts add' the "
        "new holder's id to mean them by it)"
    )


class Client:
    """One installation of one identity, in one home directory."""

    def __init__(
        self,
        home: Home,
        store: Store,
        network: NetworkConfig,
        keys: InstallationKeys,
        identity_id: bytes,
        *,
        rng: Callable[[int], bytes] = os.urandom,
        clock_ms: Callable[[], int] = _now_ms,
        registry: Registry | None = None,
    ) -> None:
        self.home = home
        self.store = store
        self.network = network
        self.rng = rng
        self.clock_ms = clock_ms
        self.registry = registry or Registry(network)
        try:
            self.index = Index(home.index_file, self.registry)
        except sqlite3.Error as exc:
            raise store_error(exc) from exc  # e.g. index.db locked by another process
        self.resolver = Resolver(
            self.index,
            network.binding,
            network.name_registry,
            clock=lambda: self.clock_ms() / 1000,
        )
        # sending and receiving rely on storage's word (once per identity and sync);
        # ``lookup`` shows the index as synced (no RPC)
        self._checked = self.index.checked()
        self.directory = ChainDirectory(
            Resolver(
                self._checked,
                network.binding,
                network.name_registry,
                clock=lambda: self.clock_ms() / 1000,
            ),
            has_session=lambda installation: store.session_for(installation) is not None,
        )
        self.engine = Engine(store, OwnIdentity(identity_id, keys), self.directory, rng, clock_ms)
        from chatcore.groupchat import GroupChat

        self.groups = GroupChat(
            self.engine, self.directory.devices, past_devices=self._every_installation
        )
        self.groups.display = self._notice_name
        self.engine.control_handler = self.groups.handle_control
        from chatcore.features import Features

        self.features = Features(self.engine, self.groups)
        self.engine.content_handler = self.features.handle
        self.transport: Transport | None = None
        #: the longest one frame's publish may wait for the delivery network (seconds; None:
        #: the transport's own bound, 10 s for NATS). An interactive app sets it low: a send
        #: the network does not take by then raises DeliveryPending (saved, sent later)
        self.publish_timeout: float | None = None
        self._synced = False
        self._synced_at = 0
        self._sub: object | None = None
        #: the index block at which remembered names were last re-checked (see sync_directory)
        self._names_checked_at = -1
        #: when asking the chain last failed (ms): not again for a while (see CHAIN_RETRY_MS)
        self._chain_failed_at: int | None = None
        #: stored by a sync() the network broke off; the next sync() / listen() returns them
        #: (those of a Client closed before it could are kept in the store: see close())
        self._unreported: list[Received] = _take_unreported(store)
        self._unreported_taken = list(self._unreported)  # (close() drops them once returned)

    def _notice_name(self, identity_id: bytes) -> str:
        """A member as a group notice names them: "you", else as :meth:`display` does."""
        return "you" if identity_id == self.identity_id else self.display(identity_id)

    def _every_installation(self, identity_id: bytes) -> list[bytes]:
        """Every installation the identity ever registered (revoked ones too), from the
        local index: who may have signed a group's past membership changes."""
        return [i.installation_id for i in self.index.by_id(identity_id).installations]

    # --- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, home_dir: Path | str, passphrase: str, network: NetworkConfig) -> Client:
        home = Home(Path(home_dir))
        store = home.open_store(passphrase)
        raw_keys = store.get_secret("installation")
        ident = store.get_meta("identity_id")
        if raw_keys is None or ident is None:
            store.close()
            raise NotInitialised(f"{home.path} has no registered identity (run init)")
        if store.get_meta(INIT_BUNDLE) is not None:
            # init stopped after it sent the registration, or after the identity was
            # registered but before it did its other steps and showed the recovery phrase
            where = (
                "after it sent the registration"
                if store.get_meta("registered") is None
                else "after the identity was registered, before it showed the recovery phrase"
            )
            store.close()
            raise NotInitialised(
                f"init did not finish in {home.path} (it stopped {where}): run init there "
                "again, it finishes this identity"
            )
        if store.get_meta("registered") is None and store.get_meta("salt") is not None:
            store.close()  # init's keys, never registered: the process died on the way
            raise NotInitialised(
                f"init did not finish in {home.path} (it stopped before the identity was "
                "registered): run init there again, it starts over"
            )
        scope = store.get_meta("network")
        mine = _scope(network).encode()
        if scope is not None and scope != mine:
            store.close()
            raise StoreError(
                f"this home belongs to another network ({scope.decode()}), not {mine.decode()}"
            )
        return cls(home, store, network, InstallationKeys.from_bytes(raw_keys), ident)

    @classmethod
    def init(
        cls,
        home_dir: Path | str,
        passphrase: str,
        network: NetworkConfig,
        name: str | None = None,
        *,
        rng: Callable[[int], bytes] = os.urandom,
        prekey_ttl_s: int = PREKEY_TTL_S,
    ) -> tuple[Client, InitResult]:
        """Create keys, register identity + first installation + bundle on chain, claim a name."""
        _check_ttl(prekey_ttl_s)
        Home.check_new_passphrase(passphrase)

        if name is not None:
            name = _claimable(name)
        # Everything that can fail on chain is checked before anything is created or sent.
        registry = Registry(network)
        registry.check_chain()
        home = Home(Path(home_dir))
        if name and not home.meta_file.exists():  # (else: once we know whose home it is)
            _check_name_free(registry, name)
        # a directory that exists may hold the user's own files: only what init adds to it
        # is taken away again if init fails
        existed = home.path.is_dir()
        home.make_dir()
        try:
            with home.init_lock():  # one init at a time: a second took the first's files
                return cls._init_locked(
                    home, existed, passphrase, network, name, registry, rng, prekey_ttl_s
                )
        except BaseException:
            if not existed:  # e.g. the lock was not taken: the directory made for it goes
                with contextlib.suppress(OSError):
                    home.path.rmdir()  # only if empty: another init's files stay
            raise

    @classmethod
    def _init_locked(
        cls,
        home: Home,
        existed: bool,
        passphrase: str,
        network: NetworkConfig,
        name: str | None,
        registry: Registry,
        rng: Callable[[int], bytes],
        prekey_ttl_s: int,
    ) -> tuple[Client, InitResult]:
        if home.meta_file.exists():
            if _unfinished_init(home, passphrase, registry):
                # an init stopped after it sent the registration: finish that identity
                return cls._resume_init(home, passphrase, network, name, registry, rng)
            if name:
                _check_name_free(registry, name)
        before = set(home.path.iterdir()) if existed else set()
        home.create()
        try:
            return cls._init_in(home, passphrase, network, name, registry, rng, prekey_ttl_s)
        except BaseException:
            if not (home.db_file.exists() and _registered(home, passphrase)):
                # nothing reached the chain (nor may still): leave no half-made home behind
                import shutil

                if not existed:
                    shutil.rmtree(home.path, ignore_errors=True)
                for made in set(home.path.iterdir()) - before if existed else ():
                    if made.is_dir() and not made.is_symlink():
                        shutil.rmtree(made, ignore_errors=True)
                    else:
                        made.unlink(missing_ok=True)
            raise

    @classmethod
    def _init_in(
        cls,
        home: Home,
        passphrase: str,
        network: NetworkConfig,
        name: str | None,
        registry: Registry,
        rng: Callable[[int], bytes],
        prekey_ttl_s: int,
    ) -> tuple[Client, InitResult]:
        from eth_account import Account

        store = home.open_store(passphrase)
        Account.enable_unaudited_hdwallet_features()
        owner = Account.from_key(rng(32))
        recovery, phrase = Account.create_with_mnemonic()
        keys = InstallationKeys.generate(rng)
        # binds the id to the recovery phrase: recovery by phrase tells it from decoys that
        # name the same (public) recovery address (discovery.recovery_binding)
        salt = registry.recovery_salt(recovery, owner.address)
        identity_id = identity_id_for(owner.address, salt)
        with store.transaction():
            store.put_secret("installation", keys.to_bytes())
            store.set_meta("identity_id", identity_id)
            store.set_meta("owner", owner.address.encode())
            store.set_meta("recovery", recovery.address.encode())
            store.set_meta("salt", salt)
            store.set_meta("network", _scope(network).encode())
        home.save_owner_key(owner.key, passphrase)
        client = cls(home, store, network, keys, identity_id, rng=rng, registry=registry)
        _spk, bundle = client._new_bundle(seq=1, ttl_s=prekey_ttl_s)
        # From here on the registration may reach the chain (a Ctrl-C or a dead process
        # cannot tell whether it did): what it needs to be finished is kept, and the home
        # with it, so that the next init finishes this identity rather than lose it.
        with store.transaction():
            store.put_secret(INIT_PHRASE, phrase.encode())
            store.set_meta(INIT_BUNDLE, bundle.encode())
            if name:
                store.set_meta(INIT_NAME, name.encode())
        return client._finish_init(owner, phrase, bundle, name, resumed=False)

    @classmethod
    def _resume_init(
        cls,
        home: Home,
        passphrase: str,
        network: NetworkConfig,
        name: str | None,
        registry: Registry,
        rng: Callable[[int], bytes],
    ) -> tuple[Client, InitResult]:
        """Finish an init that stopped after its registration was (maybe) sent, with the
        keys, bundle and recovery phrase it kept."""
        store = home.open_store(passphrase)
        try:
            scope = store.get_meta("network")
            if scope is not None and scope != _scope(network).encode():
                raise StoreError(
                    f"this home belongs to another network ({scope.decode()}), not "
                    f"{_scope(network)}"
                )
            owner = home.load_owner_key(passphrase)
            keys = InstallationKeys.from_bytes(store.get_secret("installation") or b"")
            ident = store.get_meta("identity_id") or b""
            phrase = (store.get_secret(INIT_PHRASE) or b"").decode()
            bundle = IntroBundle.decode(store.get_meta(INIT_BUNDLE) or b"")
            if name is None:  # the one the interrupted init was given, if any
                name = (store.get_meta(INIT_NAME) or b"").decode() or None
            else:  # (the interrupted init may have claimed it: ours, then)
                _check_name_free(registry, name, ident)
        except BaseException:
            store.close()
            raise
        client = cls(home, store, network, keys, ident, rng=rng, registry=registry)
        return client._finish_init(owner, phrase, bundle, name, resumed=True)

    def _finish_init(
        self,
        owner: LocalAccount,
        phrase: str,
        bundle: IntroBundle,
        name: str | None,
        *,
        resumed: bool,
    ) -> tuple[Client, InitResult]:
        """Register (unless an earlier init's registration landed), then the PQ key record
        and the name. Closes the client if it raises."""
        store, reg, identity_id = self.store, self.registry, self.identity_id
        recovery = (store.get_meta("recovery") or b"").decode()
        result = InitResult(
            identity_id=identity_id,
            installation_id=self.installation_id,
            owner=owner.address,
            recovery=recovery,
            recovery_phrase=phrase,
            name=None,
            bundle_seq=1,
        )
        ident = f"0x{identity_id.hex()}"
        registered = store.get_meta("registered") is not None  # by the init that stopped
        sending = False  # from the register call on, the registration may reach the chain
        try:
            landed = resumed and (registered or reg.get_identity(identity_id).exists)
            if resumed and not landed and reg.pending_transactions(owner.address):
                self.close()
                raise InitIncomplete(
                    f"the registration of identity {ident} that an earlier init sent is not "
                    "mined yet: run init again later (this home keeps its keys)",
                    result,
                    "register",
                )
            if not landed:
                if self.network.faucet_key and reg.balance(owner.address) < MIN_BALANCE_WEI:
                    from eth_account import Account

                    faucet = Account.from_key(self.network.faucet_key)
                    reg.send_value(faucet, owner.address, DEV_FUNDING_WEI)
                sending = True
                reg.register(owner, bytes(store.get_meta("salt") or b""), recovery,
                             self.installation_id, bundle.encode())  # fmt: skip
        except InitIncomplete:
            raise
        except RegistryReverted:
            # refused on chain: final. Unless the identity is there (an earlier
            # registration of ours landed meanwhile), none is, nor will be: init may start
            # over
            try:
                landed = reg.get_identity(identity_id).exists
            except DiscoveryError:
                landed = False
            if not landed:
                self._forget_init()
                self.close()
                raise
        except Exception as exc:
            from discovery.errors import NotSent

            if not sending or isinstance(exc, NotSent):  # nothing was sent (this time)
                self._not_sent(exc, resumed, result)
            self.close()
            raise InitIncomplete(
                f"the registration of identity {ident} was sent but not confirmed ({exc}): "
                "run init again in this home to finish it",
                result,
                "register",
            ) from exc
        except KeyboardInterrupt as exc:
            self.close()
            raise InitInterrupted(result, "register") from exc
        if not registered:
            with store.transaction():
                self._prekey_published(bundle)
                store.set_meta("registered", b"1")
                store.set_meta("bundle_seq", b"1")
        # The identity is on chain: what fails from here on must not take the recovery
        # phrase with it (it is shown once, by our caller), nor leave the caller a home
        # that 'init' refuses to make again without saying what is missing. The phrase
        # (and the name) stay kept until our caller has the result: a process killed on
        # the way (no ``except`` runs) leaves a home the next init finishes (what an
        # earlier init did is not done again) and shows the phrase of.
        step = "pq_key"
        try:
            if not resumed or store.get_meta("pq_record") is None:
                self._publish_pq(owner)
            if name:
                step = "name"
                if not resumed or reg.name_owner(name) != identity_id:
                    self._claim_name(owner, name)
        except Exception as exc:
            self._init_done()
            self.close()
            what = "its post-quantum key record" if step == "pq_key" else f"the name {name!r}"
            raise InitIncomplete(
                f"identity {ident} is registered, but {what} is not: {exc}",
                result,
                step,
            ) from exc
        except KeyboardInterrupt as exc:
            self._init_done()
            self.close()
            raise InitInterrupted(result, step) from exc
        self._init_done()
        return self, replace(result, name=name)

    def _init_done(self) -> None:
        """init hands its result (the recovery phrase) to its caller, who shows it, once:
        the home is an ordinary one from now on. (If this fails, the next init finishes
        the identity again and shows the phrase.)"""
        try:
            self._forget_init()
        except (ChatCoreError, sqlite3.Error) as exc:
            log.warning("init could not drop what it kept to be finished: %s", exc)

    def _forget_init(self) -> None:
        """Drop what init kept to be finished (INIT_BUNDLE, INIT_NAME, INIT_PHRASE)."""
        with self.store.transaction():
            self.store.delete_meta(INIT_BUNDLE)
            self.store.delete_meta(INIT_NAME)
            self.store.delete_secret(INIT_PHRASE)

    def _not_sent(self, exc: Exception, resumed: bool, result: InitResult) -> NoReturn:
        """``_finish_init`` failed before its registration was sent. A new init's: nothing
        of the identity can reach the chain, the home is taken away (by ``init``) and init
        starts over. A resumed one's: the earlier init's registration may still land, the
        home keeps everything."""
        from discovery.errors import NotSent

        ident = f"0x{self.identity_id.hex()}"
        if resumed:
            self.close()
            raise InitIncomplete(
                f"init could not finish identity {ident}, nothing was sent this time ({exc}): "
                "run init again in this home to finish it (it keeps its keys)",
                result,
                "register",
            ) from exc
        try:
            self._forget_init()
        finally:
            self.close()
        raise NotSent(
            f"nothing was registered, the registration was not sent ({exc}): run init "
            "again, it starts over"
        ) from exc

    def close(self) -> None:
        try:
            self._keep_unreported()
        finally:
            self.index.close()
            self.store.close()

    def _keep_unreported(self) -> None:
        """What a sync() or listen() stored but did not return (the network broke it off, a
        wait_for timed out) was returned only by this Client's next call: an app that closed
        then (a push handler out of time, a quit) never saw it, though it was in history.
        It goes into the store for the next Client on the home (signals do not: stale)."""
        keep = [r for r in self._unreported if not _signal(r)]
        taken, self._unreported, self._unreported_taken = self._unreported_taken, [], []
        if not keep and not taken:
            return  # (also a second close: the store is closed)
        try:
            with self.store.transaction():
                # what another Client on the home kept since this one took them (a command
                # run beside an app, each closing in turn) stays; those taken here go, kept
                # again below if not returned yet
                others = [
                    r
                    for r in _parse_unreported(self.store.get_meta(UNREPORTED_META))
                    if r not in taken and r not in keep
                ]
                if keep or others:
                    self.store.set_meta(UNREPORTED_META, _dump_unreported(others + keep))
                else:  # returned by now: not again by the next Client
                    self.store.delete_meta(UNREPORTED_META)
        except (ChatCoreError, sqlite3.Error) as exc:  # in history still; only not returned
            log.warning("messages not returned by sync/listen yet not kept: %s", exc)

    async def aclose(self) -> None:
        if self.transport is not None:
            await self.transport.close()
            self.transport = None
        self.close()

    # --- identity -----------------------------------------------------------------------------
    def check_installation(self) -> None:
        """Raise InstallationReplaced if the home's installation keys are not this Client's
        any more: another process on the home rotated them (``rotate_installation``) while
        this one ran. It then reads an inbox nobody writes to and sends as a revoked device:
        a long-running app calls this now and then (its timer) and opens a new Client."""
        raw = self.store.get_secret("installation")
        current = None if raw is None else InstallationKeys.from_bytes(raw).installation_id
        if current != self.installation_id:
            raise InstallationReplaced(
                "this home's device keys were replaced by another process while this one "
                f"ran ('keys rotate --installation'?): it still acted as the old device "
                f"0x{self.installation_id.hex()[:16]}…, which no longer receives or sends"
            )

    @property
    def identity_id(self) -> bytes:
        return self.engine.identity_id

    @property
    def installation_id(self) -> bytes:
        return self.engine.installation_id

    def _owner(self, passphrase: str) -> LocalAccount:
        current = self.home.load_owner_key(passphrase)  # also checks the passphrase
        # a revoked device keeps the owner key, but no longer acts for the identity: it
        # says so (DeviceRevoked), as it does for sending. (It claimed names, proposed
        # recovery changes, and rotated the owner key — taking the identity from the other
        # devices — and only then said it was revoked.)
        if not self._sync_directory_or_local(DIRECTORY_MAX_AGE_MS):
            # the chain is unreachable: what needs it fails there; signing alone (a domain
            # document) works offline, as long as the index as last synced does not say
            # this device was revoked
            from chatcore.identity import check_not_revoked

            check_not_revoked(self)
        current = self._finish_owner_rotation(current, passphrase)
        # another of our devices rotated the owner key and sent it over: adopt it if the
        # chain agrees it is the owner now
        kept = self._kept_owner_key("owner_key_update")
        if kept is None:
            return current
        new, on_chain = kept
        if on_chain != new.address.lower():
            if on_chain == current.address.lower():
                self.store.delete_secret("owner_key_update")  # stale or bogus: drop it
            return current
        self.home.save_owner_key(new.key, passphrase)
        with self.store.transaction():
            self.store.set_meta("owner", new.address.encode())
            self.store.delete_secret("owner_key_update")
        return new

    def _finish_owner_rotation(self, current: LocalAccount, passphrase: str) -> LocalAccount:
        """An owner rotation of this device (``keys rotate --owner``) that a dead process
        left midway: its new key is kept in the store (``OWNER_ROTATING``) before the chain
        is asked, so that it is not lost if the chain took it. Adopt it if the chain says it
        is the owner (and send it to our other devices); else keep it while its consent is
        valid (the transaction may still be mined), and drop it after."""
        from chatcore.content import SyncOwnerKey

        kept = self._kept_owner_key(OWNER_ROTATING)
        if kept is None:
            return current
        new, on_chain = kept
        if on_chain == new.address.lower():
            if current.address.lower() != new.address.lower():
                self.home.save_owner_key(new.key, passphrase)
            from chatcore.identity import _fund

            _fund(self.network, self.registry, new.address)  # as rotate_owner does
            try:
                self.sync_directory()  # our devices as the chain has them now
            except ChatCoreError as exc:
                log.info("owner rotation finished without a directory sync: %s", exc)
            with self.store.transaction():
                self.store.set_meta("owner", new.address.encode())
                self.features._sync_own(SyncOwnerKey(bytes(new.key)))
                self.store.delete_secret(OWNER_ROTATING)
            return new
        raw = self.store.get_secret(OWNER_ROTATING) or b""
        if on_chain == current.address.lower() and len(raw) == 40:
            # not (yet) on chain: while the new owner's consent is valid, the transaction
            # may still be mined (it was sent, then the process died waiting); dropping the
            # key then lost the identity's owner for good once it landed
            deadline = int.from_bytes(raw[32:], "big")
            try:
                if self.registry.latest_timestamp() <= deadline:
                    return current
            except DiscoveryError:
                return current  # the chain cannot tell: ask it next time
        self.store.delete_secret(OWNER_ROTATING)  # it never landed (or another owner since)
        return current

    def _kept_owner_key(self, secret: str) -> tuple[LocalAccount, str] | None:
        """The owner key kept under ``secret`` and the owner the chain names now (lower
        case); None if no key is kept or the chain cannot tell."""
        raw = self.store.get_secret(secret)
        if raw is None:
            return None
        from eth_account import Account

        try:
            on_chain = self.registry.get_identity(self.identity_id).owner
        except DiscoveryError:
            return None
        return cast(LocalAccount, Account.from_key(raw[:32])), on_chain.lower()

    def _new_bundle(self, seq: int, ttl_s: int) -> tuple[SignedPrekey, IntroBundle]:
        now_s = self.clock_ms() // 1000
        # only the secret here: the prekey becomes current (``_prekey_published``) once the
        # chain took its bundle. A process killed in between (no ``except`` runs) must not
        # leave a prekey the chain never saw as current: ``prekey_due`` would go by its end,
        # and the advertised one would expire with no refresh
        with self.store.transaction():
            # a fresh id, never one we made before: a publish that failed (as far as we
            # know) puts spk_current back, but its transaction may have landed, and the chain
            # then advertises that prekey: its secret must not be overwritten by a later one.
            # Chosen under the lock: another process on this home renewing at the same time
            # chose the same id, and the secret kept last replaced the other
            ids = (self.store.get_meta(k) for k in ("spk_current", "spk_last_id"))
            spk_id = max(int(v) for v in (*ids, b"0") if v) + 1
            while self.store.get_secret(f"spk:{spk_id:010d}") is not None:
                spk_id += 1
            spk = SignedPrekey.generate(self.rng, spk_id, (now_s + ttl_s) * 1000)
            self.store.put_secret(f"spk:{spk_id:010d}", spk.to_bytes())
            self.store.set_meta("spk_last_id", str(spk_id).encode())
            # forget prekeys past their grace window
            for sname, raw in self.store.secrets_with_prefix("spk:"):
                old = SignedPrekey.from_bytes(raw)
                if old.id != spk_id and old.not_after_ms // 1000 + PREKEY_GRACE_S < now_s:
                    self.store.delete_secret(sname)
        keys = self.engine.own.keys
        bundle = IntroBundle(
            chain_id=self.network.chain_id,
            registry=self.network.binding.registry,
            identity_id=self.identity_id,
            installation_id=keys.installation_id,
            ik_x25519=keys.ik_x25519,
            spk_id=spk_id,
            spk_pub=spk.pub,
            spk_not_after=now_s + ttl_s,
            seq=seq,
            issued_at=now_s,
        ).signed(keys.sign)
        return spk, bundle

    def _prekey_published(self, bundle: IntroBundle, block: int | None = None) -> None:
        """The chain took ``bundle`` (in ``block``, if a renewal): its signed prekey is the
        current one (inside or outside the caller's transaction)."""
        with self.store.transaction():
            self.store.set_meta("spk_current", str(bundle.spk_id).encode())
            self.store.set_meta("spk_issued_at", str(bundle.issued_at).encode())
            if block is None:
                self.store.delete_meta(RENEWAL_META)
            else:
                self.store.set_meta(RENEWAL_META, f"{block}:{bundle.hash().hex()}".encode())

    def _renewal_dropped(self) -> bool:
        """Did a reorg drop our last bundle renewal? True if the local index, synced past the
        block that took it, holds another bundle for this installation: the chain then
        advertises an older prekey (which ends before the one we took as current)."""
        raw = self.store.get_meta(RENEWAL_META)
        if raw is None:
            return False
        block, want = raw.decode().split(":")
        try:
            if self.index.synced_block <= int(block):
                return False  # the index has not seen that far (yet): no telling
            installations = self.index.by_id(self.identity_id).installations
        except sqlite3.Error:  # the index is busy: the next refresh tells
            return False
        for inst in installations:
            if inst.installation_id == self.installation_id:
                return not inst.revoked and inst.bundle_hash.hex() != want
        return False

    def _publish_pq(self, owner: object) -> None:
        """Publish this installation's post-quantum key record: its ML-KEM key (the same
        key and key id when renewing: no secret to keep for peers holding the old record)
        valid for PQ_KEY_TTL_S, issued now (after any record published before, so the
        resolver takes it as the newest)."""
        keys = self.engine.own.keys
        now_s = self.clock_ms() // 1000
        _end, issued_before = self._pq_span()
        issued = now_s if issued_before is None else max(now_s, issued_before + 1)
        rec = PqKeyRecord(
            chain_id=self.network.chain_id,
            registry=self.network.binding.registry,
            identity_id=self.identity_id,
            installation_id=keys.installation_id,
            pq_key_id=keys.pq.id,
            not_after=issued + PQ_KEY_TTL_S,
            issued_at=issued,
            pq_pub=keys.pq.pub,
        ).signed(keys.sign)
        self.registry.publish_pq_key(owner, self.identity_id, keys.installation_id, rec.encode())  # type: ignore[arg-type]
        with self.store.transaction():
            self.store.set_meta(
                "pq_record",
                f"{keys.installation_id.hex()}:{keys.pq.id}:{rec.issued_at}:{rec.not_after}".encode(),
            )

    def pq_due(self) -> bool:
        """Is this device's post-quantum key record near its end (less than a quarter of
        PQ_KEY_TTL_S left, or unknown)? Past its end the resolver rejects the whole
        installation: nobody new can reach the device."""
        end_s, _issued = self._pq_span()
        if end_s is None:
            return True
        return end_s - self.clock_ms() // 1000 < PQ_KEY_TTL_S // PREKEY_REFRESH_SHARE

    def _pq_span(self) -> tuple[int | None, int | None]:
        """(when this installation's post-quantum key record on chain ends, when it was
        issued; s), each None if unknown: as last published from this home, else (a home
        from before this was remembered) as the local index has it."""
        keys = self.engine.own.keys
        raw = self.store.get_meta("pq_record")
        if raw is not None:
            inst_hex, key_id, issued, end = raw.decode().split(":")
            if inst_hex == keys.installation_id.hex() and int(key_id) == keys.pq.id:
                return int(end), int(issued)
        try:
            state = self.index.by_id(self.identity_id)
        except sqlite3.Error:
            return None, None
        inst = next(
            (i for i in state.installations if i.installation_id == keys.installation_id), None
        )
        if inst is None or inst.pq_key_hash == b"\x00" * 32:
            return None, None
        for ev in self.index.events(state):
            if ev.name != "PqKeyPublished" or ev.args.get("installation") != inst.installation_id:
                continue
            rec_raw = bytes(ev.args["record"])
            if keccak(rec_raw) != inst.pq_key_hash:
                continue
            try:
                rec = PqKeyRecord.decode(rec_raw)
            except DiscoveryError:
                return None, None
            if rec.pq_key_id == keys.pq.id and rec.pq_pub == keys.pq.pub:
                return rec.not_after, rec.issued_at
        return None, None

    def _claim_name(self, owner: object, name: str) -> None:
        secret = self.rng(32)
        addr = owner.address  # type: ignore[attr-defined]
        commitment = name_commitment(name, self.identity_id, addr, secret)
        try:
            self.registry.commit_name(owner, commitment)  # type: ignore[arg-type]
        except RegistryReverted as exc:
            # A watcher copied our pending commitment into an earlier block. It binds the
            # name, our id, our owner account and our secret: only we can claim with it, so
            # it serves as ours, aged from the block it was made in.
            if exc.reason != "CommitmentExists":
                raise
        self.registry.wait_for_commitment(commitment)
        self.registry.claim_name(owner, name, self.identity_id, secret)  # type: ignore[arg-type]

    def publish(self, passphrase: str, prekey_ttl_s: int = PREKEY_TTL_S) -> PublishResult:
        """Refresh this installation's bundle: a new signed prekey, seq + 1; and its
        post-quantum key record first if that is near its end (``pq_due``).
        ``prekey_ttl_s`` under 1 s: ValueError (an expired bundle would go on chain)."""
        _check_ttl(prekey_ttl_s)
        owner = self._owner(passphrase)
        pq_renewed = False
        if self.pq_due():
            self._publish_pq(owner)
            pq_renewed = True
        seq = int(self.store.get_meta("bundle_seq") or b"0") + 1
        spk, bundle = self._new_bundle(seq=seq, ttl_s=prekey_ttl_s)
        # if this fails (or the process dies), the prekey on chain is still the current one
        # as far as we know, so ``prekey_due`` stays true and the next try publishes again.
        # The new secret is kept (and its id never reused), in case the transaction went
        # through after all: peers may then use it until it expires.
        receipt = self.registry.publish_bundle(
            owner,
            self.identity_id,
            self.installation_id,
            bundle.encode(),
        )
        with self.store.transaction():
            self._prekey_published(bundle, int(receipt["blockNumber"]))
            self.store.set_meta("bundle_seq", str(seq).encode())
        return PublishResult(
            self.identity_id,
            self.installation_id,
            seq,
            spk.id,
            bundle.spk_not_after,
            int(receipt["gasUsed"]),
            pq_renewed,
        )

    def prekey_due(self) -> bool:
        """Is this device's signed prekey near its end (less than a quarter of its lifetime
        left, or gone)? Past its end, nobody can start a conversation with this device."""
        end_s, life = self._prekey_span()
        if end_s is None:
            return True
        margin = max(1, (life or PREKEY_TTL_S) // PREKEY_REFRESH_SHARE)
        return end_s - self.clock_ms() // 1000 < margin

    def refresh_prekey_if_due(
        self, passphrase: str, prekey_ttl_s: int | None = None
    ) -> PublishResult | None:
        """Publish a fresh bundle if the signed prekey is near its end (``prekey_due``) or
        the post-quantum key record is (``pq_due``; it is renewed too), after finishing a
        key rotation a dead process left midway (``finish_key_rotation``); an app calls this
        now and then (the CLI does on 'sync' and 'chat'). Before, only a manual 'publish'
        did, so two weeks on nobody could start a conversation with us (and the
        post-quantum record was never renewed: 90 days on, the same).
        The new prekey lives as long as the current one did, unless ``prekey_ttl_s``."""
        self.finish_key_rotation(passphrase)
        if not (self.prekey_due() or self.pq_due() or self._renewal_dropped()):
            return None
        if prekey_ttl_s is None:
            prekey_ttl_s = self._prekey_span()[1] or PREKEY_TTL_S
        return self.publish(passphrase, prekey_ttl_s)

    def finish_key_rotation(self, passphrase: str) -> list[bytes]:
        """Revoke what an installation rotation that a dead process left midway left active
        on chain: new keys registered before this home switched to them (nobody holds them
        now), or the old keys it switched from. Returns the installations revoked (none,
        and no chain call, when no rotation was interrupted, or one moved on less than
        ROTATION_SETTLE_MS ago)."""
        staged = self.store.get_secret(INSTALLATION_NEXT)
        left = [] if staged is None else [InstallationKeys.from_bytes(staged).installation_id]
        left += [
            bytes.fromhex(name.removeprefix(INSTALLATION_OLD))
            for name, value in self.store.secrets_with_prefix(INSTALLATION_OLD)
            if value == REVOKING
        ]
        if not left:
            return []
        if self.clock_ms() - int(self.store.get_meta(ROTATION_AT) or b"0") < ROTATION_SETTLE_MS:
            return []  # perhaps under way in another process (an app and a CLI command)
        state = self.registry.get_identity(self.identity_id)
        active = {i.installation_id for i in state.installations if not i.revoked}
        revoked = []
        for inst in left:
            if inst in active and inst != self.installation_id:
                self.registry.revoke_installation(self._owner(passphrase), self.identity_id, inst)
                log.warning("revoked device 0x%s left by an interrupted rotation", inst.hex()[:12])
                revoked.append(inst)
        with self.store.transaction():
            self.store.delete_secret(INSTALLATION_NEXT)
            for inst in left:
                if inst == self.installation_id and inst in active:
                    continue  # this process still runs on them: the new keys' revoke them
                if self.store.get_secret(f"{INSTALLATION_OLD}{inst.hex()}") is not None:
                    self.store.put_secret(f"{INSTALLATION_OLD}{inst.hex()}", b"revoked")
        return revoked

    def _prekey_span(self) -> tuple[int | None, int | None]:
        """(when the current signed prekey ends, s; how long it was made to last, s), each
        None if unknown."""
        cur, issued = self.store.get_meta("spk_current"), self.store.get_meta("spk_issued_at")
        raw = self.store.get_secret(f"spk:{int(cur):010d}") if cur else None
        if raw is None:
            return None, None
        end_s = SignedPrekey.from_bytes(raw).not_after_ms // 1000
        return end_s, None if issued is None else max(1, end_s - int(issued))

    def claim_name(self, passphrase: str, name: str) -> None:
        """Claim an on-chain name for this identity (checked as ``init``'s, before the
        chain is asked: unlocking the owner key syncs the directory)."""
        name = _claimable(name)
        self._claim_name(self._owner(passphrase), name)

    # --- discovery ----------------------------------------------------------------------------
    def sync_directory(self, max_age_ms: int = 0) -> int:
        """Bring the local on-chain index up to date (incremental).

        ``max_age_ms`` skips the sync if the last one is at most that old (a chat that sends
        many messages need not ask the chain before each one; revocations still reach us
        within that bound).
        """
        now = self.clock_ms()
        if max_age_ms and self._synced and now - self._synced_at <= max_age_ms:
            return 0
        try:
            n = self.index.sync()
            self.directory.refresh()
            block = self.index.synced_block
            if block != self._names_checked_at:  # this or another process learnt something
                self._recheck_displays()
                self._names_checked_at = block
        except sqlite3.Error as exc:  # the local index (index.db): locked, full, closed
            raise store_error(exc) from exc
        from chatcore.identity import check_not_revoked, not_on_chain

        if not self.index.by_id(self.identity_id).exists and self.store.get_meta("registered"):
            # the chain answered and does not know us (a devnet started again without its
            # state): nothing may be sent or changed here as if it were the chain we are on
            raise not_on_chain(self.identity_id)
        check_not_revoked(self)  # a revoked device says so and stops here
        self._synced = True
        self._synced_at = now
        return n

    def lookup(self, query: str) -> ResolvedIdentity:
        self.sync_directory()
        return self.resolver.resolve(query)

    def resolve_peer(self, query: str) -> Peer:
        """A person by conversation id prefix, our alias for them, name, id or address, from
        the local index (synced first when it can be; offline, as last synced)."""
        check_str("a person", query)  # (bytes would fail inside, with Python's words)
        if not self._synced and not self._chain_resting():
            from discovery.errors import ChainUnavailable

            try:
                self.sync_directory()
            except ChainUnavailable as exc:
                # not again before CHAIN_RETRY_MS (a node that hangs: a timeout each time)
                self._chain_failed_at = self.clock_ms()
                log.info("chain unreachable, resolving from the local index: %s", exc)
            except RecordNotFound as exc:
                # our identity is not on this chain: what is stored here can still be read
                # (history, settings); whatever sends or changes something syncs again and
                # stops there
                log.info("resolving from the local index: %s", exc)
        # a conversation we already have, by id prefix
        try:
            conv = self.find_conversation(query, required=False)
        except AmbiguousName:  # groups of that name: a person is asked for here
            conv = None
        if conv is not None and conv.peer_identity is not None:
            return self.directory.peer(conv.peer_identity)
        # the name we gave a contact ourselves comes before anyone's on-chain name
        aliased, _named = self._known_person(query)
        if aliased is not None:
            return self.directory.peer(aliased)
        peer = self.directory.lookup(query)
        self._check_moved(query, peer.identity_id)
        return peer

    def _check_moved(self, query: str, holder: bytes) -> None:
        """A name or wallet address that passed from someone we know to ``holder``:
        AmbiguousName (see ``_check_name_moved``, ``_check_address_moved``)."""
        self._check_name_moved(query, holder)
        self._check_address_moved(query, holder)

    def _check_name_moved(self, query: str, holder: bytes) -> None:
        """Refuse (``AmbiguousName``) a name that someone we know gave up and another
        identity holds now, unless we took the new holder as a contact since: writing to
        them under it would silently switch the person behind a name the user knows."""
        q = _as_name(query)
        if not q or ID_LIKE.fullmatch(q):
            return
        # the holder of each name we used is remembered, as for addresses: a person's other
        # names (not the one we show them under, which _recheck_displays watches) move too
        seen_key, was_key = "name_seen:" + q, "name_was:" + q
        seen = None if holder == self.identity_id else self.store.get_meta(seen_key)
        if seen is not None and seen != holder:
            was_raw = self.store.get_meta(was_key)
            if was_raw is None or was_raw[:32] != seen:
                self.store.set_meta(was_key, seen + self.clock_ms().to_bytes(8, "big"))
        was = self._name_moved_from(q, holder)
        if was is not None:
            raise _moved(f"the name {q!r}", holder, was)
        # a move taken (the new holder a contact since, the old person forgotten, or the
        # name back with them) is settled, as for addresses: using the name for its holder
        # since, the user is not asked again (say after removing the new holder as contact)
        if self.store.get_meta(was_key) is not None:
            self.store.delete_meta(was_key)
        if holder != self.identity_id and seen != holder:
            self.store.set_meta(seen_key, holder)

    def _check_address_moved(self, query: str, holder: bytes) -> None:
        """As ``_check_name_moved``, for a wallet address: its key's holder can move it to
        another identity. The identity an address meant when we last used it is remembered;
        a move is refused until we know the old person no more or take the new as a contact."""
        from discovery.resolver import parse_query

        kind, q = parse_query(query)
        if kind != "account" or holder == self.identity_id:
            return
        addr = q.lower()
        seen_key, was_key = "addr_seen:" + addr, "addr_was:" + addr
        seen = self.store.get_meta(seen_key)
        if seen == holder:
            return
        if seen is not None:
            was_raw = self.store.get_meta(was_key)
            if was_raw is None or was_raw[:32] != seen:
                self.store.set_meta(was_key, seen + self.clock_ms().to_bytes(8, "big"))
            was = self._moved_from(was_key, holder)
            if was is not None:
                raise _moved(f"the address {q}", holder, was)
            self.store.delete_meta(was_key)
        self.store.set_meta(seen_key, holder)

    def _moves_taken(self, holder: bytes) -> None:
        """The user took ``holder`` as a contact: names and addresses we knew someone else
        by that ``holder`` holds now (as the index says) mean ``holder`` from now on, as
        after a move noticed before the contact was added. A move not noticed yet was
        refused once more (noticed later than the add) until the next add."""
        for key, seen in self.store.meta_with_prefix("name_seen:"):
            name = key.removeprefix("name_seen:")
            if seen != holder and self.index.indexed_holder(name) == holder:
                self.store.set_meta(key, holder)
                self.store.delete_meta("name_was:" + name)
        for key, seen in self.store.meta_with_prefix("addr_seen:"):
            addr = key.removeprefix("addr_seen:")
            if seen != holder and self.index.by_account(addr).identity_id == holder:
                self.store.set_meta(key, holder)
                self.store.delete_meta("addr_was:" + addr)

    def _name_moved_from(self, name: str, holder: bytes) -> bytes | None:
        """The person we knew by ``name`` before ``holder`` took it, if we still know them
        and have not taken ``holder`` as a contact since the name moved; else None."""
        return self._moved_from("name_was:" + name, holder)

    def _moved_from(self, meta_key: str, holder: bytes) -> bytes | None:
        """``meta_key`` holds (the person we knew, when it moved): that person, if we still
        know them and have not taken ``holder`` as a contact since; else None."""
        raw = self.store.get_meta(meta_key)
        if raw is None or len(raw) != 40 or bytes(raw[:32]) == holder:
            return None
        if holder == self.identity_id:
            return None
        was, moved_at = bytes(raw[:32]), int.from_bytes(raw[32:], "big")
        chosen = self.features.contact(holder)
        if chosen is not None and chosen.state == ContactState.CONTACT:
            if chosen.updated_at >= moved_at:
                return None  # the user took the new holder as a contact (by id) since
        from chatcore.engine import direct_conversation_id

        conv = direct_conversation_id(self.identity_id, was)
        if self.features.contact(was) is None and self.store.conversation(conv) is None:
            return None  # someone we no longer know
        return was

    # --- delivery -----------------------------------------------------------------------------
    async def connect(self, transport: Transport | None = None) -> Transport:
        if transport is not None:
            self.transport = transport
        if self.transport is None:
            from chatcore.transport.nats import NatsTransport

            self.transport = await NatsTransport.connect(self.network.nats_url)
        return self.transport

    async def _check_stream(self, transport: Transport) -> None:
        """Cursors are stream sequence numbers of one store. If the delivery network's store
        was made again (the server lost it, or the stream was deleted), its numbers started
        over at 1 and our cursors would skip every new frame up to them: then every subject
        is read from the start (frames read before are duplicates, dropped as such)."""
        stream_id = getattr(transport, "stream_id", None)
        if stream_id is None:  # a transport without one (the simulator's, tests')
            return
        sid = (await stream_id()).encode()
        known = self.store.get_meta("delivery_stream")
        if known == sid:
            return
        # a home from before this check knows no stream: its cursors tell, if they are past
        # the end of the stream
        if known is not None or self.store.max_cursor() > await transport.last_seq():
            log.warning("the delivery network's store was made again: reading it from the start")
            self.store.reset_cursors()
        self.store.set_meta("delivery_stream", sid)

    async def _publish(self, frames: Sequence[OutFrame]) -> int:
        """Publish frames; each one the store acknowledges leaves the outbox.

        A frame that fails stays in the outbox with its next attempt pushed back
        (RETRY_BACKOFF_MS by attempt count), and so do the frames after it, untried: the
        network that just failed one (after the transport's timeout) would keep each caller
        waiting once per frame. Raises TransportError then: nothing is lost, it is only late.
        """
        transport = await self.connect()
        done = 0
        failed: TransportError | None = None
        refused_only = True
        attempts = {i.id: i.attempts for i in self.store.pending_outbox()}
        for f in frames:
            try:
                await self._publish_one(transport, f)
            except TransportError as exc:
                n = attempts.get(f.outbox_id, 0)
                delay = RETRY_BACKOFF_MS[min(n, len(RETRY_BACKOFF_MS) - 1)]
                self.store.outbox_retry_later(f.outbox_id, self.clock_ms() + delay)
                failed = exc
                if isinstance(exc, FrameRefused):
                    continue  # that frame only: the network is up, try the others
                refused_only = False
                break
            self.engine.acknowledged(f.outbox_id)
            done += 1
        if failed is not None:
            # FrameRefused if only refusals: the network is up (callers read on)
            kind = FrameRefused if refused_only else TransportError
            raise kind(
                f"{failed}; {len(frames) - done} frame(s) kept in the outbox, "
                "sent by the next 'send' or 'sync'"
            ) from failed
        return done

    @contextlib.asynccontextmanager
    async def _within_publish_timeout(self, what: str, failed: str) -> AsyncIterator[None]:
        """Wait at most ``publish_timeout`` (None: the transport's own bound) for the network
        in the body; past it, TransportError '``what``: the delivery network ``failed``
        within ...'."""
        bound = self.publish_timeout
        try:
            async with asyncio.timeout(bound):
                yield
        except TimeoutError as exc:
            raise TransportError(
                f"{what}: the delivery network {failed} within {bound:g}s"
            ) from exc

    async def _publish_one(self, transport: Transport, f: OutFrame) -> None:
        """One frame, waiting at most ``publish_timeout`` for the network (TransportError).
        (A copy the transport buffered before a timeout may still be stored: the outbox
        sends it again under its msg_id, which the network's duplicate window drops.)"""
        async with self._within_publish_timeout(f"publish to {f.subject}", "did not take it"):
            await transport.publish(f.subject, f.frame, msg_id=f.msg_id)

    async def flush_outbox(self, only_due: bool = False) -> int:
        """Send every frame still waiting for the store's acknowledgement (e.g. after a crash).

        ``only_due`` honours the backoff (for background retries); a user's explicit
        send or sync tries everything at once.
        """
        items = self.store.pending_outbox(self.clock_ms() if only_due else None)
        frames = [OutFrame(i.id, i.subject, i.frame, i.msg_id) for i in items]
        if not frames:
            return 0
        return await self._publish(frames)

    async def _deliver(self, result: _T, frames: Sequence[OutFrame] | None = None) -> _T:
        """Publish ``frames`` (None: the whole outbox) for an action already stored here.

        Raises DeliveryPending (carrying ``result``) if the network did not take them."""
        try:
            if frames is None:
                await self.flush_outbox()
            elif frames:
                await self._publish(frames)
        except TransportError as exc:
            if isinstance(exc, DeliveryPending):
                raise
            own = {f.outbox_id for f in getattr(result, "frames", ())}
            if isinstance(exc, FrameRefused) and own:
                waiting = {i.id for i in self.store.pending_outbox()}
                if not own & waiting:  # ours went out; an older frame was refused
                    log.warning("a frame waiting in the outbox was refused: %s", exc)
                    return result
            # the transport's own words (without _publish's "kept in the outbox": that the
            # frames wait is what DeliveryPending says); not those of the exception under it
            # (a connection timeout's are empty, a NATS client's are its internals)
            cause = exc.__cause__ if isinstance(exc.__cause__, TransportError) else exc
            raise DeliveryPending(str(cause) or str(exc), result) from exc
        return result

    async def send_text(self, to: str, text: str) -> SendResult:
        check_text(text)
        await self._refresh_directory()  # offline chain: the devices the local index knows
        peer = self.resolve_peer(to)
        if peer.identity_id == self.identity_id:
            raise NotAPeer("cannot start a conversation with yourself")
        own = self.directory.own_devices(self.identity_id)
        self.store.set_peer_display(peer.identity_id, peer.display, self.clock_ms())
        was = self.features.contact_state(peer.identity_id)
        result = self.features.send_message(peer, ContentType.TEXT, text.encode("utf-8"), own)
        self._wrote_to(peer.identity_id, was)
        return await self._deliver(result)

    def _wrote_to(self, identity: bytes, was: ContactState) -> None:
        """Writing to someone not a contact made them one: moves to them are taken, as
        ``set_contact`` takes them (``_moves_taken``)."""
        if was != ContactState.CONTACT:
            self._moves_taken(identity)

    async def _process(
        self, subject: str, seq: int, data: bytes, hold: bool = True
    ) -> list[Received]:
        """Handle one delivered frame (inbox or group topic); returns what to show.

        ``hold=False`` (group topics): raises NotYet for a frame that needs control items
        not read yet, leaving it unread (see ``GroupChat.receive``)."""
        receive = (
            self.engine.receive
            if subject == self.engine.inbox
            else lambda d, cursor: self.groups.receive(subject, d, cursor, hold)
        )
        try:
            try:
                r = receive(data, cursor=(subject, seq))
            except UntrustedIdentity:
                # perhaps the sender registered after our last index sync. Sync at most once
                # a DIRECTORY_MAX_AGE_MS (a flood of bad frames must not become a flood of RPC
                # calls) and retry only if the index learned something new.
                if self._chain_resting():
                    raise  # failed just now: a flood of such frames must not hang on the chain
                try:
                    learnt = await asyncio.to_thread(self.sync_directory, DIRECTORY_MAX_AGE_MS)
                    self._chain_failed_at = None
                except DiscoveryError as exc:  # chain unreachable: the sender resends it
                    log.info("could not check an unknown sender on chain: %s", exc)
                    self._chain_failed_at = self.clock_ms()
                    learnt = 0
                if not learnt:
                    raise
                r = receive(data, cursor=(subject, seq))
        except StoreUnavailable:
            raise  # our store, not the frame: stop here, the frame is read again next time
        except ChatCoreError as exc:
            # no fault: a copy of a frame read already (a group message is retransmitted as
            # its first frame again, which every member that had it reads once more), or a
            # frame of a group we are out of (its topic is read still: we may be added again)
            expected = isinstance(exc, DuplicateMessage) or self._out_of_group(subject)
            level = logging.INFO if expected else logging.WARNING
            log.log(level, "dropped frame seq=%d: %s: %s", seq, type(exc).__name__, exc)
            self.engine.drain()
            return []
        events, frames = self.engine.drain()
        out = [*events, *([r] if r is not None else [])]
        if frames or events:
            # stored, and the cursor is past the frame: until returned they wait among the
            # unreported, so that a task cancelled in the awaits below (a wait_for timeout)
            # does not lose them — no sync() or listen() would return them again
            self._unreported.extend(out)
            if frames:
                await self._publish_later(frames)
            if events:
                await self._follow_new_groups()
            self._unreported = [x for x in self._unreported if not any(x is y for y in out)]
        for m in out:
            if not m.outgoing:
                self._remember_display(m.sender_identity)
        return out

    def _out_of_group(self, subject: str) -> bool:
        """Is ``subject`` the topic of a group we were in and are out of now?"""
        if subject == self.engine.inbox:
            return False
        try:
            gid = self.store.group_by_subject(subject)
            state = self.groups.load(gid) if gid is not None else None
        except ChatCoreError:
            return False
        return state is not None and not state.is_member

    async def _publish_later(self, frames: Sequence[OutFrame]) -> None:
        """Publish what reading a frame produced (acks, keys, answers); if the network does
        not take it now, it waits in the outbox: reading goes on."""
        try:
            await self._publish(frames)
        except TransportError as exc:
            log.info("kept in the outbox for later: %s", exc)

    async def _follow_new_groups(self) -> None:
        """A running ``listen()`` subscribes to groups we read but it does not follow yet:
        from our cursor (a new group's topic from its start; one we are taken back into from
        where we stopped reading it)."""
        sub = self._sub
        if sub is not None:
            new = [s for s in self.groups.subjects() if s not in sub.subjects]  # type: ignore[attr-defined]
            if new:
                after = {s: self.store.cursor(s) for s in new}
                await sub.add_subjects(new, after=after)  # type: ignore[attr-defined]

    def _recheck_displays(self) -> None:
        """Names we show for people are remembered; after the index learned something, a
        name that its holder released (or that passed to someone else) is replaced by the
        person's current name, so two people never show under one name. Who holds a name
        is storage's word (``nameOwner``), not the logs'; it is asked once for a name, and
        again only when the logs no longer agree (asking for every remembered name whenever
        the chain moved cost one call per contact per sync)."""
        for ident, name in self.store.peer_displays():
            ok_key = "display_checked:" + ident.hex()
            try:
                logs_say = self.index.indexed_holder(name)
            except sqlite3.Error:
                logs_say = None
            if logs_say == ident and self.store.get_meta(ok_key) == name.encode():
                continue  # storage said so once, and the logs say nothing changed since
            if self._checked.name_holder(name) == ident:
                self.store.set_meta(ok_key, name.encode())
                continue
            moved_at = self.clock_ms().to_bytes(8, "big")
            self.store.set_meta("name_was:" + name, ident + moved_at)  # see _check_name_moved
            try:
                new = self.directory.peer(ident).display
            except (ChatCoreError, DiscoveryError):
                new = None
            self.store.set_peer_display(ident, new, self.clock_ms())
            if new:
                self.store.set_meta(ok_key, new.encode())

    def _remember_display(self, identity_id: bytes) -> None:
        if self.store.peer_display(identity_id) is not None:
            return
        try:
            peer = self.directory.peer(identity_id)
        except ChatCoreError:
            return
        if peer.display:
            self.store.set_peer_display(identity_id, peer.display, self.clock_ms())

    async def sync(self) -> list[Received]:
        """Flush the outbox, then fetch, decrypt and store everything that arrived.

        With the chain unreachable it reads on (senders it cannot check yet resend). If
        the delivery network fails midway, what was already stored is returned by the next
        ``sync()`` or ``listen()`` of this Client (and is in ``history`` at once)."""
        # the chain as _refresh_directory asks it: a sync that finds it hanging spares the
        # sends (and syncs) of the next CHAIN_RETRY_MS a timeout each
        await self._refresh_directory(0)
        transport = await self.connect()
        await self._check_stream(transport)
        try:
            # groups a link (or an installation rotation) killed midway did not join yet:
            # before reading, so that what members sent us there finds us in the group
            self.groups.join_kept_welcomes()  # (our sender keys go with the outbox below)
        except StoreUnavailable:
            raise
        except Exception as exc:  # kept for the next sync; reading goes on
            log.warning("groups not joined yet: %s", exc)
        try:
            await self.flush_outbox()
        except FrameRefused as exc:  # the network is up: read on
            log.warning("a frame waiting in the outbox was refused: %s", exc)
        for gid in self.store.group_ids():
            try:
                frames = self.groups.refresh_devices(gid)
            except StoreUnavailable:
                raise  # reading could not store anything either
            except Exception as exc:  # one group's trouble must not stop reading everything
                log.warning("group %s: devices not refreshed: %s", gid.hex()[:12], exc)
                continue
            if frames:
                await self._publish_later(frames)
        out, self._unreported = self._unreported, []
        try:
            await self._sync_read(transport, out)
        except BaseException:
            # stored already: returned next time, not lost (with those of a frame whose
            # processing was cut off, which _process left among the unreported)
            self._unreported = out + self._unreported
            raise
        # after reading: what peers sent us for a device approved here before they counted
        # it as ours goes on to it, once it has published its own bundle
        from chatcore.identity import forward_linked_history

        try:
            frames = forward_linked_history(self)
        except StoreUnavailable:
            raise
        except Exception as exc:  # kept (the cut) for the next sync
            log.warning("history not forwarded to a new device yet: %s", exc)
            frames = []
        if frames:
            await self._publish_later(frames)
        return [m for m in out if not _signal(m)]

    async def _sync_read(self, transport: Transport, out: list[Received]) -> None:
        # Membership ops come pairwise (inbox), messages on the group topics. To show each
        # change between the messages written before and after it, a group's topic is read
        # up to the first frame of a later epoch (or needing a key still in our inbox):
        # first, and again after each change the inbox brings; then every topic to its end.
        for subject in self.groups.subjects():
            await self._read(transport, subject, out, hold=False)
        done: set[str] = set()
        while True:
            # the inbox first: it may add groups whose topics we then read too
            subjects = [self.engine.inbox, *self.groups.subjects()]
            todo = [s for s in subjects if s not in done]
            if not todo:
                break
            for subject in todo:
                await self._read(transport, subject, out)
                done.add(subject)
        await self._publish_later(self.features.flush())  # receipts, due resends

    async def _read(
        self, transport: Transport, subject: str, out: list[Received], hold: bool = True
    ) -> None:
        """Process what ``subject`` holds past our cursor into ``out`` (``hold=False``: up to
        the first frame that is not decryptable yet). After a frame of our inbox with ops or
        keys for a group, that group's topic is read on up to its next such frame."""
        while True:
            batch = await transport.fetch(subject, after=self.store.cursor(subject), limit=500)
            if not batch:
                return
            for d in batch:
                if subject == self.engine.inbox:
                    self.groups.touched.clear()
                try:
                    got = await self._process(d.subject, d.seq, d.data, hold)
                except NotYet:
                    return
                out += got
                if subject == self.engine.inbox and self.groups.touched:
                    touched, self.groups.touched = self.groups.touched, set()
                    reading = set(self.groups.subjects())
                    for gid in sorted(touched & set(self.store.group_ids())):
                        if group_topic(gid) in reading:
                            await self._read(transport, group_topic(gid), out, hold=False)

    async def flush_features(self, due_only: bool = False) -> int:
        """Publish batched receipts and due retransmissions (chatcore.features).

        ``due_only`` (a long-running loop's timer): receipts wait up to the conversation's ack
        delay for one of our messages to carry them; otherwise everything queued goes now."""
        frames = self.features.flush(due_only)
        return await self._publish(frames) if frames else 0

    async def listen(self, signals: bool = False) -> AsyncIterator[Received]:
        """Live messages (after replaying what arrived while away).

        ``signals`` also yields typing indicators and receipts (for an interactive view)."""
        _check_flag("signals", signals)
        transport = await self.connect()
        await self._check_stream(transport)
        subjects = [self.engine.inbox, *self.groups.subjects()]
        sub = await transport.subscribe(subjects, after={s: self.store.cursor(s) for s in subjects})
        self._sub = sub
        told = self.home.listening()  # (a group send elsewhere on the home then reads nothing)
        try:
            while self._unreported:
                r = self._unreported.pop(0)
                if signals or not _signal(r):
                    yield r
            async for d in sub:
                self.groups.touched.clear()  # only sync() reads it (in-place ordering)
                batch = await self._process(d.subject, d.seq, d.data)
                try:
                    while batch:
                        r = batch.pop(0)  # (closed at the yield: the app has it)
                        if signals or not _signal(r):
                            yield r
                finally:  # the app stopped listening mid-batch: the rest is returned later
                    self._unreported = batch + self._unreported
        finally:
            self._sub = None
            if told is not None:
                os.close(told)
            await sub.close()

    # --- groups -------------------------------------------------------------------------------
    def _member_ids(self, members: list[str]) -> list[bytes]:
        ids = []
        for m in members:
            peer = self.resolve_peer(m)
            self.store.set_peer_display(peer.identity_id, peer.display, self.clock_ms())
            ids.append(peer.identity_id)
        return ids

    async def create_group(self, name: str, members: list[str]) -> bytes:
        check_group_name(name)  # before asking the chain anything
        if isinstance(members, (str, bytes)):  # one name would be read letter by letter
            raise TypeError("members must be a list of names, ids or addresses, not one")
        await asyncio.to_thread(self.sync_directory)
        ids = self._member_ids(members)
        gid, frames = self.groups.create(name, ids)
        await self._follow_new_groups()
        return await self._deliver(gid, frames)  # DeliveryPending(gid): created, sent later

    @staticmethod
    def _hex_prefix(query: str, max_digits: int) -> str | None:
        """The lower-case hex digits of an id prefix (4 to ``max_digits``), or None."""
        h = query.strip().lower().removeprefix("0x")
        if 4 <= len(h) <= max_digits and all(c in "0123456789abcdef" for c in h):
            return h
        return None

    @staticmethod
    def _whole_bytes(hex_prefix: str) -> bytes:
        """The whole bytes of a hex prefix (a store query narrows; the digits then decide)."""
        return bytes.fromhex(hex_prefix[: len(hex_prefix) // 2 * 2])

    def find_group(self, query: str | bytes) -> bytes:
        """A group by name or id prefix (4+ hex digits), or its id as bytes (what
        ``create_group`` returns). Of several groups with one name, the one we are still a
        member of; otherwise the name is ambiguous (AmbiguousName listing their ids)."""
        if isinstance(query, bytes):
            if query in self.store.group_ids():
                return query
            raise UnknownContact(f"no group 0x{query.hex()[:16]}")
        check_str("a group or person", query)
        q = query.strip()
        infos = [self.groups.info(g) for g in self.store.group_ids()]
        # "0x" and hex digits is an id (a group's, or a person's identity id or address),
        # never a name: anyone can name a group after someone's id or address, or after
        # another group's id, and take what we meant for them
        named = [] if ID_LIKE.fullmatch(q) else [i for i in infos if i.name == q]
        if len(named) > 1:
            named = [i for i in named if i.is_member] or named
        person = self._person_named(q) if named else None
        if person is not None and not any(i.is_member for i in named):
            raise UnknownContact(f"no group {q!r} we are in")  # the person, then
        if len(named) == 1:
            if person is not None:  # anyone can name a group after someone we know
                raise AmbiguousName(
                    f"{q!r} names a group and a person: use the group's id "
                    f"(0x{named[0].group_id.hex()[:8]}) or the person's whole identity id "
                    f"(0x{person.hex()})"
                )
            return named[0].group_id
        if len(named) > 1:
            ids = ", ".join("0x" + i.group_id.hex()[:8] for i in named)
            raise AmbiguousName(f"{len(named)} groups are named {q!r}: use an id ({ids})")
        prefix = self._hex_prefix(q, 64)
        if prefix is not None:
            hits = [i.group_id for i in infos if i.group_id.hex().startswith(prefix)]
            if len(hits) == 1:
                return hits[0]
            if hits:
                raise UnknownContact(f"ambiguous group id prefix {query!r}")
        raise UnknownContact(f"no group {query!r} (use its name or id)")

    async def group_change(self, group: str | bytes, how: str, who: str | None = None) -> None:
        """``how``: add, remove or promote ``who`` (admins only), or leave (no ``who``: we
        leave; an admin takes someone else out with ``remove``). To rename: ``rename_group``."""
        if how not in ("add", "remove", "promote", "leave"):
            hint = " (to rename a group: rename_group)" if how == "rename" else ""
            raise ValueError(f"unknown group change {how!r} (add, remove, promote or leave){hint}")
        if how == "leave" and who is not None:
            raise ValueError(
                "group leave takes no member: you leave the group yourself "
                "(to take someone else out, an admin uses remove)"
            )
        await asyncio.to_thread(self.sync_directory)
        gid = self.find_group(group)
        if how != "leave" and who is None:
            raise ValueError(f"group {how} needs a member (name, identity id or address)")
        target = None if who is None else self._member_ids([who])[0]
        # the change goes to the devices the group's state lists: as the chain lists them
        # now (a device linked a moment ago, ours too, is told it), as before a message
        before = self.groups.refresh_devices(gid)
        if how == "leave":
            frames = self.groups.leave(gid)
        else:
            frames = getattr(self.groups, how)(gid, target)
        await self._deliver(None, [*before, *frames])  # DeliveryPending: done, sent later

    async def rename_group(self, group: str | bytes, name: str) -> None:
        """Give ``group`` a new name (admins only: GroupError otherwise, and for the name it
        already has). The name is checked as ``create_group`` checks it (ValueError: blank,
        too long, control characters, like an id). Members see it, and a notice, on their
        next sync; offline: DeliveryPending (renamed here, sent later)."""
        check_group_name(name)
        await asyncio.to_thread(self.sync_directory)
        gid = self.find_group(group)
        before = self.groups.refresh_devices(gid)  # as group_change
        frames = self.groups.rename(gid, name)
        await self._deliver(None, [*before, *frames])  # DeliveryPending: done, sent later

    async def send_group_text(self, group: str | bytes, text: str) -> SendResult:
        check_text(text)
        gid = self.find_group(group)
        await self._refresh_group_devices(gid)
        offline: TransportError | None = None
        try:  # what is older goes first; if the network is down, the new message waits too
            await self.flush_outbox()
        except TransportError as exc:
            offline = exc
        if offline is None:
            offline = await self._take_changes_before_sending()
        result = self.features.send_group_message(gid, ContentType.TEXT, text.encode("utf-8"))
        if offline is not None:  # do not wait for the network a second time
            _pending(offline, result)
        return await self._deliver(result, result.frames)

    async def _take_changes_before_sending(self) -> TransportError | None:
        """Read our inbox before a group message is written: a removal waiting there would
        otherwise be applied after the message, written on the key the removed member holds
        (an app or CLI that sends without a sync first showed the removed member what it
        sent). What the inbox brings (and the topics read on for the changes it holds) is
        stored now and returned by the next ``sync()`` or ``listen()``, or kept by
        ``close()`` for the next Client.

        Not while a ``listen()`` runs on the home, ours or another process's (or Client's):
        it applies the changes to our store as they come, and what a read here took from it,
        it would drop as read (a CLI ``group send`` beside a running ``chat`` hid from it
        what arrived then).

        The read waits at most ``publish_timeout`` for the network, as a publish does.
        Returns the TransportError if the network did not answer: the message is then
        written as we know the group and saved, not published (a second wait)."""
        if self._sub is not None or self.home.someone_listens():
            return None
        got: list[Received] = []  # (what was read before a timeout is stored: kept below)
        try:
            transport = await self.connect()
            async with self._within_publish_timeout("read our inbox", "did not answer"):
                await self._check_stream(transport)
                await self._read(transport, self.engine.inbox, got)
        except TransportError as exc:
            log.info("inbox not read before sending: %s", exc)
            return exc
        finally:
            self._unreported.extend(got)
        return None

    def _chain_resting(self) -> bool:
        """The chain failed to answer less than CHAIN_RETRY_MS ago: do not ask it yet."""
        failed = self._chain_failed_at
        return failed is not None and self.clock_ms() - failed < CHAIN_RETRY_MS

    async def _refresh_directory(self, max_age_ms: int = DIRECTORY_MAX_AGE_MS) -> bool:
        """The chain's view, at most ``max_age_ms`` old, for an action that also works
        from the local index (offline: our devices as we last saw them). True if fresh.
        After the chain failed, it is asked again only CHAIN_RETRY_MS later: a node that
        hangs would otherwise hold up each message of a chat for a whole timeout."""
        if self._chain_resting():
            return False
        fresh = await asyncio.to_thread(self._sync_directory_or_local, max_age_ms)
        self._chain_failed_at = None if fresh else self.clock_ms()
        return fresh

    def _sync_directory_or_local(self, max_age_ms: int = 0) -> bool:
        """``sync_directory``, or, with the chain unreachable, the local index as last
        synced (logged). True if the chain answered."""
        from discovery.errors import ChainUnavailable

        try:
            self.sync_directory(max_age_ms)
        except ChainUnavailable as exc:
            log.info("chain unreachable, acting on the local index: %s", exc)
            return False
        return True

    async def _refresh_group_devices(self, gid: bytes) -> None:
        """Before a group message: members' devices as the chain lists them (at most
        DIRECTORY_MAX_AGE_MS old, as for 1:1), so a device linked a moment ago has our
        sender key before the message it should read. With the chain unreachable the
        message goes to the devices we know."""
        if not await self._refresh_directory():
            return
        frames = self.groups.refresh_devices(gid)
        if frames:
            try:
                await self._publish(frames)
            except TransportError:
                pass  # they wait in the outbox, ahead of the message

    # --- chat features: edits, reactions, replies, typing, read state, contacts, search --------
    # Every action takes effect in the local store first (and on our other devices through
    # sync copies); a DeliveryPending error means its frames wait in the outbox.
    def message(self, ref: bytes | str, conversation: bytes | None = None) -> StoredMessage:
        """A stored message by id (bytes) or hex id prefix (at least 4 hex digits), in one
        conversation if given. Raises UnknownMessage for none or several."""
        if conversation is not None:
            _check_id("a conversation id", conversation)
        if not isinstance(ref, (str, bytes)):
            raise TypeError(
                f"a message is its id (bytes) or a hex prefix, not {type(ref).__name__}"
            )
        if isinstance(ref, str):
            h = self._hex_prefix(ref, 16)
            if h is None:
                raise NotAMessageId(f"{ref!r} is not a message id (hex, at least 4 digits)")
            hits = [
                m
                for m in self.store.find_message(self._whole_bytes(h))
                if m.message_id.hex().startswith(h)
            ]
        else:
            hits = self.store.find_message(bytes(ref))
        if conversation is not None:
            hits = [m for m in hits if m.conversation_id == conversation]
        if len(hits) != 1:
            what = "ambiguous message id prefix" if hits else "no message"
            where = " in this conversation" if conversation is not None else ""
            shown = ref if isinstance(ref, str) else "0x" + ref.hex()
            raise UnknownMessage(f"{what} {shown!r}{where}")
        return hits[0]

    def view(self, message: StoredMessage) -> MessageView:
        """How to show a message now: current text, edited, deleted, reactions, receipts."""
        return self.features.view(message)

    def receipts(self, message: StoredMessage) -> dict[bytes, str]:
        """For one of our messages: every other member of its conversation (the peer, or the
        group's members) and how far it got with them: ``sent``, ``delivered`` or ``read``."""
        conv = self.store.conversation(message.conversation_id)
        gid = message.conversation_id if conv is not None and conv.kind == "group" else None
        got = self.features.receipts(message.conversation_id, message.message_id)
        members = self.features.recipients(message.conversation_id, message.message_id, gid)
        return {m: got.get(m, "sent") for m in members}

    async def _message_op(self, target: StoredMessage, ct: ContentType, body: bytes) -> SendResult:
        conv = self.store.conversation(target.conversation_id)
        if conv is None:  # a message outlives its conversation only mid-delete
            raise UnknownMessage("that message's conversation was deleted")
        f = self.features
        if conv.kind == "group":
            await self._refresh_group_devices(conv.id)
            offline = await self._take_changes_before_sending()
            send = f.send_group_message if ct == ContentType.REPLY else f.send_group_op
            result = send(conv.id, ct, body)
            if offline is not None:  # saved; not a second wait for the network
                _pending(offline, result)
        else:
            assert conv.peer_identity is not None
            await self._refresh_directory()
            peer = self.directory.peer(conv.peer_identity)
            own = self.directory.own_devices(self.identity_id)
            send1 = f.send_message if ct == ContentType.REPLY else f.send_op
            was = f.contact_state(peer.identity_id)
            result = send1(peer, ct, body, own)
            if ct == ContentType.REPLY:
                self._wrote_to(peer.identity_id, was)
        # the whole outbox, in order: the message an edit, delete or reaction is about may
        # still wait there (sent offline), and its receivers drop an action on a message
        # they do not have yet (they saw it unchanged until a retransmission, ~30 s later)
        return await self._deliver(result)

    async def edit(self, message: bytes | str, text: str) -> SendResult:
        """Replace the text of one of our messages, for everyone in the conversation."""
        check_str("a message's text", text)
        if not text.strip():
            raise ValueError("empty text (to remove a message, delete it)")
        check_text(text)
        t = self.message(message)
        return await self._message_op(t, ContentType.EDIT, encode_edit(t.message_id, text))

    async def delete_message(self, message: bytes | str) -> SendResult:
        """Delete one of our messages for everyone in the conversation."""
        t = self.message(message)
        return await self._message_op(t, ContentType.DELETE, encode_delete(t.message_id))

    async def react(self, message: bytes | str, emoji: str) -> SendResult:
        """Our one reaction to a message; ``""`` takes it back."""
        t = self.message(message)
        return await self._message_op(t, ContentType.REACTION, encode_reaction(t.message_id, emoji))

    async def reply(self, message: bytes | str, text: str) -> SendResult:
        """A message that quotes ``message`` (same conversation)."""
        check_text(text)
        t = self.message(message)
        return await self._message_op(t, ContentType.REPLY, encode_reply(t.message_id, text))

    def conversation_id(self, to: str | bytes) -> bytes:
        """The conversation with ``to``: a group (name or id prefix) or a person (name, id,
        address), creating the local 1:1 conversation if there is none yet; or a
        conversation id (bytes) we have."""
        if isinstance(to, bytes):
            return self._conversation(to).id
        try:
            gid = self.find_group(to)
        except AmbiguousName:
            raise  # several groups, or a group and a person: the caller must say which
        except UnknownContact:
            pass
        else:
            self._group_conversation(gid)
            return gid
        self._sync_directory_or_local(DIRECTORY_MAX_AGE_MS)  # offline: the local index
        peer = self.resolve_peer(to)
        if peer.identity_id == self.identity_id:
            raise NotAPeer("cannot start a conversation with yourself")
        from chatcore.engine import direct_conversation_id

        conv = direct_conversation_id(self.identity_id, peer.identity_id)
        self.store.ensure_conversation(conv, "direct", peer.identity_id, None, self.clock_ms())
        if peer.display:
            self.store.set_peer_display(peer.identity_id, peer.display, self.clock_ms())
        return conv

    async def send_typing(self, conversation: bytes, active: bool = True) -> int:
        """A typing indicator (``active=False``: stopped). Rate-limited to one per
        conversation per 3 s; returns how many frames went out (0 when limited)."""
        _check_flag("active", active)
        self._conversation(conversation)
        frames = self.features.send_typing(conversation, active)
        return await self._publish(frames) if frames else 0

    async def mark_read(self, conversation: bytes, *, now: bool = True) -> int:
        """The user has seen the conversation: its messages become read and read receipts
        are queued (only for contacts, and only if read receipts are on). ``now`` sends
        them at once; otherwise they ride on our next message there or go with
        ``flush_features(due_only=True)``, a long-running app's timer. Returns how many
        messages became read."""
        self._check_conversation(conversation)
        n = self.features.mark_read(conversation)
        if n and now:
            await self._deliver(n, self.features.flush_receipts())
        return n

    @property
    def read_receipts(self) -> bool:
        return self.features.read_receipts

    async def set_read_receipts(self, on: bool) -> None:
        """Send read receipts or not (delivery receipts always flow); synced to our devices."""
        _check_flag("on", on)
        await self._refresh_directory()
        frames = self.features.set_read_receipts(on)
        await self._deliver(None, frames)

    def contact(self, identity_id: bytes) -> Contact | None:
        return self.features.contact(identity_id)

    def contacts(self, *states: ContactState) -> list[Contact]:
        """Contacts in these states (all if none given), oldest change first.

        ``ContactState.REQUEST`` lists the pending requests: first messages from strangers."""
        return self.features.contacts(*states)

    async def set_contact(
        self, who: str, state: ContactState, alias: str | None = None
    ) -> Contact | None:
        """Add (CONTACT), block (BLOCKED), decline a request (DECLINED) or forget (NONE)
        ``who``, here and on our other devices. The alias is kept unless a new one is given.
        Returns the contact now (None after NONE without an alias)."""
        await self._refresh_directory()
        peer = self.resolve_peer(who)
        if alias is not None:
            check_alias(alias)
            # an alias comes before on-chain names when we look someone up: one that looks
            # like an id or address, or is another person's name, would send them our messages
            if ID_LIKE.fullmatch(alias.strip()):
                raise ValueError("an alias cannot look like an id or address (0x and hex digits)")
            holder = self._person_named(alias.strip())
            if holder is not None and holder != peer.identity_id:
                raise ValueError(f"{alias.strip()!r} is someone else's name here: choose another")
        frames = self.features.set_contact(peer.identity_id, state, alias)
        if state == ContactState.CONTACT:
            self._moves_taken(peer.identity_id)
        if peer.display:
            self.store.set_peer_display(peer.identity_id, peer.display, self.clock_ms())
        await self._deliver(None, frames)
        return self.features.contact(peer.identity_id)

    async def set_conversation_flags(
        self, conversation: bytes, *, muted: bool | None = None, archived: bool | None = None
    ) -> Conversation:
        """Mute or archive a conversation (None: unchanged), on all our devices."""
        for name, flag in (("muted", muted), ("archived", archived)):
            if flag is not None:
                _check_flag(name, flag)
        self._conversation(conversation)
        await self._refresh_directory()
        frames = self.features.set_conversation_flags(conversation, muted, archived)
        conv = self.store.conversation(conversation)
        assert conv is not None
        return await self._deliver(conv, frames)

    def delete_conversation(self, conversation: bytes) -> int:
        """Delete a conversation and its messages on this device only; returns how many (0
        for one deleted here already)."""
        self._check_conversation(conversation)
        return self.features.delete_conversation(conversation)

    def is_request(self, conversation: bytes) -> bool:
        """Is this a 1:1 conversation started by someone who is not a contact yet?"""
        self._check_conversation(conversation)
        return self.features.is_request(conversation)

    def _check_conversation(self, conversation: bytes) -> None:
        """UnknownContact for a conversation id this home never had (a wrong id must not
        pass for an empty conversation), TypeError for no bytes. A conversation deleted
        here, or a group whose history was deleted here, is known: the person or the group
        is still there."""
        if not isinstance(conversation, bytes):
            raise TypeError(f"a conversation id is bytes, not {type(conversation).__name__}")
        if (
            self.store.conversation(conversation) is None
            and not self.store.deleted_here(conversation)
            and conversation not in self.store.group_ids()
        ):
            raise UnknownContact(f"no conversation 0x{conversation.hex()[:16]}")

    def _conversation(self, conversation: bytes) -> Conversation:
        """The conversation with this id, made again (empty, its clock kept) if it was
        deleted here: the group goes on, and the person may write again (as
        ``conversation_id`` of the group or the person makes it). UnknownContact for an id
        this home never had, TypeError for no bytes."""
        self._check_conversation(conversation)
        conv = self.store.conversation(conversation)
        if conv is not None:
            return conv
        if conversation in self.store.group_ids():
            return self._group_conversation(conversation)
        peer = self.store.deleted_peer(conversation)
        if peer is None:  # deleted before the person was kept with the clock: who was it?
            from chatcore.engine import direct_conversation_id

            peer = next(
                (
                    p
                    for p in self.store.known_identities()
                    if direct_conversation_id(self.identity_id, p) == conversation
                ),
                None,
            )
        if peer is None:
            raise UnknownContact(
                f"conversation 0x{conversation.hex()[:16]} was deleted here and its person is "
                "not known: start it again by their name"
            )
        with self.store.transaction():
            self.store.ensure_conversation(conversation, "direct", peer, None, self.clock_ms())
        conv = self.store.conversation(conversation)
        assert conv is not None
        return conv

    def search(
        self, text: str, conversation: bytes | None = None, limit: int = 50
    ) -> list[StoredMessage]:
        """Messages whose current text has every word of ``text`` (full-text), newest first."""
        check_str("a search", text)
        if conversation is not None:
            _check_id("a conversation id", conversation)
        _check_limit(limit)
        return self.features.search(text, conversation, limit)

    def group_ids(self) -> list[bytes]:
        """Every group this installation knows (member or not any more)."""
        return self.store.group_ids()

    def group_info(self, group: str | bytes) -> GroupInfo:
        """Name, epoch, members and admins of a group (by name, id or id prefix)."""
        gid = group if isinstance(group, bytes) else self.find_group(group)
        return self.groups.info(gid)

    # --- local views --------------------------------------------------------------------------
    def conversations(self) -> list[Conversation]:
        return self.store.conversations()

    def find_conversation(self, query: str, required: bool = True) -> Conversation | None:
        """A conversation by group name or id, conversation id prefix, or the person's
        name, identity id or address. ``required=False``: None instead of UnknownContact."""
        try:
            gid = self.find_group(query)
        except AmbiguousName:
            raise
        except UnknownContact:
            pass
        else:
            return self._group_conversation(gid)
        stateless = self._stateless_group(query)
        if stateless is not None:
            return stateless
        prefix = self._hex_prefix(query, 64)
        if prefix is not None:
            hits = [
                c
                for c in self.store.find_conversations(self._whole_bytes(prefix))
                if c.id.hex().startswith(prefix)
            ]
            if len(hits) == 1:
                return hits[0]
        if not required:
            return None
        from chatcore.engine import direct_conversation_id
        from discovery.errors import DiscoveryError

        aliased, named = self._known_person(query)
        who = aliased
        if who is None:
            try:  # by peer: name, id or address
                who = self.directory.lookup(query).identity_id
            except (UnknownContact, DiscoveryError):
                # reading our own history needs no chain: the name as we last saw it does
                # (the chain may say their devices, or ours, are revoked, or be unreachable)
                who = named
            else:  # a name or address that passed to someone else: as for sends
                self._check_moved(query, who)
        if who is None:
            raise UnknownContact(f"no conversation, group or person {query!r}")
        conv = self.store.conversation(direct_conversation_id(self.identity_id, who))
        if conv is None:
            raise UnknownContact(f"no conversation with {query!r}")
        return conv

    def _stateless_group(self, query: str) -> Conversation | None:
        """A group conversation by its title where this device has no state of the group
        (the history of a group our identity left before this device was linked, or taken
        from a backup): as ``find_group`` takes names, a name that is also a person's is
        the person's (we are not in the group), several such groups are ambiguous."""
        q = query.strip()
        if ID_LIKE.fullmatch(q):
            return None
        have = set(self.store.group_ids())
        named = [
            c
            for c in self.store.conversations()
            if c.kind == "group" and c.title == q and c.id not in have
        ]
        if not named or self._person_named(q) is not None:
            return None
        if len(named) > 1:
            ids = ", ".join("0x" + c.id.hex()[:8] for c in named)
            raise AmbiguousName(f"{len(named)} groups are named {q!r}: use an id ({ids})")
        return named[0]

    def _group_conversation(self, gid: bytes) -> Conversation:
        """A group's conversation, made again (empty) if its history was deleted here: the
        group goes on."""
        conv = self.store.conversation(gid)
        if conv is None:
            info = self.groups.info(gid)
            self.store.ensure_conversation(gid, "group", None, info.name, self.clock_ms())
            conv = self.store.conversation(gid)
        assert conv is not None
        return conv

    def _person_named(self, name: str) -> bytes | None:
        """Someone ``name`` names here, without the chain: our alias for a contact, a
        conversation peer's name, or the holder of that on-chain name in the local index."""
        aliased, named = self._known_person(name)
        if aliased is not None or named is not None:
            return aliased or named
        try:  # on-chain names are lower case, and "@name" is a name as lookups take it
            return self.index.indexed_holder(_as_name(name))
        except (ChatCoreError, DiscoveryError, ValueError, sqlite3.Error):
            return None

    def _known_person(self, query: str) -> tuple[bytes | None, bytes | None]:
        """Who ``query`` names here without the chain: (the contact we gave this alias, the
        conversation peer that had this name when we last saw it), one match each or None."""
        q = _as_name(query)
        if not q or ID_LIKE.fullmatch(q):  # an id or address means just that (set before
            return None, None  # aliases were checked, one could look like one)
        aliases = {c.identity_id for c in self.features.contacts() if _as_name(c.alias or "") == q}
        named = set()
        for c in self.store.conversations():
            if c.peer_identity is None:
                continue
            seen = (c.title or "", self.store.peer_display(c.peer_identity) or "")
            if q in (_as_name(n) for n in seen):
                named.add(c.peer_identity)
        return (
            aliases.pop() if len(aliases) == 1 else None,
            named.pop() if len(named) == 1 else None,
        )

    def history(
        self, conv_id: bytes, limit: int = 50, before: tuple[int, int] | None = None
    ) -> list[StoredMessage]:
        """The newest ``limit`` messages (before the message at ``(lamport, seq)`` if given),
        in causal order. ValueError/TypeError for a negative or non-int ``limit`` or a
        ``before`` that is not two ints, or a ``conv_id`` that is no bytes (an id we do not
        have gives [])."""
        _check_id("a conversation id", conv_id)
        _check_limit(limit)
        return self.store.history(conv_id, limit, None if before is None else _check_before(before))

    def display(self, identity_id: bytes) -> str:
        """A name to show: "me", the verified on-chain name (remembered; marked when it
        passed to this person from someone we know, see ``_name_moved_from``), or a short
        id."""
        _check_id("an identity id", identity_id)
        if identity_id == self.identity_id:
            return "me"
        name = self.store.peer_display(identity_id)
        if name is None:
            try:  # the local index; no RPC
                name = self.directory.peer(identity_id).display
            except (ChatCoreError, DiscoveryError):
                name = None
            if name:
                self.store.set_peer_display(identity_id, name, self.clock_ms())
        if name and self._name_moved_from(name, identity_id) is not None:
            return f"{name} (new holder of the name)"  # not the person we knew by it
        return name or "0x" + identity_id.hex()[:12] + "…"

    def peer_from_resolved(self, resolved: ResolvedIdentity) -> Peer:
        return to_peer(resolved)


def _pending(offline: TransportError, result: object) -> NoReturn:
    """Raise DeliveryPending for ``result`` (saved) after the network failed before it was
    sent: in the transport's own words, as ``_deliver`` gives them (not those of the
    exception under it: a timeout's are empty, and the error said just "DeliveryPending")."""
    cause = offline.__cause__ if isinstance(offline.__cause__, TransportError) else offline
    raise DeliveryPending(str(cause) or str(offline), result) from offline


def _dump_unreported(items: Sequence[Received]) -> bytes:
    def row(r: Received) -> list[object]:
        ids = (r.conversation_id, r.message_id, r.sender_identity, r.sender_installation)
        rest = (int(r.content_type), r.body.hex(), r.lamport, r.sent_at, r.received_at)
        return [*(i.hex() for i in ids), *rest, r.outgoing]

    return json.dumps([row(r) for r in items]).encode()


def _take_unreported(store: Store) -> list[Received]:
    """The messages a closed Client stored but did not return (``Client._keep_unreported``),
    taken from the store: this Client's next sync() or listen() returns them."""
    raw = store.get_meta(UNREPORTED_META)
    if raw is None:
        return []
    with contextlib.suppress(StoreError):  # (else close() drops them once returned)
        store.delete_meta(UNREPORTED_META)  # not returned twice by two Clients open at once
    return _parse_unreported(raw)


def _parse_unreported(raw: bytes | None) -> list[Received]:
    out: list[Received] = []
    if raw is None:
        return out
    try:
        for c, m, si, inst, ct, body, lamport, sent, received, outgoing in json.loads(raw):
            out.append(
                Received(
                    bytes.fromhex(c), bytes.fromhex(m), bytes.fromhex(si), bytes.fromhex(inst),
                    ContentType(ct), bytes.fromhex(body), lamport, sent, received, outgoing,
                )
            )  # fmt: skip
    except (ValueError, TypeError) as exc:  # (they are in history all the same)
        log.warning("messages kept for sync/listen unreadable, dropped: %s", exc)
        return []
    return out


def _signal(r: Received) -> bool:
    """A typing indicator or receipt: shown by an interactive view only."""
    return r.content_type in (ContentType.TYPING, ContentType.RECEIPT)


def _unfinished_init(home: Home, passphrase: str, registry: Registry) -> bool:
    """A home ``init`` is run in again. True: an init stopped in it after its registration
    may have been sent, or after the identity was registered but before it did its other
    steps and handed over the recovery phrase (``init`` finishes that identity: its keys
    are never taken away).
    False: an init died in it before that (a store with nothing but init's keys, or nothing
    at all; the chain does not know the identity): the home is taken away, init starts
    over. Any other home: StoreError, it already holds an identity. A passphrase that does
    not open it: WrongPassphrase (an init that stopped after it sent the registration cannot
    be told from an identity without it, and is finished by init with its passphrase)."""
    taken = StoreError(f"{home.path} already holds an identity")
    try:
        store = home.open_store(passphrase)
    except WrongPassphrase:
        raise WrongPassphrase(
            f"wrong passphrase: it does not open {home.path} (which holds an identity, or an "
            "init that did not finish: run init with the passphrase it was given to finish "
            "it; nothing was changed)"
        ) from None
    try:
        ident = store.get_meta("identity_id")
        unfinished = (
            store.get_meta("registered") is None
            and store.get_meta("pair_code") is None  # a device waiting to be linked
            and (ident is None or store.get_meta("salt") is not None)  # init's, not restore's
        )
        # kept by init from just before it sends the registration until it is done
        sent = store.get_meta(INIT_BUNDLE) is not None and store.get_meta("salt") is not None
    finally:
        store.close()
    if sent:
        return True
    if not unfinished or (ident is not None and registry.get_identity(ident).exists):
        raise taken
    db, index = home.db_file, home.index_file
    for f in (
        *(db.with_name(db.name + x) for x in ("-wal", "-shm", "-journal")),
        *(index.with_name(index.name + x) for x in ("-wal", "-shm", "-journal")),
        db, index, home.keystore_file, *home.keystore_leftovers(), home.meta_file,
    ):  # fmt: skip
        f.unlink(missing_ok=True)
    return False


def _check_name_free(registry: Registry, name: str, ours: bytes | None = None) -> None:
    """NameTaken unless ``name`` is free (or held by the identity ``ours``)."""
    holder = registry.name_owner(name)
    if holder not in (b"\x00" * 32, ours):
        from discovery.errors import NameTaken

        raise NameTaken(f"the name {name!r} is already taken")


def _registered(home: Home, passphrase: str) -> bool:
    """Registered, or its registration may have been sent (see ``_unfinished_init``)."""
    try:
        store = home.open_store(passphrase)
    except ChatCoreError:
        return False
    try:
        return store.get_meta("registered") is not None or store.get_meta(INIT_BUNDLE) is not None
    finally:
        store.close()


def _scope(network: NetworkConfig) -> str:
    return f"{network.chain_id}:{network.identity_registry.lower()}"


def cold_resolver(network: NetworkConfig, registry: Registry | None = None) -> Resolver:
    """A resolver that reads the chain directly (two RPC calls per identity)."""
    reg = registry or Registry(network)
    return Resolver(ChainSource(reg), network.binding, network.name_registry)
