"""Group messaging core: sender keys + admin-signed membership with epochs. Pure, no I/O.

Membership is an op log (create, add, remove, promote, leave, rename) in which each op
is Ed25519-signed by an installation of its author and names its dependencies (the
author's heads) and its epoch (= how many ops the author had seen). The log is a DAG.

Convergence rule
----------------
The group state is a deterministic fold over the *set* of accepted ops, in the total
order ``(epoch, removals-first, op id)`` (op id = SHA-256 of the signed body). So every
member that has accepted the same set of ops has the same members, admins, name and
epoch (``epoch`` = number of accepted ops), whatever the arrival order.

* Acceptance (at arrival), a function of the op and its causal past only, so that every
  member accepts the same ops whatever it has seen: well-formed; same group; not a
  replay; every dependency already accepted (otherwise GroupError: retry later —
  ``apply_ops`` does it for a batch); signed by an installation the directory lists for
  the author; ``epoch`` equals the size of its causal past; and the author holds the
  role (admin; member for ``leave``) in the fold of the op's *causal past*, and the op
  changes something there. Forged ops, non-admin ops and ops by members who had seen
  their own removal are rejected with GroupError and leave the state unchanged. (An
  earlier rule also refused ops made far behind the receiver; it made members accept
  different ops, and a later op then applied at some and never at others.)
* Effect (in the fold over the whole set): an op takes effect only if its author still
  holds the role at the op's place in the total order and the op still changes
  something (adding a member twice, removing a non-member: no effect). Conflicts:
  - two admins change membership concurrently: both apply, in the total order;
  - an op concurrent with a removal of its author (neither saw the other) is void,
    whatever epoch it claims: a removed admin cannot act by dating ops back (choosing
    old dependencies), and no scheme without a central sequencer can tell that from a
    real partition, so removal wins (:func:`chatcore.group.roster.concurrent_with_removal`);
    a removal that is void this way (its author was removed concurrently by a removal
    that counts) voids nothing itself (:func:`chatcore.group.roster.counting_removals`),
    nor does a leave concurrent with a removal of its author that counts (a removed member
    dating a leave back before its own ops undid them); such a leave takes its author out
    right before the first admin op that saw it and such a removal (else after the rest of
    the fold);
  - admins rank by when they became admin (the creator first) and an admin removes
    only admins made after them, so two admins cannot remove each other (if they were
    made admin concurrently, each may in some causal past: the removal by the one made
    admin first in fold order stands);
  - if the last admin leaves or is removed, the remaining member with the smallest
    identity id becomes admin.
* An add, promotion or rename that arrives concurrent with a removal of its author that
  we know counts for nothing; it is kept aside as a *candidate* (bounded) instead of
  entering the log, and comes in only with an op we accept that depends on it (a member
  that got it before the removal built on it), or when it counts again (the removal was
  found void by a later one: candidates are checked again whenever the log grows).
  Removals always enter the log: a removal that counts voids its target's concurrent ops,
  so setting one aside here and not elsewhere would change the roster. A member missing
  an op's dependencies asks the op's sender for them (``KIND_WANT``), besides the admins'
  re-offer of their logs.
* Limits: the log holds ``MAX_OPS`` ops and is never compacted (a welcome of more than
  about 270 ops goes in parts: ``chatcore.groupchat``). A removed admin can still fill the log of a
  member that has not yet seen its removal with void ops (at ``MAX_OPS`` the removal itself
  would be refused there). Its dated-back removals void nothing, and void ops do not count
  in the epoch messages are tagged with (``message_epoch``), so members holding them and
  members keeping them aside read each other.

Keys
----
Each member installation has one sender chain (keyed BLAKE2b chain + Ed25519 signing
key). On every transition each member compares the set of member installations its
chain was shared with against the new set: if any installation left (removal, leave,
revoked device) it rotates and sends the new chain to the remaining installations only;
if installations were only added it sends its *current* chain position to the new ones
(they cannot derive earlier message keys). Messages carry a routing tag of the sender's
epoch; tags older than ``current - EPOCH_GRACE`` are stale, tags up to ``EPOCH_AHEAD``
in the future are accepted (the sender key authenticates the message).
"""

from chatcore.group.consts import (
    KIND_DISTRIBUTION,
    KIND_GROUP_MESSAGE,
    KIND_GROUP_OP,
    KIND_WELCOME,
)
from chatcore.group.keys import InstallationKey, Rng
from chatcore.group.ops import Op, OpKind, decode_op
from chatcore.group.roster import Roster
from chatcore.group.sender_keys import SenderKeyDistribution
from chatcore.group.state import (
    Directory,
    GroupState,
    Outgoing,
    Publish,
    SendTo,
    decode_welcome,
    encode_welcome,
    group_tag,
)

__all__ = [
    "KIND_DISTRIBUTION",
    "KIND_GROUP_MESSAGE",
    "KIND_GROUP_OP",
    "KIND_WELCOME",
    "Directory",
    "GroupState",
    "InstallationKey",
    "Op",
    "OpKind",
    "Outgoing",
    "Publish",
    "Rng",
    "Roster",
    "SendTo",
    "SenderKeyDistribution",
    "decode_op",
    "decode_welcome",
    "encode_welcome",
    "group_tag",
]
