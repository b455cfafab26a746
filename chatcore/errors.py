"""Errors raised by the chat core.

    ChatCoreError
    ├── ProtocolError
    │   ├── HandshakeError        bad or unusable initial message / bundle
    │   ├── DecryptionError       authentication failed (deliberately uninformative)
    │   ├── DuplicateMessage      a message key was already used (replay)
    │   ├── TooManySkipped        a gap larger than the skipped-key bound
    │   ├── GroupError            group frame from a non-member, stale epoch, forged change
    │   └── ContentError          a content message that violates its rules (spoofed edit, ...)
    ├── MalformedMessage          bytes that do not parse as any known frame
    ├── UntrustedIdentity         sender installation not registered / revoked for the identity
    ├── StoreError                local database problem (wrong passphrase: WrongPassphrase)
    │   └── WrongPassphrase
    ├── TransportError            the delivery network is unreachable or refused a publish
    │   └── DeliveryPending       done and stored here, its frames wait in the outbox (.result)
    ├── UnknownContact            a name / id that resolves to nobody we can reach
    │   └── AmbiguousName         a name several groups share (use an id)
    ├── UnknownMessage            no (single) message with that id or id prefix
    ├── NotInitialised            no identity in this home yet
    ├── InstallationReplaced      another process rotated the home's keys while we ran
    └── InitIncomplete            init registered the identity, a later step failed (.result)

Bad arguments (wrong length or type) raise ``ValueError`` / ``TypeError`` instead.
"""

from __future__ import annotations


class ChatCoreError(Exception):
    """Root of every error the chat core raises on purpose."""


class ProtocolError(ChatCoreError):
    """A protocol rule was broken by an incoming message or a peer's keys."""


class HandshakeError(ProtocolError):
    """The initial message or the peer's bundle cannot start a session."""


class DecryptionError(ProtocolError):
    """A message failed authentication. Says nothing more, on purpose."""


class DuplicateMessage(ProtocolError):
    """A message whose key was already consumed (a replay or a duplicate)."""


class TooManySkipped(ProtocolError):
    """A message that would require skipping more keys than allowed."""


class GroupError(ProtocolError):
    """A group frame that the current membership state does not accept."""


class ContentError(ProtocolError):
    """A content message that breaks its own rules (e.g. an edit by someone else)."""


class MalformedMessage(ChatCoreError):
    """Bytes that do not decode as a known frame of a known version."""


class UntrustedIdentity(ChatCoreError):
    """The sending installation is not registered (or was revoked) for the claimed identity."""


class StoreError(ChatCoreError):
    """The local store failed or is inconsistent."""


class StoreUnavailable(StoreError):
    """The local store cannot be written just now (locked by another process past the busy
    timeout, read-only, disk full, I/O error). Nothing about the input is wrong: a frame
    that met this is not skipped, it is read again next time."""


class WrongPassphrase(StoreError):
    """The passphrase does not unlock this home."""


class TransportError(ChatCoreError):
    """The delivery network failed to accept or deliver."""


class FrameRefused(TransportError):
    """The delivery network is up but refused this one frame (a non-retryable API error):
    the frames after it are still tried."""


class DeliveryPending(TransportError):
    """The action took effect here and its frames are stored in the outbox, but the delivery
    network did not take them yet; the next send, sync or ``flush_outbox`` sends them.

    ``result`` is what the call would have returned (e.g. a ``SendResult`` with the message
    id), so an app can show the message as "sending" instead of failing."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class UnknownContact(ChatCoreError):
    """Nobody reachable by that name, address or identity id."""


class AmbiguousName(UnknownContact):
    """Several groups have that name: an id tells them apart."""


class UnknownMessage(ChatCoreError):
    """No message, or more than one, with that id or id prefix."""


class NotAMessageId(UnknownMessage, ValueError):
    """Not a message id at all (not hex, or too short): bad input, not a missing message."""


class NotAPeer(UnknownContact, ValueError):
    """Our own identity where another person is needed: bad input."""


class NotInitialised(ChatCoreError):
    """This home has no identity yet (run init)."""


class AwaitingReceipts(ChatCoreError):
    """This device's messages still wait for receipts: replacing or revoking its keys now
    would make recipients that have not fetched them yet drop them (frames from a revoked
    installation are refused). Sync later, or force it."""


class InstallationReplaced(ChatCoreError):
    """The home's installation keys were replaced by another process (a rotation) while
    this Client ran: it acts as the old, revoked device (``Client.check_installation``).
    Open a new Client on the home."""


class InitIncomplete(ChatCoreError):
    """``Client.init`` registered the identity on chain, then a later step failed: the
    post-quantum key record (``step`` "pq_key"; ``publish`` puts it on chain) or the name
    claim (``step`` "name"; ``claim_name`` tries again). The home is made (``Client.open``
    opens it). ``result`` is the ``InitResult`` (``name`` None) whose recovery phrase exists
    nowhere else: show it. The failure is ``__cause__``.

    ``step`` "register": the registration was sent (or may have been) and the chain has not
    confirmed it (or it is still pending): it may yet be mined. The home keeps the keys and
    the phrase; ``Client.init`` on it again finishes that identity (and returns the phrase)."""

    def __init__(self, message: str, result: object, step: str) -> None:
        super().__init__(message)
        self.result = result
        self.step = step


class InitInterrupted(KeyboardInterrupt):
    """Ctrl-C after ``Client.init`` registered the identity (as ``InitIncomplete``, whose
    ``result`` and ``step`` it carries; still a ``KeyboardInterrupt``)."""

    def __init__(self, result: object, step: str) -> None:
        super().__init__()
        self.result = result
        self.step = step
