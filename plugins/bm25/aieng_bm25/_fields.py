"""How a Document becomes index fields and back: keys, metadata JSON, filter tokens.

Pure Python, no tantivy: the index module imports tantivy, this one never does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["check_text", "dump_metadata", "filter_token", "id_key", "load_metadata"]


def _digest(text: str) -> str:
    # surrogatepass: a lone surrogate (never in a stored id, see check_text) still digests.
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def id_key(doc_id: str) -> str:
    """The indexed term that names a document for upserts and deletes.

    A digest rather than the id itself: tantivy silently skips terms longer than 65,530
    bytes, and a document whose id were skipped could never be replaced or deleted.
    """
    return _digest(doc_id)


def check_text(doc_id: str, field: str, value: str) -> None:
    """Raise ``ValueError`` when ``value`` cannot be stored (tantivy stores UTF-8 only).

    A Python ``str`` may hold lone surrogates (``"\\ud800"``), which have no UTF-8 form.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"document {doc_id!r}: {field} is not valid Unicode (a lone surrogate at "
            f"character {exc.start}); decode the source with errors='replace'") from None


def dump_metadata(doc_id: str, metadata: Mapping[str, Any]) -> bytes:
    """The stored form of a document's metadata: its JSON text, key order kept.

    ``ensure_ascii`` escapes every non-ASCII character, lone surrogates included, so any
    JSON-able metadata round-trips through :func:`load_metadata` unchanged (tuples come
    back as lists, as JSON has no tuples).

    :raises ValueError: naming the document when the metadata is not JSON (NaN, a set, an
        object of a custom class...).
    """
    try:
        return json.dumps(metadata, ensure_ascii=True, allow_nan=False).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"document {doc_id!r}: metadata is not JSON-able ({exc})") from None


def load_metadata(stored: bytes | None) -> dict[str, Any]:
    """The metadata stored by :func:`dump_metadata`."""
    if not stored or stored == b"{}":  # most documents: skip the JSON decoder
        return {}
    value = json.loads(stored.decode("ascii"))
    return value if isinstance(value, dict) else {}


def _canonical(value: Any) -> Any:
    """``value`` (as ``json.loads`` returns it) with integral floats made ints, so that
    ``1`` and ``1.0`` agree as they do in Python; ``True`` and ``1`` stay apart, as in JSON."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def filter_token(key: str, value: Any) -> str:
    """The indexed term saying "metadata[key] equals value".

    One term per top-level metadata entry lets a filter of any JSON value (a string, a
    number, ``null``, a list, an object) be one exact term lookup; the digest keeps terms
    short whatever the value's size.

    :raises TypeError, ValueError: when ``value`` is not a JSON value.
    """
    # Through JSON first, as the stored metadata went: tuples become lists and non-string
    # object keys strings, exactly as in what a hit's metadata will hold.
    loaded = json.loads(json.dumps(value, ensure_ascii=True, allow_nan=False))
    canonical = json.dumps([key, _canonical(loaded)], ensure_ascii=True, sort_keys=True,
                           separators=(",", ":"))
    return _digest(canonical)
