"""An independent reference model of group membership, for the oracle.

The core decides membership by folding the op log with void and seniority rules
(``chatcore.group.roster``). An oracle that asked the same fold what the truth is could
never catch a defect in it. This module knows nothing of those rules: it reads the ops'
fields (``decode_op`` only parses and checks the encoding) and works out, by plain set
arithmetic in causal order, what a user who made these changes means — for the logs where
that is unambiguous ("simple" logs):

* no op is concurrent with an op taking its author out (no void ops);
* no two concurrent ops concern the same identity (an add racing a removal of one person,
  two admins removing each other: there the core's tie rules are the specification).

For such a log the core's roster and its removal epochs must equal this model's; the
groups scenario makes its changes so that most of its logs are simple (an add and a
removal by two admins at once concern two different people).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from chatcore.group.ops import Op, OpKind, decode_op


@dataclass(frozen=True, slots=True)
class Model:
    members: frozenset[bytes]
    admins: frozenset[bytes]


def decode_all(raw: Iterable[bytes]) -> dict[bytes, Op]:
    return {o.op_id: o for o in map(decode_op, raw)}


def pasts(ops: Mapping[bytes, Op]) -> dict[bytes, frozenset[bytes]]:
    """Every op's causal past (the ops it depends on, transitively; itself excluded)."""
    out: dict[bytes, frozenset[bytes]] = {}

    def past(op_id: bytes) -> frozenset[bytes]:
        hit = out.get(op_id)
        if hit is None:
            acc: set[bytes] = set()
            for d in ops[op_id].deps:
                if d in ops:
                    acc.add(d)
                    acc |= past(d)
            hit = out[op_id] = frozenset(acc)
        return hit

    for i in sorted(ops, key=lambda i: ops[i].epoch):  # shallow first: short recursion
        past(i)
    return out


def _leaving(op: Op) -> bytes | None:
    if op.kind is OpKind.REMOVE:
        return op.target
    if op.kind is OpKind.LEAVE:
        return op.author
    return None


def _concerns(op: Op) -> bytes | None:
    if op.kind in (OpKind.ADD, OpKind.REMOVE, OpKind.PROMOTE):
        return op.target
    if op.kind is OpKind.LEAVE:
        return op.author
    return None


def simple(ops: Mapping[bytes, Op], past: Mapping[bytes, frozenset[bytes]]) -> bool:
    """True if the log has one meaning by set arithmetic (see the module docstring)."""
    ids = list(ops)
    for x in ids:
        for y in ids:
            if x >= y or x in past[y] or y in past[x]:
                continue  # same op, or causally ordered
            a, b = ops[x], ops[y]
            if _leaving(a) == b.author or _leaving(b) == a.author:
                return False
            if _concerns(a) is not None and _concerns(a) == _concerns(b):
                return False
    return True


def model(ops: Mapping[bytes, Op], past: Mapping[bytes, frozenset[bytes]]) -> Model:
    """Members and admins after every op, applied in a causal order (any causal order gives
    the same result for a simple log)."""
    members: set[bytes] = set()
    admins: set[bytes] = set()
    for i in sorted(ops, key=lambda i: (len(past[i]), i)):
        op = ops[i]
        if op.kind is OpKind.CREATE:
            members, admins = set(op.members) | {op.author}, {op.author}
        elif op.kind is OpKind.ADD:
            members.add(op.target)
        elif op.kind is OpKind.PROMOTE:
            admins.add(op.target)
        elif (who := _leaving(op)) is not None:
            members.discard(who)
            admins.discard(who)
            if members and not admins:  # design.md: the smallest remaining id takes over
                admins = {min(members)}
    return Model(frozenset(members), frozenset(admins))


def removal_epochs(
    ops: Mapping[bytes, Op], past: Mapping[bytes, frozenset[bytes]], identity: bytes
) -> list[int]:
    """For each op taking ``identity`` out: how many ops its author had seen (the epoch its
    messages were tagged with until then; a simple log has no void ops to leave out)."""
    return [len(past[i]) for i, o in ops.items() if _leaving(o) == identity]
