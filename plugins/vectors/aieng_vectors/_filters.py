"""An in-memory index of the documents' metadata, so a filtered query checks no row in
Python: for each metadata field, a column of small integer codes (one per row) and a table
from each value the field holds to its code.

A filter ``{field: value}`` is then one numpy comparison of the column with the value's
code; the rows passing every filter are the only ones scored. The codes follow
:func:`aieng_hookspecs.types.json_equal` (the rule of ``Query.filters``): two values get the
same code exactly when they are equal as JSON sees them (``1`` and ``1.0`` one code, ``true``
and ``1`` two; lists by their items; a missing key the code of ``null``). A value the codes
do not cover (:func:`~aieng_hookspecs.types.json_key` gives it ``NO_KEY``: a type JSON has
no word for, deep nesting) is marked odd and checked with ``json_equal`` itself; so is
every row for a filter value of that kind.
The index holds no document: the store passes its rows and documents.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from aieng_hookspecs.types import (
    EQUALS_NOTHING,
    NO_KEY,
    Document,
    filters_match,
    json_equal,
    json_key,
)

__all__ = ["MAX_FIELDS", "FilterIndex"]

# Fields given a column, at most (each costs 4 bytes a row): filters on later fields are
# checked in Python, on the rows the indexed fields leave.
MAX_FIELDS = 64
# Codes in the columns: 0 is null (or the key missing); values get 1, 2, ...
_NULL, _NEVER, _ODD = 0, -1, -2


class FilterIndex:
    """Codes of the metadata values of rows ``0 … count-1``, by field.

    The store keeps it in step with its rows: :meth:`set` a row's metadata when a row is
    written, :meth:`clear` it before the row is replaced or deleted, :meth:`move` it with
    a row the store moves. Rows past the store's count hold code 0 (nothing).
    """

    def __init__(self, documents: Sequence[Document] = ()) -> None:
        self._columns: dict[str, Any] = {}  # field -> int32 codes, one per row
        self._codes: dict[str, dict[Any, int]] = {}  # field -> value key -> code
        self._odd: dict[str, int] = {}  # field -> rows holding an odd value
        self._full = False  # a field was left without a column (MAX_FIELDS)
        self._size = 0  # the columns' length
        self._build(documents)

    def _build(self, documents: Sequence[Document]) -> None:
        """Index every document, row by row, into ``array`` columns (each item set as fast
        as a list's, 4 bytes each) that numpy then shares without a copy."""
        self._size = max(16, len(documents))
        arrays: dict[str, array[int]] = {}
        for row, doc in enumerate(documents):
            for field, value in doc.metadata.items():
                codes = arrays.get(field)
                if codes is None:
                    if len(arrays) >= MAX_FIELDS:
                        self._full = True
                        continue
                    codes = arrays[field] = array("i", [_NULL]) * self._size
                    self._codes[field], self._odd[field] = {None: _NULL}, 0
                codes[row] = self._code(field, value)
        for field, codes in arrays.items():
            self._columns[field] = np.frombuffer(codes, np.int32)

    def _code(self, field: str, value: Any) -> int:
        key = json_key(value)
        if key is EQUALS_NOTHING:
            return _NEVER
        if key is NO_KEY:
            self._odd[field] += 1
            return _ODD
        codes = self._codes[field]
        code = codes.get(key)
        if code is None:
            code = codes[key] = len(codes)
        return code

    def _column(self, field: str) -> Any:
        column = self._columns.get(field)
        if column is None and not self._full:
            if len(self._columns) >= MAX_FIELDS:
                self._full = True
                return None
            column = self._columns[field] = np.zeros(self._size, np.int32)
            self._codes[field], self._odd[field] = {None: _NULL}, 0
        return column

    def set(self, row: int, metadata: Mapping[str, Any]) -> None:
        """Index the metadata of a row that holds none (a new row, or one cleared)."""
        if row >= self._size:
            size = max(row + 1, 2 * self._size)
            for field, column in self._columns.items():
                grown = np.zeros(size, np.int32)
                grown[: self._size] = column
                self._columns[field] = grown
            self._size = size
        for field, value in metadata.items():
            column = self._column(field)
            if column is not None:
                column[row] = self._code(field, value)

    def clear(self, row: int, metadata: Mapping[str, Any]) -> None:
        """Forget a row's metadata (``metadata``: what :meth:`set` was given for it)."""
        for field in metadata:
            column = self._columns.get(field)
            if column is not None:
                if column[row] == _ODD:
                    self._odd[field] -= 1
                column[row] = _NULL

    def move(self, source: int, target: int, metadata: Mapping[str, Any]) -> None:
        """Move a row's codes to ``target`` (cleared before), leaving ``source`` empty."""
        for field in metadata:
            column = self._columns.get(field)
            if column is not None:
                column[target], column[source] = column[source], _NULL

    def tidy(self, documents: Sequence[Document]) -> None:
        """Re-code a field whose table holds far more values than rows (values written
        once and replaced or deleted since), so the tables stay within the live rows';
        cut columns of which three quarters are past the rows (after deletions) to twice
        the rows (those past the rows hold nothing)."""
        if self._size > 1024 and 4 * len(documents) <= self._size:
            self._size = max(16, 2 * len(documents))
            for field, column in self._columns.items():
                self._columns[field] = column[: self._size].copy()
        bound = 2 * len(documents) + 1024
        for field, codes in self._codes.items():
            if len(codes) > bound:
                column = self._columns[field]
                column[:] = _NULL
                self._codes[field], self._odd[field] = {None: _NULL}, 0
                for row, doc in enumerate(documents):
                    if field in doc.metadata:
                        column[row] = self._code(field, doc.metadata[field])

    def rows(self, filters: Mapping[str, Any], documents: Sequence[Document]) -> Any:
        """The rows (ascending, int64) whose metadata passes every filter: exactly those
        for which :func:`filters_match` holds, most found without looking at a row."""
        count = len(documents)
        mask: Any = None
        rest: dict[str, Any] = {}
        for field, value in filters.items():
            key = json_key(value)
            column = self._columns.get(field)
            if key is NO_KEY or (column is None and self._full):
                rest[field] = value  # checked in Python below
                continue
            if key is EQUALS_NOTHING:
                return np.zeros(0, np.int64)
            if column is None:  # no document has the field: each reads it as null
                if key is None:
                    continue
                return np.zeros(0, np.int64)
            code = self._codes[field].get(key)
            column = column[:count]
            passing = (column == code) if code is not None else np.zeros(count, bool)
            if self._odd[field]:
                for row in np.flatnonzero(column == _ODD).tolist():
                    passing[row] = json_equal(documents[row].metadata.get(field), value)
            mask = passing if mask is None else np.logical_and(mask, passing, out=mask)
        rows = np.arange(count) if mask is None else np.flatnonzero(mask)
        if rest:
            rows = np.fromiter((row for row in rows.tolist()
                                if filters_match(documents[row].metadata, rest)), np.int64)
        return rows.astype(np.int64, copy=False)
