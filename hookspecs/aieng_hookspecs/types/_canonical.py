"""One text per value, whatever the order of its mappings' keys."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["canonical_text"]


def canonical_text(value: object) -> str:
    """A text that is the same for equal values, whatever the key order of the mappings in
    them: the order fusers keep among versions of one document (compared by metadata).

    Unlike ``json.dumps(value, sort_keys=True)`` it never fails: nested keys of mixed or
    non-JSON types, tuples as keys and sets are all written out (sets sorted, anything
    else by ``repr``)."""
    if isinstance(value, Mapping):
        items = sorted((canonical_text(key), canonical_text(item))
                       for key, item in value.items())
        return "{" + ",".join(f"{key}:{item}" for key, item in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical_text(item) for item in value) + "]"
    if isinstance(value, (set, frozenset)):
        return "{" + ",".join(sorted(canonical_text(item) for item in value)) + "}"
    return repr(value)
