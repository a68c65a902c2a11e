"""What a pipeline indexes for a document, and how it deletes what a document no longer has.

A chunked document ``d`` is indexed as ``d#0``, ``d#1``, ... in document order, whatever
ids its chunker gave; a document indexed whole keeps its id. Ids under one name are thus
contiguous from 0, so after a document is indexed again, its old chunks past the new last
one are found by asking the indexes to delete ``d#n``, ``d#n+1``, ... until none holds
the next id: no index has to list what it holds.
"""

from __future__ import annotations

import numbers
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Self

import structlog

from aieng_hookspecs.types import Chunk, Document

from ..dispatch import Check, expect

__all__ = ["CHUNKS", "COUNT", "Batch", "DeleteCall", "Indexed", "as_chunks", "delete_runs"]

#: Deletes ids from every index; returns the largest count any index reported deleted.
DeleteCall = Callable[[Sequence[str]], Awaitable[int]]

#: The most ids a run probes per name in one call (the first call probes one per name).
_MAX_WINDOW = 256
#: How far a run goes under one name (a chunk count no document reaches).
_MAX_RUN = 1 << 16
#: The fewest names' runs a group is split into, and the most ids one window asks for.
_MIN_GROUP, _MAX_IDS = 64, 1 << 18

log = structlog.get_logger(__name__)

#: What ``aieng_chunk_document`` must return (a wrong value is the chunker's failure).
CHUNKS = expect((list, tuple), items=Chunk)


class Indexed(int):
    """What :meth:`Pipeline.index` returns: the count the indexes reported written (an
    ``int``, as it always was), and in ``deleted`` the stale ids they reported deleted on
    the way (the chunks a document indexed again no longer has, or the document indexed
    whole before it was chunked)."""

    deleted: int

    def __new__(cls, written: int, deleted: int = 0) -> Self:
        made = super().__new__(cls, written)
        made.deleted = deleted
        return made


def _count(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return f"returned {type(value).__name__}, expected int (a count)"
    return ""


#: What ``aieng_index`` and ``aieng_delete`` must return: a count.
COUNT: Check = _count


def as_chunks(document: Document, chunks: Sequence[Chunk]) -> list[Document]:
    """The documents to index for ``document`` cut into ``chunks``: the i-th is
    ``<document id>#<i>``; a chunker's own id, when it differs, is kept as ``chunk_id``."""
    parts = []
    for index, chunk in enumerate(chunks):
        name = f"{document.id}#{index}"
        own = {} if chunk.id == name else {"chunk_id": chunk.id}
        parts.append(Document(id=name, text=chunk.text, title=document.title,
                              metadata={**document.metadata, **chunk.metadata, **own,
                                        "document_id": document.id,
                                        "start": chunk.start, "end": chunk.end}))
    return parts


async def delete_runs(delete: DeleteCall, starts: Mapping[str, int],
                      extra: Sequence[str] = (), *, keep: Collection[str] = (),
                      nested: bool = False) -> int:
    """Delete ``<stem><start>``, ``<stem><start+1>``, ... for each stem in ``starts`` (a
    document's chunks: the stem ``d#``), a window of ids per stem at a time (one, then 16,
    doubling up to 256), until a window deletes nothing.

    The ids under a stem are contiguous, so the first one no index holds ends its run. An
    index reports how many ids it deleted, not which: the stems of one call go on while
    its window deletes anything. So that one long run does not keep thousands going, a
    group of stems is split in two (each half followed on its own, its window not grown)
    when its window's count says fewer than half of them went on, down to 64 stems, and
    when its next window would ask for more than 262,144 ids. The first window (every
    stem's first id) is one call: the only one when no stem has a run. Each call also asks
    for an id no index holds: an index that reports more deleted than it was asked for
    counted it, and would never let a run end (past 65,536 ids under one name, a run ends
    anyway).

    :param delete: deletes a list of ids (``Pipeline.delete`` to take their chunks along).
    :param extra: ids deleted with the first window.
    :param keep: ids never deleted (those the batch at hand has just written).
    :param nested: ``delete`` deletes each id's chunks too: its count may pass the ids'
        (so it may split fewer groups than it could).
    :returns: what each call reported deleted, summed.
    """
    # A stem whose next id the batch has just written has no stale run to follow.
    stems = [(stem, start) for stem, start in starts.items() if f"{stem}{start}" not in keep]
    probe = _Probe(delete, keep, nested)
    await _follow(probe, stems, 1, extra)
    return probe.total


async def _follow(probe: _Probe, stems: list[tuple[str, int]], width: int,
                  extra: Sequence[str] = ()) -> None:
    """Follow the runs of ``stems`` (each ``(stem, next number)``) together from a window of
    ``width`` ids, splitting the group as :func:`delete_runs` says."""
    while stems:
        if len(stems) > _MIN_GROUP and len(stems) * width > _MAX_IDS:
            half = len(stems) // 2
            await _follow(probe, stems[:half], width, extra)
            await _follow(probe, stems[half:], width)
            return
        ids = [*extra, *(f"{stem}{i}" for stem, start in stems
                         for i in range(start, start + width))]
        extra = ()
        deleted = await probe(ids)
        if not deleted:
            return
        stems = [(stem, start + width) for stem, start in stems]
        if max(start for _, start in stems) >= _MAX_RUN:
            log.warning("index.stale_run_too_long", ids_per_document=_MAX_RUN)
            return
        if len(stems) > _MIN_GROUP and 2 * deleted < len(stems) * width:
            half = len(stems) // 2
            await _follow(probe, stems[:half], width)
            await _follow(probe, stems[half:], width)
            return
        width = 16 if width == 1 else min(2 * width, _MAX_WINDOW)


class _Probe:
    """A window's call to ``delete``, and what the calls deleted in all."""

    def __init__(self, delete: DeleteCall, keep: Collection[str], nested: bool) -> None:
        self._delete, self._keep, self._nested = delete, keep, nested
        self._absent = f"aieng-absent-{uuid.uuid4().hex}"
        self.total = 0
        self.stopped = False  # an index miscounted: no run can be told to end

    async def __call__(self, ids: list[str]) -> int:
        """Delete ``ids``: how many the indexes reported deleted (0 once one miscounted)."""
        ids = [i for i in ids if i not in self._keep]
        if not ids or self.stopped:
            return 0
        deleted = await self._delete([*ids, self._absent])
        self.total += deleted
        if deleted > len(ids) and not self._nested:  # it counted ``absent``
            log.warning("index.delete_miscounted", asked=len(ids) + 1, deleted=deleted,
                        hint="an index's aieng_delete counts ids it does not hold")
            self.stopped = True
            return 0
        return deleted


class Batch:
    """Documents waiting to be indexed, each as what the indexes get for it: its chunks, or
    itself whole. A document given again replaces what the batch held for it."""

    def __init__(self) -> None:
        self._parts: dict[str, tuple[list[Document], bool]] = {}
        self.size = 0

    def __len__(self) -> int:
        return len(self._parts)

    def add(self, document: Document, parts: list[Document], chunked: bool) -> None:
        old = self._parts.pop(document.id, None)
        if old is not None:
            self.size -= len(old[0])
        self._parts[document.id] = (parts, chunked)
        self.size += len(parts)

    def documents(self) -> list[Document]:
        """What the indexes get, in order."""
        return [part for parts, _ in self._parts.values() for part in parts]

    def stale(self) -> tuple[dict[str, int], list[str]]:
        """Where each document's stale ids may start (``delete_runs``' ``starts``: past its
        last chunk; ``d#0`` on for one indexed whole), and the ids of the chunked documents
        themselves (indexed whole before: ``extra``)."""
        starts = {f"{doc_id}#": len(parts) if chunked else 0
                  for doc_id, (parts, chunked) in self._parts.items()}
        whole = [doc_id for doc_id, (_, chunked) in self._parts.items() if chunked]
        return starts, whole
