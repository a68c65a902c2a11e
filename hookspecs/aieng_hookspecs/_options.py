"""Helpers for plugins' options classes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["listed"]


def listed(value: Iterable[Any]) -> tuple[Any, ...]:
    """An attrs converter for list options: the items as a tuple, where a lone string (or
    bytes) is a :class:`TypeError` instead of a tuple of its characters.

    ``converter=tuple`` turns ``canaries="XYZ-123"`` into seven one-character canaries
    that every answer contains; a config file cannot do this (the kernel refuses a string
    for a list), but a Python caller can::

        canaries: tuple[str, ...] = attrs.field(default=(), converter=listed)
    """
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"expected a list, got the string {value!r} (write [{value!r}] "
                        "for a list of one)")
    return tuple(value)
