"""Building values whose fields were already validated, without re-running validators."""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import attrs

__all__ = ["unchecked"]

T = TypeVar("T")
_FACTORY: type[Any] = attrs.Factory  # type: ignore[assignment]  # a class at run time


@functools.cache
def _plan(cls: type[Any]) -> tuple[tuple[str, Any, bool], ...]:
    plan = []
    for field in attrs.fields(cls):
        default = field.default
        if isinstance(default, _FACTORY):
            plan.append((field.name, default.factory, True))
        else:
            plan.append((field.name, default, False))
    return tuple(plan)


def unchecked(cls: type[T], **values: Any) -> T:
    """Build an attrs value *without* its converters and validators.

    For code that constructs values from fields it has just computed itself and knows to be
    valid — the kernel's own events on the hot path of every run, where validation would
    cost more than the run. Anything that comes from a plugin or a user goes through the
    normal constructor. Collections must already be in their converted form (tuples).

    :raises TypeError: for an unknown field or a missing field without a default.
    """
    instance = object.__new__(cls)
    set_field = object.__setattr__
    used = 0
    plan = _plan(cls)  # type: ignore[arg-type]  # a class is hashable
    for name, default, is_factory in plan:
        if name in values:
            set_field(instance, name, values[name])
            used += 1
        elif is_factory:
            set_field(instance, name, default())
        elif default is attrs.NOTHING:
            raise TypeError(f"{cls.__name__}: missing field {name!r}")
        else:
            set_field(instance, name, default)
    if used != len(values):
        known = {name for name, _, _ in plan}
        unknown = sorted(set(values) - known)
        raise TypeError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
    return instance
