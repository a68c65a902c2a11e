"""Validators and converters shared by the boundary types (private)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

__all__ = [
    "finite",
    "finite_values",
    "frozen_tuple",
    "integer",
    "json_mapping",
    "non_empty",
    "optional_json_mapping",
    "seconds",
    "unit_interval",
]


def _number(name: str, value: object) -> float:
    """Return ``value`` when it is a finite int or float; raise naming ``name`` otherwise."""
    # bool is an int subclass, but ``True`` as a score or a duration is a caller's bug.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    try:
        ok = math.isfinite(value)
    except OverflowError:  # an int past the float range is no finite float
        ok = False
    if not ok:
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


class _Finite:
    """Validator: a real number that is neither NaN nor infinite."""

    def __call__(self, inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        _number(attr.name, value)

    def __repr__(self) -> str:
        return "<finite validator>"


class _Seconds:
    """Validator: a duration, a finite int or float that is not negative."""

    def __call__(self, inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if _number(attr.name, value) < 0:
            raise ValueError(f"{attr.name} must not be negative, got {value!r}")

    def __repr__(self) -> str:
        return "<seconds validator>"


class _FiniteValues:
    """Validator: a mapping whose every value is a finite int or float."""

    def __call__(self, inst: object, attr: attrs.Attribute[Any], value: Mapping[str, Any]) -> None:
        for key, item in value.items():
            _number(f"{attr.name}[{key!r}]", item)

    def __repr__(self) -> str:
        return "<finite-values validator>"


class _Integer:
    """Validator: an int (not a bool) of at least ``minimum`` when one is given."""

    def __init__(self, minimum: int | None) -> None:
        self.minimum = minimum

    def __call__(self, inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        # bool is an int subclass, but ``True`` as a count or a rank is a caller's bug.
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attr.name} must be an int, got {type(value).__name__}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{attr.name} must be at least {self.minimum}, got {value!r}")

    def __repr__(self) -> str:
        return f"<integer validator minimum={self.minimum}>"


class _NonEmpty:
    """Validator: a string or sequence with at least one element (a string not only spaces)."""

    def __call__(self, inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
        empty = not value.strip() if isinstance(value, str) else len(value) == 0
        if empty:
            raise ValueError(f"{attr.name} must not be empty")

    def __repr__(self) -> str:
        return "<non-empty validator>"


class _UnitInterval:
    """Validator: ``low < value <= 1`` (or ``low <= value`` when closed)."""

    def __init__(self, *, closed: bool) -> None:
        self.closed = closed

    def __call__(self, inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
        _number(attr.name, value)
        ok = (0.0 <= value <= 1.0) if self.closed else (0.0 < value <= 1.0)
        if not ok:
            bounds = "[0, 1]" if self.closed else "(0, 1]"
            raise ValueError(f"{attr.name} must lie in {bounds}, got {value!r}")

    def __repr__(self) -> str:
        return f"<unit-interval validator closed={self.closed}>"


def finite() -> _Finite:
    """Validator factory: a finite int or float (bools rejected)."""
    return _Finite()


def seconds() -> _Seconds:
    """Validator factory: a duration in seconds, a finite int or float ``>= 0`` (bools rejected)."""
    return _Seconds()


def finite_values() -> _FiniteValues:
    """Validator factory: every value of a mapping is a finite int or float (bools rejected)."""
    return _FiniteValues()


def integer(minimum: int | None = None) -> _Integer:
    """Validator factory: an int (bools rejected), ``>= minimum`` when one is given."""
    return _Integer(minimum)


def non_empty() -> _NonEmpty:
    """Validator factory: not empty (strings: not blank)."""
    return _NonEmpty()


def unit_interval(*, closed: bool = True) -> _UnitInterval:
    """Validator factory: a number in [0, 1], or (0, 1] with ``closed=False`` (bools rejected;
    wrap it in ``attrs.validators.optional`` for a field that may be ``None``)."""
    return _UnitInterval(closed=closed)


def frozen_tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    """Converter: any iterable (but not a lone string) becomes a tuple."""
    if isinstance(value, (str, bytes)):
        raise TypeError("expected a sequence, got a string")
    return tuple(value)


def json_mapping(value: Mapping[str, Any] | None) -> dict[str, Any]:
    """Converter: a copy of a mapping with string keys, so callers cannot mutate ours."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"mapping keys must be strings, got {key!r}")
    return dict(value)


def optional_json_mapping(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Converter: ``None`` stays ``None``; a mapping is copied as by :func:`json_mapping`."""
    return None if value is None else json_mapping(value)
