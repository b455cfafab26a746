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

* Acceptance (at arrival, all independent of arrival order): well-formed; same group;
  not a replay; every dependency already accepted (otherwise GroupError: retry later —
  ``apply_ops`` does it for a batch); signed by an installation the directory lists for
  the author; ``epoch`` equals the size of its causal past; and the author holds the
  role (admin; member for ``leave``) in the fold of the op's *causal past*, and the op
  changes something there. Forged ops, non-admin ops and ops by members who had seen
  their own removal are rejected with GroupError and leave the state unchanged.
  Ops made more than ``OP_MAX_LAG`` epochs behind us are rejected as stale.
* Effect (in the fold over the whole set): an op takes effect only if its author still
  holds the role at the op's place in the total order and the op still changes
  something (adding a member twice, removing a non-member: no effect). Conflicts:
  - two admins change membership concurrently: both apply, in the total order;
  - an admin is removed concurrently with one of its own ops: the removal wins when
    it sorts first, which it does at the same epoch (removals sort before other ops of
    their epoch); an op the admin made at a lower epoch (it had seen fewer ops) came
    first and stands;
  - mutual concurrent removals of two admins at one epoch: the one with the smaller op
    id applies, the other author is no longer admin, so theirs is void;
  - if the last admin leaves or is removed, the remaining member with the smallest
    identity id becomes admin.
* Limits: an op accepted by members whose epoch was within ``OP_MAX_LAG`` but reaching
  another member that is further ahead is rejected there (a partition longer than
  ``OP_MAX_LAG`` ops needs a resync by an admin). An admin cannot be stopped from
  back-dating an op to before its removal (deps = old heads) within that window; with no
  central sequencer no scheme can tell that apart from a real partition.

Keys
----
Each member installation has one sender chain (HMAC-SHA256 KDF chain + Ed25519 signing
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
