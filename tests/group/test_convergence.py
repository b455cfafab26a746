"""Concurrent membership changes converge whatever the delivery order."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcore.errors import GroupError
from chatcore.group import GroupState, OpKind, decode_op

from . import World

ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["add_member", "remove_member", "promote", "rename", "leave"]),
        st.integers(0, 7),
    ),
    max_size=4,
)


def _setup() -> tuple[World, list[bytes]]:
    w = World(11)
    people = [w.person(2 if i == 2 else 1) for i in range(8)]
    a, b, c, d, e = people[:5]
    w.create(a, [b, c, d, e])
    w.act(a, "promote", b)
    return w, people


def _make(w: World, who: bytes, state: GroupState, actions: list[tuple[str, int]],
          people: list[bytes]) -> tuple[GroupState, list[bytes]]:  # fmt: skip
    ops = []
    key = w.dev(who).key
    for method, n in actions:
        args: tuple[object, ...] = (
            () if method == "leave" else (f"name{n}",) if method == "rename" else (people[n],)
        )
        try:
            state, out = getattr(state, method)(*args, key, w.directory, w.rng, w.now)
        except GroupError:
            continue
        ops.append(out[0].payload)
    return state, ops


def _deliver(w: World, state: GroupState, ops: list[bytes]) -> GroupState:
    """Apply one at a time in the given order, retrying what needs earlier ops (an engine)."""
    todo = list(ops)
    while todo:
        retry = []
        for raw in todo:
            try:
                state, _ = state.apply_op(raw, w.directory, w.rng)
            except GroupError as err:
                if "replayed" not in str(err):
                    retry.append(raw)
        if len(retry) == len(todo):
            break
        todo = retry
    return state


def _view(s: GroupState) -> tuple[object, ...]:
    return (s.members(), s.admins(), s.name, s.epoch, s.heads)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ACTIONS, ACTIONS, st.randoms(use_true_random=False))
def test_two_admins_partitioned_converge_in_any_order(
    acts_a: list[tuple[str, int]], acts_b: list[tuple[str, int]], rnd: object
) -> None:
    w, people = _setup()
    a, b, c = people[:3]
    sa0, sb0, sc0 = (w.dev(x).state for x in (a, b, c))
    assert sa0 is not None and sb0 is not None and sc0 is not None
    sa, ops_a = _make(w, a, sa0, acts_a, people)
    sb, ops_b = _make(w, b, sb0, acts_b, people)
    everything = ops_a + ops_b
    views = []
    for _ in range(4):  # several observers, each in its own order
        order = list(everything)
        rnd.shuffle(order)  # type: ignore[attr-defined]
        views.append(_view(_deliver(w, sc0, order)))
    views.append(_view(_deliver(w, sa, ops_b)))
    views.append(_view(_deliver(w, sb, ops_a)))
    batch, _out, _rej = sc0.apply_ops(reversed(everything), w.directory, w.rng)
    views.append(_view(batch))
    assert all(v == views[0] for v in views), views
    assert views[0][3] == sc0.epoch + len(everything)  # every honest op was accepted


def test_concurrent_remove_of_admin_beats_its_same_epoch_op() -> None:
    w, people = _setup()
    a, b, c = people[:3]
    f = people[5]
    sa0, sb0, sc0 = (w.dev(x).state for x in (a, b, c))
    assert sa0 is not None and sb0 is not None and sc0 is not None
    _, (add_f,) = _make(w, a, sa0, [("add_member", 5)], people)
    _, (rm_a,) = _make(w, b, sb0, [("remove_member", 0)], people)
    assert decode_op(add_f).epoch == decode_op(rm_a).epoch
    for order in ([add_f, rm_a], [rm_a, add_f]):
        s = _deliver(w, sc0, order)
        assert a not in s.members() and f not in s.members()
        assert s.admins() == {b} and s.epoch == sc0.epoch + 2


def test_mutual_removal_keeps_exactly_one_admin() -> None:
    w, people = _setup()
    a, b, c = people[:3]
    sa0, sb0, sc0 = (w.dev(x).state for x in (a, b, c))
    assert sa0 is not None and sb0 is not None and sc0 is not None
    _, (rm_b,) = _make(w, a, sa0, [("remove_member", 1)], people)
    _, (rm_a,) = _make(w, b, sb0, [("remove_member", 0)], people)
    first = min((rm_a, rm_b), key=lambda r: decode_op(r).op_id)
    survivor = b if first is rm_a else a
    for order in ([rm_b, rm_a], [rm_a, rm_b]):
        s = _deliver(w, sc0, order)
        assert s.admins() == {survivor} and s.members() == set(people[:5]) - {a, b} | {survivor}
    assert decode_op(rm_a).kind is OpKind.REMOVE
