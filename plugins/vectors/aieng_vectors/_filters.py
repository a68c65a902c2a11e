"""Metadata equality filters (``Query.filters``), with JSON's idea of equality."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["json_equal", "matches"]


def json_equal(left: Any, right: Any) -> bool:
    """Whether two JSON values are equal as JSON sees them.

    Python's ``==`` says ``True == 1`` and ``1 == 1.0``; JSON keeps booleans apart from
    numbers (a filter ``{"draft": true}`` must not match ``"draft": 1``) while ``1`` and
    ``1.0`` are the same number. Lists and tuples compare alike (a tuple is how a list
    reads back from a Python caller).
    """
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return left == right
    if isinstance(left, str) or isinstance(right, str):
        return isinstance(left, str) and isinstance(right, str) and left == right
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(
            json_equal(value, right[key]) for key, value in left.items())
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(
            json_equal(a, b) for a, b in zip(left, right))
    if left is None or right is None:
        return left is None and right is None
    return bool(left == right)


def matches(metadata: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
    """Whether a document's metadata satisfies every equality filter.

    A key the metadata lacks reads as ``null``, as in the kernel's ``memory`` retriever, so
    ``{"lang": None}`` matches documents without a ``lang`` as well as ``"lang": null``.
    """
    return all(json_equal(metadata.get(key), value) for key, value in filters.items())
