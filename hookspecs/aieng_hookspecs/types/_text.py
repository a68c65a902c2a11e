"""Documents, chunks, queries and hits: what retrieval moves around."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import attrs
from attrs import field
from attrs import validators as v

from ._checks import finite, integer, json_mapping, non_empty

__all__ = ["EQUALS_NOTHING", "NO_KEY", "Chunk", "Document", "Hit", "Query", "filters_match",
           "json_equal", "json_key"]

_str = v.instance_of(str)
_non_blank = v.and_(_str, non_empty())


@attrs.frozen
class Document:
    """A unit of indexed text.

    :param id: stable identifier, unique within an index; not blank.
    :param text: the body, already decoded to ``str``.
    :param title: optional title.
    :param metadata: JSON-able fields for filters and display.
    """

    id: str = field(validator=_non_blank)
    text: str = field(validator=_str)
    title: str = field(default="", validator=_str)
    metadata: dict[str, Any] = field(factory=dict, converter=json_mapping, hash=False)


@attrs.frozen
class Chunk:
    """A span of a document, as a chunker cuts it.

    :param id: identifier of the chunk.
    :param document_id: the id of the document it comes from.
    :param text: the chunk's text, ``document.text[start:end]`` when offsets are known.
    :param start: offset of the first character in the document.
    :param end: offset one past the last character; ``end >= start``.
    """

    id: str = field(validator=_non_blank)
    document_id: str = field(validator=_non_blank)
    text: str = field(validator=_str)
    start: int = field(default=0, validator=integer(0))
    end: int = field(default=0, validator=integer(0))
    metadata: dict[str, Any] = field(factory=dict, converter=json_mapping, hash=False)

    @end.validator
    def _end_after_start(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value < self.start:
            raise ValueError(f"end ({value}) must not precede start ({self.start})")


@attrs.frozen
class Query:
    """A search request.

    :param text: what the user asked; any string, empty included (retrievers return ``[]``).
    :param id: optional identifier (a benchmark query id).
    :param filters: metadata equality filters a retriever applies when it supports them:
        a document matches when, for every key, its metadata value equals the filter's
        value as JSON sees it (``1 == 1.0``, ``true != 1``, lists compare element by
        element); a key the metadata lacks reads as ``null``. :meth:`matches` is that rule.
    """

    text: str = field(validator=_str)
    id: str = field(default="", validator=_str)
    filters: dict[str, Any] = field(factory=dict, converter=json_mapping, hash=False)

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        """Whether a document's ``metadata`` satisfies every filter of this query (always,
        without filters)."""
        return filters_match(metadata, self.filters)


def filters_match(metadata: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` satisfies every equality filter of ``filters`` (the rule of
    :attr:`Query.filters`: JSON equality, a missing key reads as ``null``)."""
    return all(json_equal(metadata.get(key), value) for key, value in filters.items())


def json_equal(left: Any, right: Any) -> bool:
    """Whether two JSON values are equal as JSON sees them: Python's ``==`` says
    ``True == 1``, JSON keeps booleans apart from numbers, while ``1`` and ``1.0`` are the
    same number; a list and a tuple with equal items are equal."""
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return left == right
    if isinstance(left, str) or isinstance(right, str):
        return isinstance(left, str) and isinstance(right, str) and left == right
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(
            json_equal(value, right[key]) for key, value in left.items())
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(
            json_equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, (Mapping, list, tuple)) or isinstance(right, (Mapping, list, tuple)):
        return False  # one side a container, the other not (numpy compares item by item)
    if left is None or right is None:
        return left is right
    if isinstance(left, numbers.Number) and isinstance(right, numbers.Number):
        try:  # numbers of other libraries (numpy, Decimal) that do not compare together
            return bool(left == right)
        except (TypeError, ValueError):
            return float(left) == float(right)  # type: ignore[arg-type]
    try:
        return bool(left == right)
    except (TypeError, ValueError):  # a value that compares as no single truth value
        return False


class _Mark:
    """A key no value shares (hashed and compared by identity)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_TRUE, _FALSE = _Mark("true"), _Mark("false")  # apart from 1 and 0, unlike True and False
_MAP = _Mark("map")  # the first item of an object's key (a list's is a plain tuple)
#: :func:`json_key` of a value it gives no key (compare it with :func:`json_equal`).
NO_KEY = _Mark("no key")
#: :func:`json_key` of a value holding NaN: :func:`json_equal` finds it equal to nothing.
EQUALS_NOTHING = _Mark("equals nothing")
#: Values nested deeper than this get :data:`NO_KEY`.
_KEY_DEPTH = 32


def json_key(value: Any, depth: int = 0) -> Any:
    """A hashable key of a JSON value, for sets and dicts under :func:`json_equal`:
    ``json_key(a) == json_key(b)`` exactly when ``json_equal(a, b)``, for values whose key
    is neither :data:`NO_KEY` nor :data:`EQUALS_NOTHING`.

    Strings, numbers and ``None`` are their own keys (a dict finds ``1`` and ``1.0``
    equal, and never a string equal to a number), a list is the tuple of its items'
    keys; booleans and objects get marks. Exact types only: a subclass (an enum, a numpy
    scalar) may compare as it likes, so it gets :data:`NO_KEY`, as do values nested
    deeper than 32 and objects with keys that are not strings.
    """
    kind = type(value)
    if kind is str or kind is int or value is None:
        return value
    if kind is float:
        return EQUALS_NOTHING if math.isnan(value) else value
    if kind is bool:
        return _TRUE if value else _FALSE
    if depth >= _KEY_DEPTH or (kind is not list and kind is not tuple and kind is not dict):
        return NO_KEY
    if kind is dict and not all(type(name) is str for name in value):
        return NO_KEY
    keys = [json_key(item, depth + 1) for item in (value.values() if kind is dict else value)]
    # NaN anywhere makes the whole value equal to nothing, whatever else it holds.
    if any(key is EQUALS_NOTHING for key in keys):
        return EQUALS_NOTHING
    if any(key is NO_KEY for key in keys):
        return NO_KEY
    if kind is dict:
        return (_MAP, frozenset(zip(value, keys)))
    return tuple(keys)


@attrs.frozen
class Hit:
    """One retrieved document with its score and rank.

    :param document: the document.
    :param score: the retriever's score; higher is better; finite.
    :param rank: 1-based position in its run.
    :param source: the component that produced it (``"bm25"``, ``"rrf"``, ...).
    """

    document: Document = field(validator=v.instance_of(Document))
    score: float = field(validator=finite())
    rank: int = field(default=1, validator=integer(1))
    source: str = field(default="", validator=_str)
