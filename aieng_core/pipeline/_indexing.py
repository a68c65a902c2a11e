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
from typing import Any

import structlog

from aieng_hookspecs.types import Chunk, Document

from ..dispatch import Check, expect

__all__ = ["CHUNKS", "COUNT", "Batch", "DeleteCall", "as_chunks", "delete_runs"]

#: Deletes ids from every index; returns the largest count any index reported deleted.
DeleteCall = Callable[[Sequence[str]], Awaitable[int]]

#: The most ids a run probes per name in one call (the first call probes one per name).
_MAX_WINDOW = 256
#: How far a run goes under one name (a chunk count no document reaches).
_MAX_RUN = 1 << 16
#: How many names' runs one call follows past the first window.
_MAX_SLICE = 1024

log = structlog.get_logger(__name__)

#: What ``aieng_chunk_document`` must return (a wrong value is the chunker's failure).
CHUNKS = expect((list, tuple), items=Chunk)


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
    index reports how many ids it deleted, not which: every stem's run goes on while a
    window deletes anything. So past the first window (every stem's first id, in one call:
    the only call when no stem has a run) the stems go on in slices of 1,024: a call asks
    for at most 1,024 x 256 ids however many documents are deleted, and one long document
    keeps only its slice's stems going. Each call also asks for an id no index holds: an
    index that reports more deleted than it was asked for counted it, and would never let a
    run end (past 65,536 ids under one name, a run ends anyway).

    :param delete: deletes a list of ids (``Pipeline.delete`` to take their chunks along).
    :param extra: ids deleted with the first window.
    :param keep: ids never deleted (those the batch at hand has just written).
    :param nested: ``delete`` deletes each id's chunks too: its count may pass the ids'.
    :returns: what each call reported deleted, summed.
    """
    # A stem whose next id the batch has just written has no stale run to follow.
    position = {stem: start for stem, start in starts.items() if f"{stem}{start}" not in keep}
    probe = _Probe(delete, keep, nested)
    if not await probe([*extra, *(f"{stem}{start}" for stem, start in position.items())]):
        return probe.total
    stems = list(position.items())
    for at in range(0, len(stems), _MAX_SLICE):
        part = {stem: start + 1 for stem, start in stems[at:at + _MAX_SLICE]}
        width = 16
        while await probe([f"{stem}{i}" for stem, start in part.items()
                           for i in range(start, start + width)]):
            part = {stem: start + width for stem, start in part.items()}
            if max(part.values()) >= _MAX_RUN:
                log.warning("index.stale_run_too_long", ids_per_document=_MAX_RUN)
                break
            width = min(2 * width, _MAX_WINDOW)
        if probe.stopped:
            break
    return probe.total


class _Probe:
    """One window's call to ``delete``: whether the runs it asked for go on."""

    def __init__(self, delete: DeleteCall, keep: Collection[str], nested: bool) -> None:
        self._delete, self._keep, self._nested = delete, keep, nested
        self._absent = f"aieng-absent-{uuid.uuid4().hex}"
        self.total = 0
        self.stopped = False  # an index miscounted: no run can be told to end

    async def __call__(self, ids: list[str]) -> bool:
        ids = [i for i in ids if i not in self._keep]
        if not ids:
            return False
        deleted = await self._delete([*ids, self._absent])
        self.total += deleted
        if deleted > len(ids) and not self._nested:  # it counted ``absent``
            log.warning("index.delete_miscounted", asked=len(ids) + 1, deleted=deleted,
                        hint="an index's aieng_delete counts ids it does not hold")
            self.stopped = True
        return bool(deleted) and not self.stopped


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
