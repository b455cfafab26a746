"""Copies of frozen, slotted dataclasses with some fields changed, at the per-message rate.

Every group message makes a new sending chain and a new ``GroupState`` (both immutable).
``dataclasses.replace`` costs ~4 us for the state's 17 fields, and even a positional
constructor call ~1.2 us: a frozen dataclass's ``__init__`` sets every field through
``object.__setattr__``. ``updater`` builds, once per class, a function that allocates the
instance and sets each slot through that slot's own descriptor, about half the cost. The
object is the one the constructor would build (the same fields, so the same equality, hash
and repr; an ``init=False`` field gets its default, as from the constructor); a class whose
constructor does more (``__post_init__``, a default factory) is refused. The field list is
read from the class, so a field added later is copied too.
"""

from __future__ import annotations

import dataclasses
import keyword
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def updater(cls: type[T], *changed: str) -> Callable[..., T]:
    """``f(obj, *values)``: a copy of ``obj`` (an instance of ``cls``) with the fields named
    in ``changed`` set to ``values``, in that order; the same value as
    ``dataclasses.replace(obj, **dict(zip(changed, values)))``."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__: use its constructor")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if any(not f.init and f.default is dataclasses.MISSING for f in fields):
        raise TypeError(f"{cls.__name__} has an init=False field without a default")
    names = [f.name for f in fields if f.init]
    if len(set(changed)) != len(changed) or not set(changed) <= set(names):
        raise ValueError(f"not distinct init fields of {cls.__name__}: {changed}")
    if not all(f.name.isidentifier() and not keyword.iskeyword(f.name) for f in fields):
        raise ValueError("unexpected field name")  # never for a dataclass; checked anyway
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def update(_obj, {', '.join('_v_' + n for n in changed)}):", "    _o = _new(_cls)"]
    for i, f in enumerate(fields):
        namespace[f"_set{i}"] = cls.__dict__[f.name].__set__  # the slot's descriptor
        if not f.init:  # as the constructor: its default (e.g. an empty cache)
            namespace[f"_default{i}"] = f.default
            value = f"_default{i}"
        else:
            value = f"_v_{f.name}" if f.name in changed else f"_obj.{f.name}"
        lines.append(f"    _set{i}(_o, {value})")
    lines.append("    return _o")
    exec("\n".join(lines), namespace)  # names checked above: fields of the class
    fn: Callable[..., T] = namespace["update"]
    fn.__qualname__ = fn.__name__ = f"update_{cls.__name__}_{'_'.join(changed)}"
    return fn
