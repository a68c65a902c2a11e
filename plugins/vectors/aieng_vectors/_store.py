"""The store behind ``vectors``: unit vectors in rows, exact and HNSW search (synchronous).

Every public method takes the store's lock and is meant to run in a worker thread (the
component calls it through ``anyio.to_thread.run_sync``): numpy and usearch work and file
I/O never run on the event loop.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from aieng_hookspecs import listed
from aieng_hookspecs import stop_if_cancelled as _stop_if_cancelled
from aieng_hookspecs.types import Document

from ._disk import Folder, Manifest, decode_documents, decode_vectors
from ._filters import FilterIndex
from ._graphs import new_graph, restore
from ._options import VectorsOptions

__all__ = ["VectorStore", "unit_rows"]

log = structlog.get_logger(__name__)

# A journal larger than this (and than the snapshot) is folded into a new snapshot: the
# folder of a small index written for weeks (its documents replaced again and again)
# holds its snapshot and at most this much history, and an open replays no more. Each
# snapshot costs at most the journal bytes written since the last one (amortised flat).
_COMPACT_BYTES = 4 * 1024 * 1024
# HNSW searches with filters ask for this many times k, growing until k hits pass.
_OVERSAMPLE = 4
# While the graph is being built, each write also inserts this many waiting rows (or four
# times its own batch, whichever is more): the build is spread over the writes, so no
# single index call pays for the whole graph (50k x 384 takes ~50 s on two cores, past
# the kernel's default 30 s per hook call).
_CATCH_UP = 2048
# A matrix of more rows than this shrinks once three quarters of them are unused.
_SHRINK_ROWS = 1024
# Seconds between two looks at whether the caller waiting for the store's lock left.
_POLL_S = 0.05


def unit_rows(raw: Any, count: int, ids: Sequence[str] = ()) -> Any:
    """Embedder output as a float32 array of ``count`` unit rows (zero rows stay zero).

    :param ids: the ids of the documents embedded, to name the first one whose vector is
        not finite.
    :raises ValueError: when the shape is not ``(count, dim)`` or a value is not finite.
    """
    try:
        array = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the embedder returned something that is no matrix: {exc}") from None
    if array.ndim != 2 or array.shape[0] != count or array.shape[1] < 1:
        raise ValueError(f"the embedder returned vectors of shape {array.shape} for {count} "
                         "texts; expected one non-empty vector per text")
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        which = (f" for document {ids[row]!r} (text {row + 1} of {count}); nothing was "
                 "written" if row < len(ids) else "")
        raise ValueError(f"the embedder returned a vector with NaN or infinite values{which}")
    # Scale each row by its largest entry first, so squaring never overflows.
    peak = np.abs(array).max(axis=1, keepdims=True)
    peak[peak == 0] = 1.0
    array = array / peak
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (array / norms).astype(np.float32)


# Rows rescored at once by _cosines (a float64 copy of this many rows at a time).
_RESCORE_ROWS = 4096


def _cosines(vectors: Any, query: Any) -> Any:
    """The cosines of ``vectors`` (unit float32 rows) with ``query``, in float64: exact
    products (float32 times float32 fits a float64), summed row by row, so a row scores
    the same whatever rows come with it and wherever it sits. (BLAS's float32
    matrix-vector product does not: its kernels block rows, and a row's last bits depend
    on its place in the block, so copies of one vector scored apart and came back in row
    order, not by id.)"""
    query64 = query.astype(np.float64)
    scores = np.empty(len(vectors), np.float64)
    for start in range(0, len(vectors), _RESCORE_ROWS):
        block = vectors[start : start + _RESCORE_ROWS].astype(np.float64)
        block *= query64
        scores[start : start + _RESCORE_ROWS] = block.sum(axis=1)
    return scores


def _blas_error(dim: int) -> float:
    """A bound on how far BLAS's float32 product of a unit row and a unit query is from
    its exact value: ``dim`` roundings of at most 2^-24 each (``gamma_dim``, the sum of
    the products' magnitudes being at most 1), doubled for rows an ulp past unit length
    and a kernel's extra steps."""
    return 2.0 * (dim + 2) * 2.0**-24


def _unit_query(raw: Any) -> Any:
    """One query vector as :func:`unit_rows` makes it, with a short path for what
    embedders return for one text: a float32 matrix of one row, or a list of one float32
    vector, finite and non-zero, normalized in float64 (no overflow: float32 values
    squared fit a float64). Anything else takes unit_rows's checks."""
    row = raw[0] if isinstance(raw, list) and len(raw) == 1 else raw
    if isinstance(row, np.ndarray) and row.dtype == np.float32 and row.size and (
            row.ndim == 1 if row is not raw else row.ndim == 2 and row.shape[0] == 1):
        row = row.reshape(-1).astype(np.float64)
        norm = math.sqrt(float(row @ row))  # the same correctly rounded root as np.sqrt
        if 0.0 < norm < math.inf:  # also false for NaN: then unit_rows says what is wrong
            return (row / norm).astype(np.float32)
    return unit_rows(raw, 1)[0]


class VectorStore:
    """Documents with one unit vector each; cosine search, exact or through HNSW.

    Rows are kept dense: deleting a row moves the last row into its place. Each row also
    has an HNSW key that never changes while a graph holds it (a key is never reused
    within one graph), so the graph survives the moves. Keys are renumbered only while
    no graph holds any (see ``_renumber_keys``).

    The graph is built progressively: when the index reaches ``exact_below`` rows an empty
    graph is started, new rows go straight into it, and each write also inserts a slice
    of the rows still waiting. Until none waits, queries stay exact (and correct). Opening
    a folder, ``flush`` and ``close`` (which have no time limit) finish the graph.
    """

    def __init__(self, options: VectorsOptions) -> None:
        self.options = options
        self.lock = threading.RLock()
        self.dim = 0
        self._matrix = np.zeros((0, 0), np.float32)
        self._count = 0
        self._docs: list[Document] = []
        self._keys: list[int] = []
        self._rows: dict[str, int] = {}
        # The row of each HNSW key (-1: none), indexed by key: one numpy gather maps a
        # search's keys to rows. Keys are renumbered whenever no graph holds them, so it
        # stays within a small multiple of the row count.
        self._key_row = np.full(16, -1, dtype=np.int64)
        self._next_key = 0
        self._hnsw: Any = None
        self._waiting: list[int] = []  # keys of rows not yet in the graph, oldest first
        self._tombstones = 0
        # The metadata's codes for filters: built at the first filtered search, then kept
        # in step with every write (None: not built, nothing to keep).
        self._filter_index: FilterIndex | None = None
        self._folder: Folder | None = None
        # The process that took the folder's lock: a child forked from it shares that
        # lock (flock: one per open file), so it must not write (see _check_writable).
        self._pid = os.getpid()
        self._generation = 0
        self._snapshot_bytes = 0
        # After a snapshot a write started failed: the journal size from which the next
        # write tries again (0: no failure pending).
        self._retry_bytes = 0
        self._model = options.model
        # Set by close: a write reaching the store after it (one that was still embedding
        # when its pipeline closed) would change memory only, lost at the next open.
        self._closed = False

    def __len__(self) -> int:
        return self._count

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._rows

    @property
    def uses_hnsw(self) -> bool:
        """Whether queries are answered by the HNSW graph now."""
        return (self._hnsw is not None and not self._waiting
                and self._count >= self.options.exact_below)

    def _take_lock(self) -> None:
        """Take the store's lock, waiting for it in steps: a caller that left meanwhile
        (a host's deadline while another thread flushes or loads a large index) ends the
        wait with its cancellation, instead of waiting out the other thread's work."""
        lock = self.lock
        while not lock.acquire(timeout=_POLL_S):
            _stop_if_cancelled()

    def document(self, doc_id: str) -> Document | None:
        """The stored document with this id."""
        self._take_lock()
        try:
            row = self._rows.get(doc_id)
            return None if row is None else self._docs[row]
        finally:
            self.lock.release()

    # -- writing -------------------------------------------------------------------------

    def upsert(self, documents: Sequence[Document], raw: Any) -> int:
        """Add or replace documents with their embeddings (``raw``, one row per document).

        :returns: the number of documents written.
        :raises ValueError: when the vectors' dimension differs from the index's.
        """
        vectors = unit_rows(raw, len(documents), [doc.id for doc in documents])
        latest = {doc.id: index for index, doc in enumerate(documents)}
        if len(latest) != len(documents):  # one id twice in a batch: the last one wins
            keep = sorted(latest.values())
            documents, vectors = [documents[i] for i in keep], vectors[keep]
        self._take_lock()
        try:
            self._check_open()
            self._check_writable()
            self._check_dim(vectors.shape[1])
            if self._folder is not None:
                if self._generation == 0 and not (self._folder.root / "index.json").exists():
                    self._folder.write_manifest(self._manifest())
                documents = self._folder.append_upsert(self._generation, documents, vectors)
            self._apply_upsert(documents, vectors)
            self._after_write(catch_up=max(_CATCH_UP, 4 * len(documents)))
            return len(documents)
        finally:
            self.lock.release()

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id; unknown ids are ignored.

        :returns: the number of documents deleted.
        :raises TypeError: for a lone string (one id is ``[id]``, not its characters).
        """
        wanted = listed(ids)
        self._take_lock()
        try:
            self._check_open()
            self._check_writable()
            present = list(dict.fromkeys(i for i in wanted if i in self._rows))
            if not present:
                return 0
            if self._folder is not None:
                self._folder.append_delete(self._generation, present)
            self._apply_delete(present)
            self._after_write(catch_up=max(_CATCH_UP, 4 * len(present)))
            return len(present)
        finally:
            self.lock.release()

    def _check_open(self) -> None:
        if self._closed:
            where = f" at {self.options.path}" if self.options.path else ""
            raise RuntimeError(f"the vectors index{where} is closed: the write was not made "
                               "(its pipeline closed while it was in flight)")

    def check_writable(self) -> None:
        """Raise what a write would raise on a closed or read-only store, before the caller
        embeds anything for it (no lock: it reads two fields that only open and close
        set)."""
        self._check_open()
        self._check_writable()

    def _check_writable(self) -> None:
        folder = self._folder
        if folder is not None and self._forked():
            raise RuntimeError(
                f"the vectors index at {folder.root} was opened for writing by process "
                f"{self._pid}, and this process ({os.getpid()}) was forked from it: the "
                "folder's one writer is the parent, and two processes appending to its "
                "journal would corrupt it; nothing was written. Searches here see the index "
                "as of the fork. Open the index after the fork (read_only = true in serving "
                "workers) to index from this process")
        if folder is None or not folder.read_only:
            return
        number = folder.read_only
        if folder.requested:
            why = ("its read_only option), for searches; nothing was written. Index with a "
                   "component without read_only, once the read-only ones are closed (the "
                   "serving workers stopped)")
        else:
            why = (f"its folder cannot be written: {os.strerror(number)}), for searches; "
                   "nothing was written. Make the folder writable (or copy it to a writable "
                   "place and use that path) to index into it")
        raise OSError(number, f"the vectors index at {folder.root} was opened read-only ({why}",
                      str(folder.root))

    def _check_dim(self, dim: int) -> None:
        if self.dim == 0:
            self.dim = dim
            self._matrix = np.zeros((0, dim), np.float32)
        elif dim != self.dim:
            raise ValueError(f"the embedder returned vectors of dimension {dim}; this index "
                             f"holds vectors of dimension {self.dim} (another model?)")

    def _apply_upsert(self, documents: Sequence[Document], vectors: Any) -> None:
        first_key = self._next_key
        new_rows: list[int] = []
        old_keys: list[int] = []
        filter_index = self._filter_index
        for doc, vector in zip(documents, vectors):
            row = self._rows.get(doc.id)
            if filter_index is not None:
                if row is not None:
                    filter_index.clear(row, self._docs[row].metadata)
                filter_index.set(self._count if row is None else row, doc.metadata)
            if row is None:
                row = self._count
                self._grow(row + 1)
                self._count += 1
                self._docs.append(doc)
                self._keys.append(-1)
                self._rows[doc.id] = row
            else:
                self._docs[row] = doc
                old_keys.append(self._keys[row])
            self._keys[row] = self._next_key
            self._next_key += 1
            self._matrix[row] = vector
            new_rows.append(row)
        self._grow_keys(self._next_key)
        self._key_row[first_key:self._next_key] = new_rows
        if old_keys:  # after: an id twice in one batch leaves its first new key rowless
            self._key_row[old_keys] = -1
        if self._hnsw is not None:
            if old_keys:
                self._hnsw_remove(old_keys)
            self._hnsw.add(np.arange(first_key, self._next_key, dtype=np.uint64),
                           self._matrix[new_rows], threads=self.options.threads)

    def _apply_delete(self, ids: Sequence[str]) -> None:
        removed: list[int] = []
        key_row = self._key_row
        filter_index = self._filter_index
        for doc_id in ids:
            row = self._rows.pop(doc_id)
            key = self._keys[row]
            removed.append(key)
            key_row[key] = -1
            last = self._count - 1
            if filter_index is not None:
                filter_index.clear(row, self._docs[row].metadata)
                if row != last:
                    filter_index.move(last, row, self._docs[last].metadata)
            if row != last:  # move the last row into the hole
                self._matrix[row] = self._matrix[last]
                self._docs[row] = self._docs[last]
                self._keys[row] = self._keys[last]
                self._rows[self._docs[row].id] = row
                key_row[self._keys[row]] = row
            self._docs.pop()
            self._keys.pop()
            self._count = last
        if self._hnsw is not None:
            self._hnsw_remove(removed)
        self._shrink()

    def _hnsw_remove(self, keys: list[int]) -> None:
        # Waiting keys are not in the graph yet: removing them removes nothing.
        self._tombstones += self._hnsw.remove(np.asarray(keys, dtype=np.uint64))

    def _grow_keys(self, keys: int) -> None:
        if keys > self._key_row.shape[0]:
            grown = np.full(max(keys, 2 * self._key_row.shape[0]), -1, dtype=np.int64)
            grown[: self._key_row.shape[0]] = self._key_row
            self._key_row = grown

    def _renumber_keys(self) -> None:
        """Give the rows keys 0 … count-1 again, when keys issued (one per write of a
        document) far outnumber the rows. Only while no graph holds a key: no graph, or
        a fresh empty one."""
        if self._next_key <= 2 * self._count + 1024:
            return
        self._keys = list(range(self._count))
        self._next_key = self._count
        self._key_row = np.full(max(16, 2 * self._count), -1, dtype=np.int64)
        self._key_row[: self._count] = np.arange(self._count)

    def _grow(self, rows: int) -> None:
        if rows <= self._matrix.shape[0]:
            return
        capacity = max(rows, int(self._matrix.shape[0] * 1.5) + 16)
        grown = np.zeros((capacity, self.dim), np.float32)
        grown[: self._count] = self._matrix[: self._count]
        self._matrix = grown

    def _shrink(self) -> None:
        """Give back the rows of a matrix mostly unused since deletions (a quarter or less
        in use): an index that held a million rows and holds a thousand now keeps twice
        its rows, not the million. Amortised: the rows kept take as many deletions again
        before the next copy."""
        capacity = self._matrix.shape[0]
        if capacity > _SHRINK_ROWS and self._count <= capacity // 4:
            self._matrix = self._matrix[: max(2 * self._count, 16)].copy()

    def _after_write(self, catch_up: int = 0) -> None:
        if self._filter_index is not None:
            self._filter_index.tidy(self._docs)
        exact_below = self.options.exact_below
        if self._hnsw is None:
            if self._count >= max(exact_below, 1):
                self._start_graph()
            else:
                self._renumber_keys()
        elif self._count < exact_below // 2:
            # Small again: exact search; the hysteresis avoids rebuilding back and forth.
            self._hnsw, self._waiting = None, []
        elif self._tombstones > max(self._count, 1024):
            self._start_graph()  # mostly deleted entries: a fresh graph is smaller and faster
        self._catch_up(catch_up)
        folder = self._folder
        threshold = max(_COMPACT_BYTES, self._snapshot_bytes)
        if (folder is not None and not folder.read_only
                and folder.journal_bytes > max(threshold, self._retry_bytes)):
            try:
                self._write_snapshot()
            except Exception as exc:  # noqa: BLE001 (logged: the write itself is done)
                # The write is journalled and applied: it stands. Raising would report a
                # write that landed (every write, on a full disk) as failed. The next try
                # waits until the journal has grown by a threshold again: retrying at
                # every write would make each one pay a whole snapshot while the disk
                # stays full.
                self._retry_bytes = folder.journal_bytes + threshold
                log.warning("vectors.snapshot_failed", path=str(folder.root),
                            error=f"{type(exc).__name__}: {exc}",
                            retry_at_journal_bytes=self._retry_bytes)

    def _start_graph(self) -> None:
        # The engine is imported here, only when an index grows this large.
        self._hnsw = new_graph(self.options.engine, self.dim, self.options.connectivity,
                               self.options.expansion_add, self.options.expansion_search)
        self._renumber_keys()  # the new graph holds no key yet
        self._waiting = list(self._keys)
        self._tombstones = 0

    def _catch_up(self, limit: int) -> None:
        """Insert up to ``limit`` waiting rows into the graph (rows deleted or replaced
        since they were queued are skipped)."""
        if self._hnsw is None or not self._waiting or limit <= 0:
            return
        batch, self._waiting = self._waiting[:limit], self._waiting[limit:]
        keys = np.asarray(batch, dtype=np.int64)
        rows = self._key_row[keys]
        live = rows >= 0
        if live.any():
            self._hnsw.add(keys[live].astype(np.uint64), self._matrix[rows[live]],
                           threads=self.options.threads)

    # -- searching -----------------------------------------------------------------------

    def search(self, raw_query: Any, k: int,
               filters: Mapping[str, Any]) -> list[tuple[Document, float]]:
        """The ``k`` documents nearest the query vector, best first, with cosine scores.

        Ties are broken by document id, so equal inputs give equal outputs.
        """
        query = _unit_query(raw_query)
        self._take_lock()
        try:
            if self._count == 0 or k < 1:  # k = 0 asks for nothing (as in bm25)
                return []
            if query.shape[0] != self.dim:
                raise ValueError(f"the embedder returned a query vector of dimension "
                                 f"{query.shape[0]}; this index holds dimension {self.dim}")
            # A zero query (an embedder's answer to a text it has no words for) scores
            # every document 0: the graph's candidates would be arbitrary ones, where the
            # exact scan gives the tie order, by id.
            graph = self.uses_hnsw and bool(query.any())
            if not filters and graph:
                return self._search_graph(query, k)
            allowed: Any = None
            if filters:
                if self._filter_index is None:
                    self._filter_index = FilterIndex(self._docs)
                allowed = self._filter_index.rows(filters, self._docs)
                if allowed.size == 0:
                    return []
            small = self._count if allowed is None else int(allowed.size)
            if not graph or small < self.options.exact_below:
                rows = None if allowed is None else allowed  # None: all rows, no copy
            else:
                rows = self._hnsw_candidates(query, k, allowed)
            return self._rank(query, rows, k)
        finally:
            self.lock.release()

    def _search_graph(self, query: Any, k: int) -> list[tuple[Document, float]]:
        """The unfiltered HNSW search, on a short path: what ``_rank`` gives for the
        graph's candidates (their exact cosines, clamped, ordered by score then id),
        computed on the ≤ ``k`` candidates as Python floats."""
        graph = self._hnsw
        want = min(k, self._count)
        graph.expansion_search = max(self.options.expansion_search, want)
        rows = self._key_row[graph.search(query, want)]
        listed: list[int] = rows.tolist()
        if len(listed) < want or -1 in listed:
            # The graph reached fewer live entries than asked for (many of its entries
            # deleted or replaced can cut it into parts), or gave a key without a row
            # (never expected): the exact scan answers in full.
            return self._rank(query, None, want)
        # The same cosines as _rank's; ``take`` gathers the rows faster than fancy indexing.
        scores: list[float] = _cosines(self._matrix.take(rows, axis=0), query).tolist()
        docs = self._docs
        if all(map(float.__gt__, scores, scores[1:])) and (
                scores[0] <= 1.0 and scores[-1] >= -1.0):
            # The common case: the graph's order is the exact one, no tie, nothing past ±1.
            return list(zip(map(docs.__getitem__, listed), scores))
        # A tie, a near tie the graph's own distances put the other way, or rounding past
        # ±1: the general ranking (clamp, then order by score and id).
        return self._rank(query, rows, want)

    def _hnsw_candidates(self, query: Any, k: int, allowed: Any) -> Any:
        permitted: Any = None
        if allowed is not None:  # a mask of the rows: the graph's candidates kept in order
            permitted = np.zeros(self._count, bool)
            permitted[allowed] = True
        live = self._count
        want = k if permitted is None else k * _OVERSAMPLE
        while True:
            want = min(want, live)
            self._hnsw.expansion_search = max(self.options.expansion_search, want)
            rows = self._key_row[self._hnsw.search(query, want)]
            rows = rows[rows >= 0]
            if rows.size < want:
                # The graph cannot reach as many live entries as asked for (see
                # _search_graph): the exact scan of the permitted rows answers in full.
                return allowed
            if permitted is not None:
                rows = rows[permitted[rows]]
            if rows.size >= k or want >= live:
                return rows
            want *= _OVERSAMPLE

    def _rank(self, query: Any, rows: Any, k: int) -> list[tuple[Document, float]]:
        """The best ``k`` of ``rows`` (all rows when ``None``) by exact cosine
        (:func:`_cosines`), equal scores by id."""
        everything = rows is None
        if rows is None:
            rows = np.arange(self._count)
        elif rows.size == 0:
            return []
        # A slice is a view: gathering every row by index would copy the matrix.
        matrix = self._matrix[: self._count] if everything else self._matrix[rows]
        if not query.any():  # a zero query: every cosine is 0, computed or not
            scores = np.zeros(rows.size)
        else:
            if rows.size > k:
                # BLAS's float32 product picks the candidates: every row within twice its
                # error of the k-th score, hence every row of the exact top k, ties
                # included; they alone are rescored.
                rough = matrix @ query
                kth = np.partition(rough, rows.size - k)[rows.size - k]
                keep = np.nonzero(rough >= kth - 2.0 * _blas_error(self.dim))[0]
                rows, matrix = rows[keep], matrix[keep]
            scores = np.clip(_cosines(matrix, query), -1.0, 1.0)
        order = np.argsort(-scores, kind="stable")
        ranked = scores[order]
        docs = self._docs
        if ranked.size > 1 and bool((ranked[1:] == ranked[:-1]).any()):
            # Equal scores: ordered by id (the common case, no tie, skips this sort).
            pairs = [(score, docs[row]) for row, score in zip(rows.tolist(), scores.tolist())]
            pairs.sort(key=lambda pair: (-pair[0], pair[1].id))
            return [(doc, score) for score, doc in pairs[:k]]
        return [(docs[row], score)
                for row, score in zip(rows[order[:k]].tolist(), ranked[:k].tolist())]

    # -- persistence ---------------------------------------------------------------------

    def _manifest(self, generation: int | None = None) -> Manifest:
        return Manifest(generation=self._generation if generation is None else generation,
                        model=self._model, dim=self.dim, next_key=self._next_key,
                        hnsw=self._hnsw is not None and not self._waiting)

    def open(self, root: Path) -> None:
        """Lock the folder and load the snapshot and journal found there.

        :raises ValueError: when the folder holds an index of another embedding model, or
            one whose files disagree.
        :raises RuntimeError: when another component has the folder open (a writer; or
            read-only ones, for a writer).
        :raises FileNotFoundError: when the store is ``read_only`` and the folder holds no
            index.
        """
        with self.lock:
            if self._folder is not None:
                return  # open already (a load from another thread got here first)
            folder = Folder(root)
            folder.lock(read_only=self.options.read_only)
            self._closed = False
            try:
                self._load(folder)
            except BaseException:
                folder.unlock()
                raise
            self._folder = folder
            self._pid = os.getpid()

    def _forked(self) -> bool:
        """Whether this process was forked from the writer that opened the folder."""
        folder = self._folder
        return folder is not None and not folder.read_only and self._pid != os.getpid()

    def _load(self, folder: Folder) -> None:
        manifest = folder.manifest()
        if manifest is None:
            folder.drop_journal()  # nothing recorded without a manifest: a stray one
            return
        if manifest.model != self._model:
            raise ValueError(
                f"the vectors index at {folder.root} was built with embedding model "
                f"{manifest.model or '(the default)'!r}, and this component embeds with "
                f"{self._model or '(the default)'!r}: use another path, or re-index")
        snapshot = folder.snapshot(manifest)
        self._generation = manifest.generation
        self.dim = manifest.dim
        # np.load gives a fresh float32 array of this process's own: kept as it is (a
        # copy doubled the memory an opening needs at its peak, 3 GB for 1M x 384).
        self._matrix = np.require(snapshot.vectors, np.float32, ["C", "W"])
        self._count = len(snapshot.documents)
        self._docs = list(snapshot.documents)
        self._keys = list(snapshot.keys)
        self._rows = {doc.id: row for row, doc in enumerate(self._docs)}
        self._filter_index = None  # built again at the first filtered search
        self._next_key = max(manifest.next_key, max(self._keys, default=-1) + 1)
        self._key_row = np.full(max(16, self._next_key), -1, dtype=np.int64)
        self._key_row[self._keys] = np.arange(self._count)
        self._snapshot_bytes = int(self._matrix.nbytes)
        if snapshot.hnsw_file is not None:
            self._restore_hnsw(snapshot.hnsw_file)
        for op in folder.journal(manifest.generation):
            if op.get("op") == "upsert":
                docs = decode_documents(op)
                self._check_dim(int(op["dim"]))
                self._apply_upsert(docs, decode_vectors(op, len(docs)))
            elif op.get("op") == "delete":
                self._apply_delete([i for i in op["ids"] if i in self._rows])
        self._after_write()
        self._catch_up(len(self._waiting))  # opening has no time limit: finish the graph

    def _restore_hnsw(self, path: Path) -> None:
        try:
            index = restore(self.options.engine, path, self.dim)
        except (OSError, RuntimeError, ValueError):
            # Unreadable (a file cut short by a crash): the graph is derived data, rebuilt
            # from the snapshot's vectors like a stale one.
            index = None
        if index is None or len(index) != self._count or index.ndim != self.dim:
            self._start_graph()  # a stale or foreign graph: rebuild from the vectors
            return
        index.expansion_search = self.options.expansion_search
        self._hnsw, self._waiting, self._tombstones = index, [], 0

    def flush(self) -> None:
        """Finish the graph, then fold the journal into a new snapshot (in a folder, when
        anything was written since the last one)."""
        with self.lock:
            self._catch_up(len(self._waiting))
            folder = self._folder
            if folder is None or folder.read_only or self._forked():
                # (read-only: a journal stays as it is, read again at each open; a forked
                # child: the parent's files are the parent's to write)
                return
            if folder.journal_bytes == 0 and (folder.root / "index.json").exists():
                return
            if self.dim == 0:
                return  # never written: leave the folder empty
            self._write_snapshot()

    def _write_snapshot(self) -> None:
        assert self._folder is not None
        generation = self._generation + 1
        graph = self._hnsw if not self._waiting else None  # an unfinished graph is rebuilt
        try:
            self._folder.write_snapshot(self._manifest(generation), self._docs, self._keys,
                                        self._matrix[: self._count], graph)
        finally:
            if self._folder.switched == generation:
                # The manifest names the new snapshot (even when a later step failed):
                # later writes are journalled in its generation, else the next open
                # would skip them as already applied.
                self._generation = generation
                self._snapshot_bytes = int(self._count * self.dim * 4)
                self._retry_bytes = 0

    def close(self) -> None:
        """Flush and release the folder; later writes are refused."""
        with self.lock:
            self._closed = True
            try:
                self.flush()
            finally:
                if self._folder is not None:
                    self._folder.unlock()
                    self._folder = None
