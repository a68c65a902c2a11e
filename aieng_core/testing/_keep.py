"""The ``keep=`` bound of the kit's recording doubles (a long test gives one, or the double's
own record is what grows)."""

from __future__ import annotations

from typing import Any

__all__ = ["kept_bound", "trim_kept"]


def kept_bound(keep: int | None) -> int | None:
    """``keep`` checked: ``None`` (keep every record) or a whole number >= 0."""
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
        raise ValueError(f"keep must be a whole number or None, got {keep!r}")
    return keep


def trim_kept(items: list[Any], keep: int | None) -> None:
    """Drop the oldest of ``items`` past ``keep`` (in place)."""
    if keep is not None and len(items) > keep:
        del items[:len(items) - keep]
