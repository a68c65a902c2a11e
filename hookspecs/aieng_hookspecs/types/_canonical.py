"""One text per value, whatever the order of its mappings' keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._text import Document

__all__ = ["canonical_text", "kept_version"]


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


def kept_version(key: tuple[Any, ...], doc: Document, old_key: tuple[Any, ...],
                 old_doc: Document) -> bool:
    """Whether a fuser keeps ``doc`` over ``old_doc``, two versions of one document found
    by its runs: the lower ``key`` (position in its run, source, text, title), then, for
    versions alike but for their metadata, the lower :func:`canonical_text` of it
    (compared only then). So the version kept does not depend on the order of the runs."""
    if key != old_key:
        return bool(key < old_key)
    return canonical_text(doc.metadata) < canonical_text(old_doc.metadata)
