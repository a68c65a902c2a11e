"""The in-memory table of stored documents that lets a search skip tantivy's document store.

Pure Python, no tantivy. Every version of a document is indexed with a *row* number, a
random 64-bit integer in a fast field (see ``_index``), drawn afresh for each write, so a
row names one immutable stored version. The table maps row numbers to that version's
``Document`` (as a search returns it: metadata through JSON). Hits share these objects,
as the ``vectors`` index's do: a ``Document`` is frozen, and its metadata is not to be
changed in place. An entry can never be stale: a search
reads the rows of its hits from the fast field and looks them up; a row the table lacks
(a document written by another process, or one past the size limit) is read from the
document store instead, and cached when there is room. Deleting or replacing a document
drops its old row, so the table holds about the live documents and never more than
``limit`` of them.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from aieng_hookspecs.types import Document

__all__ = ["DocumentTable", "builder"]

T = TypeVar("T")



class DocumentTable:
    """Rows to stored documents, at most ``limit`` of them; thread-safe.

    :param limit: the most documents held; ``0`` holds none (every lookup misses).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._rows: dict[int, Document] = {}
        self._row_of: dict[str, int] = {}  # id -> its cached row, to drop it on replace
        self._lock = threading.Lock()
        self._random = random.Random()  # seeded from the OS: rows differ across processes
        #: ``get(row)``: the stored fields of ``row``, or ``None`` when not held (the
        #: dict's own ``get``: lookups take no lock, as a dict read is atomic).
        self.get: Callable[[int], Document | None] = self._rows.get

    def __len__(self) -> int:
        """The number of documents held."""
        return len(self._rows)

    def new_row(self) -> int:
        """A fresh row number for a document version about to be written."""
        return self._random.getrandbits(64)


    def put(self, row: int, entry: Document) -> None:
        """Hold ``entry`` as ``row`` when there is room (else do nothing)."""
        with self._lock:
            if len(self._rows) >= self.limit or row in self._rows:
                return
            old = self._row_of.get(entry.id)
            if old is not None:  # another version of this id, replaced elsewhere
                self._rows.pop(old, None)
            self._rows[row] = entry
            self._row_of[entry.id] = row

    def forget(self, doc_ids: list[str]) -> None:
        """Drop the rows of ``doc_ids`` (documents just replaced or deleted)."""
        with self._lock:
            for doc_id in doc_ids:
                old = self._row_of.pop(doc_id, None)
                if old is not None:
                    self._rows.pop(old, None)

    def clear(self) -> None:
        """Drop everything (the index closed)."""
        with self._lock:
            self._rows.clear()
            self._row_of.clear()


def builder(cls: type[T]) -> Callable[..., T]:
    """A constructor of the slotted attrs class ``cls`` of four fields taking them
    positionally, in declaration order, that runs no converter or validator.

    What ``aieng_hookspecs.types.unchecked`` does, specialised once per class: several times
    cheaper per value, which matters at 100 hits a query. For fields this module has validated
    itself (they were checked when the document was indexed).
    """
    names = [field.name for field in attrs.fields(cls)]  # type: ignore[arg-type]
    setters = [getattr(cls, name).__set__ for name in names]
    new = object.__new__

    if len(setters) != 4:
        raise TypeError(f"builder() handles classes of 4 fields; {cls.__name__} has {names}")
    set0, set1, set2, set3 = setters

    def build(a: Any, b: Any, c: Any, d: Any) -> T:
        instance: T = new(cls)
        set0(instance, a)
        set1(instance, b)
        set2(instance, c)
        set3(instance, d)
        return instance

    build.__doc__ = f"A {cls.__name__} of ({', '.join(names)}), unchecked."
    return build
