"""``long-memory``: an agent's long-term memory in a SQLite file.

It keeps the ``"long"`` items it is given (one row per distinct text and namespace) and
recalls the most relevant ones: by the cosine of their embeddings when the pipeline can
embed (``context.embed``), else by word overlap (BM25), optionally weighted toward recent
items. Each namespace (a user, an agent) keeps at most ``max_items`` items, the oldest
evicted first.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import re
import sqlite3
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio.to_thread
import attrs
import structlog
from aieng_hookspecs import (
    ForkGuard,
    PipelineContext,
    check_layout,
    create_private,
    enable_wal,
    hookimpl,
    mark_layout,
    open_read_only,
    reclaim_space,
    sqlite_error,
    stop_if_cancelled,
    valid_utf8,
    writable,
    write_transaction,
)
from aieng_hookspecs.types import MemoryItem, Query

__all__ = ["MemoryOptions", "SQLiteMemory"]

log = structlog.get_logger(__name__)

_WORD = re.compile(r"\w+")
_K1, _B = 1.2, 0.75  # BM25's usual constants
_SCHEMA = """
CREATE TABLE IF NOT EXISTS memory (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created REAL NOT NULL,
    vector BLOB,
    UNIQUE (namespace, text)
);
CREATE INDEX IF NOT EXISTS memory_age ON memory (namespace, created);
"""
#: The layout this module writes and the newest it reads (``PRAGMA user_version``; a file
#: written before the marker reads 0: the same layout).
VERSION = 1
_BLOCK = 512  # rows read (and vectors scored) at a time: a recall's memory stays flat
_IN = 500  # ids per `IN (...)`: older SQLite builds take at most 999 parameters
#: The bytes a checkpointed WAL file is cut back to (SQLite keeps it at the largest size
#: it ever reached otherwise: one large store left it there for good).
_WAL_LIMIT = 1 << 20
#: Free pages (of 4 KiB) a file keeps before a store gives them back to the disk: a
#: steady stream of stores, each evicting an item, reuses its pages instead.
_FREE_PAGES = 256


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _pack(vector: Sequence[float]) -> bytes | None:
    values = [float(x) for x in vector]
    if not values or not all(math.isfinite(x) for x in values):
        return None
    return array("f", values).tobytes()


def _unpack(blob: bytes | None) -> array[float] | None:
    if not isinstance(blob, bytes) or len(blob) % 4:
        return None  # none, or not whole floats (damaged): embedded again when needed
    vector = array("f")
    vector.frombytes(blob)
    return vector


def _numpy() -> ModuleType | None:
    """numpy, when installed (imported at the first recall by embedding, not at import)."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def _cosines(query: array[float], blobs: Sequence[bytes]) -> list[float]:
    """The cosines of ``query`` with the packed vectors ``blobs`` (each of its size), as
    :func:`_cosine` gives them (in doubles): with numpy, in one pass over the block."""
    np = _numpy()
    if np is None or not blobs:
        return [_cosine(query, array("f", blob)) for blob in blobs]
    matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)
    matrix = matrix.astype(np.float64)
    # Row sums, not a BLAS product: a row's result must not depend on its place in the
    # block, so that equal vectors tie exactly, as they did one at a time.
    norms = math.sqrt(sum(x * x for x in query)) * np.sqrt((matrix * matrix).sum(axis=1))
    dots = (matrix * np.asarray(query, dtype=np.float64)).sum(axis=1)
    cosines = np.divide(dots, norms, out=np.zeros_like(dots), where=norms != 0.0)
    return cosines.tolist()  # type: ignore[no-any-return]


class _Best:
    """The ``k`` best ``(score, created, id)`` keys offered, in a bounded heap: ties go to
    the newer item, then to the later one stored."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.heap: list[tuple[float, float, int]] = []

    def offer(self, score: float, created: float, item: int) -> None:
        key = (score, created, item)
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, key)
        elif key > self.heap[0]:
            heapq.heapreplace(self.heap, key)

    def ranked(self) -> list[tuple[float, float, int]]:
        """The keys, best first."""
        return sorted(self.heap, reverse=True)


def _metadata(item: int, stored: object) -> dict[str, Any]:
    """An item's metadata as stored (a JSON object); a damaged one is an error naming it."""
    try:
        metadata = json.loads(stored) if isinstance(stored, (str, bytes)) else None
    except ValueError:
        metadata = None
    if not isinstance(metadata, dict):
        raise sqlite3.DatabaseError(
            f"item {item} has metadata that is not a JSON object ({str(stored)[:40]!r}): "
            f"the row is damaged; delete it (DELETE FROM memory WHERE id = {item})")
    return metadata


@attrs.frozen
class MemoryOptions:
    """Options of the ``long-memory`` component.

    :param path: the SQLite file (created when missing); empty keeps the memory in this
        process only, lost when the pipeline closes.
    :param namespace: the namespace of items whose metadata names none, and of recalls
        whose query has no ``namespace`` filter.
    :param max_items: the most items kept per namespace; storing more evicts the oldest.
    :param recency_weight: the share of an item's score given to its recency (0: relevance
        only, 1: recency only among the relevant items).
    :param half_life_s: seconds after which an item's recency halves.
    :param embeddings: rank by embedding cosine when the pipeline can embed (else, and
        when false, by word overlap).
    :param model: the embedding model to ask for (empty: the embedder's default).
    """

    path: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    namespace: str = attrs.field(default="default", validator=attrs.validators.instance_of(str))
    max_items: int = attrs.field(default=10_000, validator=[attrs.validators.instance_of(int),
                                                            attrs.validators.ge(1)])
    recency_weight: float = attrs.field(
        default=0.0, validator=[attrs.validators.instance_of((int, float)),
                                attrs.validators.ge(0.0), attrs.validators.le(1.0)])
    half_life_s: float = attrs.field(
        default=7 * 86400.0, validator=[attrs.validators.instance_of((int, float)),
                                        attrs.validators.gt(0.0)])
    embeddings: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    model: str = attrs.field(default="", validator=attrs.validators.instance_of(str))

    @max_items.validator
    def _not_bool(self, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool):
            raise TypeError("max_items must be an integer")

    @half_life_s.validator
    def _finite(self, attribute: attrs.Attribute[float], value: float) -> None:
        if not math.isfinite(value):
            raise ValueError("half_life_s must be finite")


class SQLiteMemory:
    """Long-term memory in SQLite, recalled by embedding cosine or word overlap.

    A stored item's namespace is its ``metadata["namespace"]`` when that is a string, else
    the ``namespace`` option; a recall's is its query's ``namespace`` filter, else the
    option. The query's other filters are matched against the items' metadata.

    :param options: the typed options (defaults when omitted).
    :param clock: seconds since the epoch; inject a fake one in tests.
    """

    def __init__(self, options: MemoryOptions | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.options = options if options is not None else MemoryOptions()
        self.clock = clock
        self._context: PipelineContext | None = None
        self._can_embed = self.options.embeddings
        self._lock = threading.Lock()  # one connection, used by one thread at a time
        self._conn: sqlite3.Connection | None = None
        self._closed = False  # closed: a late call opens the file for itself only
        self._fork = ForkGuard()

    def _forked(self) -> None:
        """In a forked child: a lock and, for a file, a connection of its own (an in-memory
        database is the child's copy: it keeps it)."""
        if self._fork.forked():
            self._lock = threading.Lock()
            if self.options.path:
                ForkGuard.set_aside(self._conn)
                self._conn = None

    # -- lifecycle -----------------------------------------------------------------------

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Keep the pipeline's context, to embed through it (this pipeline may have an
        embedder where the last one had none)."""
        self._context = context
        self._can_embed = self.options.embeddings
        self._closed = False

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        """Close the file."""
        await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Close the connection (an in-memory database is then gone). A call after it (a
        run still in flight) opens the file for itself and closes it again."""
        self._forked()
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _database(self) -> Iterator[sqlite3.Connection]:
        """The connection, held by this thread; SQLite's errors, which name no file and
        say nothing of what to do, are raised again (same type) with both."""
        self._forked()
        with self._lock:
            try:
                yield self._connection()
            except sqlite3.Error as exc:
                raise sqlite_error(exc, self._explain(exc)) from exc
            finally:
                if self._closed and self._conn is not None:
                    self._conn.close()
                    self._conn = None

    def _explain(self, exc: sqlite3.Error) -> str:
        where = (f"the memory file {Path(self.options.path).expanduser()}"
                 if self.options.path else "long-memory (in memory: no path)")
        code = getattr(exc, "sqlite_errorname", "")
        if code in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
            return (f"{where} is damaged or not a SQLite database ({exc}): move it away or "
                    "delete it, with its -wal and -shm files, and the memory starts empty")
        if code.startswith("SQLITE_CANTOPEN") and Path(self.options.path).expanduser().is_dir():
            return f"{where} is a folder ({exc}): give the path of a file"
        if code.startswith("SQLITE_READONLY"):
            return (f"{where} cannot be written ({exc}): give this process write access to "
                    "it and its folder (SQLite keeps -wal and -shm files beside it); "
                    "recalling works without")
        if code.startswith("SQLITE_CANTOPEN") and self.options.path:
            file = Path(self.options.path).expanduser()
            if file.is_file() and not writable(file):
                return (f"{where} cannot be opened read-only ({exc}): its folder cannot "
                        "be written and its -wal file holds writes not yet in the database;"
                        " open it once where it can be written (or copy the file with its"
                        " -wal file to a folder that can)")
        if code.startswith("SQLITE_FULL"):
            return f"{where}: the disk is full ({exc}); nothing of this write was kept"
        if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return (f"{where}: another connection held its lock for over 10 s ({exc}); "
                    "nothing of this write was kept")
        return f"{where}: {exc}"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            target = ":memory:"
            file = Path(self.options.path).expanduser()
            if self.options.path:  # its folder is made, as the other stores' are
                file.parent.mkdir(parents=True, exist_ok=True)
                create_private(file)  # what it remembers of its users: theirs alone
                target = str(file)
            conn = sqlite3.connect(target, timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
            try:
                if self.options.path:
                    try:
                        check_layout(conn, VERSION, "aieng-agents")  # before any write
                        # reclaim: a new file's evicted pages can go back to the disk
                        enable_wal(conn, timeout=10.0, size_limit=_WAL_LIMIT, reclaim=True)
                    except sqlite3.OperationalError:
                        if writable(file):
                            raise
                        conn.close()  # a read-only mount: recall works, stores are refused
                        conn = open_read_only(file, timeout=10.0)
                found = check_layout(conn, VERSION, "aieng-agents")
                if not conn.execute("PRAGMA query_only").fetchone()[0]:
                    conn.execute("PRAGMA synchronous=NORMAL")
                    with conn:  # two processes creating the schema at once: IF NOT EXISTS
                        conn.executescript(_SCHEMA)
                    mark_layout(conn, found, VERSION)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    # -- embeddings ----------------------------------------------------------------------

    async def _embed(self, texts: Sequence[str]) -> list[bytes | None] | None:
        """The packed embeddings of ``texts``; ``None`` when the pipeline cannot embed."""
        if not self._can_embed or self._context is None or not texts:
            return None
        try:
            vectors = await self._context.embed(list(texts), self.options.model or None)
        except LookupError as exc:
            # No embedder in the pipeline or the kernel: word overlap from now on.
            log.info("memory.no_embedder", reason=str(exc))
            self._can_embed = False
            return None
        return [_pack(vector) for vector in vectors]

    # -- the memory role -----------------------------------------------------------------

    @hookimpl
    async def aieng_memory_store(self, items: Sequence[MemoryItem]) -> None:
        """Keep the ``long`` items (a text already kept in its namespace is refreshed)."""
        kept = [item for item in items if item.kind == "long" and item.text.strip()]
        if not kept:
            return
        texts = [valid_utf8(item.text) for item in kept]
        vectors = await self._embed(texts)
        now = self.clock()
        rows = [(valid_utf8(self._namespace(item.metadata)), texts[n],
                 valid_utf8(json.dumps(item.metadata, ensure_ascii=False, sort_keys=True)),
                 now, None if vectors is None else vectors[n])
                for n, item in enumerate(kept)]
        await anyio.to_thread.run_sync(self._insert, rows)

    @staticmethod
    def _not_before_newest(conn: sqlite3.Connection,
                           rows: list[tuple[str, str, str, float, bytes | None]]
                           ) -> list[tuple[str, str, str, float, bytes | None]]:
        """``rows`` stamped no earlier than the newest item of their namespace (just
        after it, when the clock is behind it): after the wall clock was set back (NTP, a
        VM restored, another machine's clock), items just stored would otherwise be the
        oldest and evicted first, and one stamped while the clock ran ahead never
        evicted until the clock caught up."""
        floor: dict[str, float] = {}
        for namespace in {row[0] for row in rows}:
            newest = conn.execute("SELECT max(created) FROM memory WHERE namespace = ?",
                                  (namespace,)).fetchone()[0]
            if newest is not None:  # the next float: newer than it, as a refresh must be
                floor[namespace] = math.nextafter(newest, math.inf)
        return [row if row[3] >= floor.get(row[0], row[3])
                else (row[0], row[1], row[2], floor[row[0]], row[4]) for row in rows]

    def _namespace(self, metadata: dict[str, Any]) -> str:
        name = metadata.get("namespace")
        return name if isinstance(name, str) else self.options.namespace

    def _insert(self, rows: list[tuple[str, str, str, float, bytes | None]]) -> None:
        with self._database() as conn:
            with write_transaction(conn):  # the writers of other connections wait
                rows = self._not_before_newest(conn, rows)
                conn.executemany(
                    "INSERT INTO memory (namespace, text, metadata, created, vector) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, text) DO UPDATE SET "
                    "metadata = excluded.metadata, created = excluded.created, "
                    "vector = coalesce(excluded.vector, memory.vector)", rows)
                for namespace in {row[0] for row in rows}:
                    conn.execute(
                        "DELETE FROM memory WHERE id IN (SELECT id FROM memory WHERE "
                        "namespace = ? ORDER BY created DESC, id DESC LIMIT -1 OFFSET ?)",
                        (namespace, self.options.max_items))
            self._compact(conn)

    @staticmethod
    def _compact(conn: sqlite3.Connection) -> None:
        """Give the pages evictions freed back to the disk once they are many (a store
        larger than ``max_items``, ``max_items`` lowered) and a quarter of the file: the
        file shrinks to what the kept items need. A file made by an earlier version
        (without incremental vacuum) keeps them for later items."""
        try:  # the WAL checkpointed into the file now (TRUNCATE), not at close
            reclaim_space(conn, min_pages=_FREE_PAGES, share=0.25, checkpoint="TRUNCATE")
        except sqlite3.OperationalError as exc:  # the items are stored: shrink later
            log.warning("memory.compact_failed", error=str(exc))

    @hookimpl
    async def aieng_memory_recall(self, query: Query, k: int) -> list[MemoryItem]:
        """At most ``k`` items relevant to the query, best first (none share a word or a
        positive cosine with it: none are returned).

        The namespace's rows are read a block at a time and only the ``k`` best are kept,
        so a recall's memory does not grow with the namespace; the metadata of the winners
        alone is parsed (of every row when the query has filters to match)."""
        if k < 1 or not query.text.strip():
            return []
        filters = dict(query.filters)
        namespace = filters.pop("namespace", self.options.namespace)
        if not isinstance(namespace, str):
            return []
        namespace = valid_utf8(namespace)
        others = attrs.evolve(query, filters=filters)  # its rule: JSON equality per key
        if not await anyio.to_thread.run_sync(self._any, namespace):
            return []  # nothing kept there: the query is not embedded
        found = await self._by_embedding(namespace, others, k)
        if found is not None:
            return found
        return await anyio.to_thread.run_sync(self._by_words, namespace, others, k)

    def _any(self, namespace: str) -> bool:
        with self._database() as conn:
            return conn.execute("SELECT 1 FROM memory WHERE namespace = ? LIMIT 1",
                                (namespace,)).fetchone() is not None

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """The connection in a read transaction: the statements of one recall read one
        state of the file, whatever other connections write meanwhile."""
        with self._database() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")  # nothing was written

    def _rows(self, conn: sqlite3.Connection, columns: str, namespace: str,
              others: Query) -> Iterator[tuple[Any, ...]]:
        """The namespace's rows (``id, created, {columns}``) whose metadata matches the
        query's other filters, read a block at a time; a recall cancelled meanwhile (a
        host's deadline) stops at the next block instead of scanning the namespace."""
        cursor = conn.execute(f"SELECT id, created, {columns}, "
                              f"{'metadata' if others.filters else 'NULL'} "
                              "FROM memory WHERE namespace = ?", (namespace,))
        while True:
            stop_if_cancelled()
            block = cursor.fetchmany(_BLOCK)
            if not block:
                return
            for row in block:
                if not others.filters or others.matches(_metadata(row[0], row[-1])):
                    yield row

    def _score(self, relevance: float, created: float, now: float) -> float:
        weight = self.options.recency_weight
        if not weight:
            return relevance  # what the formula gives, without the power
        recency: float = 0.5 ** (max(now - created, 0.0) / self.options.half_life_s)
        return (1.0 - weight) * relevance + weight * recency

    def _items(self, conn: sqlite3.Connection, best: _Best) -> list[MemoryItem]:
        """The items of the best keys, best first, with their texts and metadata."""
        ranked = best.ranked()
        rows: dict[int, tuple[str, object]] = {}
        for start in range(0, len(ranked), _IN):
            ids = [key[2] for key in ranked[start:start + _IN]]
            rows.update((r[0], (r[1], r[2])) for r in conn.execute(
                f"SELECT id, text, metadata FROM memory WHERE id IN ({','.join('?' * len(ids))})",
                ids))
        return [MemoryItem(text=rows[item][0], kind="long", score=score,
                           metadata=_metadata(item, rows[item][1]))
                for score, _, item in ranked if item in rows]  # gone: evicted meanwhile

    async def _by_embedding(self, namespace: str, others: Query,
                            k: int) -> list[MemoryItem] | None:
        """The best items by cosine with the query's embedding; ``None`` when the
        pipeline cannot embed."""
        packed = await self._embed([others.text])
        query = _unpack(packed[0]) if packed else None
        if query is None:
            return None
        now = self.clock()
        found = await anyio.to_thread.run_sync(self._scan_vectors, namespace, others, query,
                                               k, now)
        if isinstance(found, list):
            return found
        best, missing = found
        # Items kept before an embedder was there (or by another model): embed them now,
        # once (a block at a time), and keep their vectors.
        for start in range(0, len(missing), _BLOCK):
            block = missing[start:start + _BLOCK]
            texts = await anyio.to_thread.run_sync(self._texts, [row[0] for row in block])
            block = [row for row in block if row[0] in texts]
            fresh = await self._embed([texts[row[0]] for row in block])
            if fresh is None:
                return None
            await anyio.to_thread.run_sync(
                self._set_vectors, [(blob, row[0]) for blob, row in zip(fresh, block,
                                                                          strict=True)])
            scored = [(row, blob) for row, blob in zip(block, fresh, strict=True)
                      if blob is not None and len(blob) == 4 * len(query)]
            cosines = _cosines(query, [blob for _, blob in scored])
            for ((item, created), _), cosine in zip(scored, cosines, strict=True):
                if cosine > 0.0:
                    best.offer(self._score(cosine, created, now), created, item)
        return await anyio.to_thread.run_sync(self._winners, best)

    def _scan_vectors(self, namespace: str, others: Query, query: array[float], k: int,
                      now: float) -> list[MemoryItem] | tuple[_Best, list[tuple[int, float]]]:
        """The best items by cosine; or, when some rows have no vector of the query's
        size, the best so far and those rows (``id, created``)."""
        best, missing = _Best(k), []
        size = 4 * len(query)
        with self._snapshot() as conn:
            rows = self._rows(conn, "vector", namespace, others)
            while block := list(itertools.islice(rows, _BLOCK)):
                scored = []
                for row in block:
                    if isinstance(row[2], bytes) and len(row[2]) == size:
                        scored.append(row)
                    else:  # none, or not whole floats (damaged), or another model's
                        missing.append((row[0], row[1]))
                cosines = _cosines(query, [row[2] for row in scored])
                for row, cosine in zip(scored, cosines, strict=True):
                    if cosine > 0.0:  # NaN (a damaged vector) is no relevance either
                        best.offer(self._score(cosine, row[1], now), row[1], row[0])
            return (best, missing) if missing else self._items(conn, best)

    def _texts(self, ids: list[int]) -> dict[int, str]:
        with self._database() as conn:
            return dict(conn.execute(
                f"SELECT id, text FROM memory WHERE id IN ({','.join('?' * len(ids))})", ids))

    def _winners(self, best: _Best) -> list[MemoryItem]:
        with self._snapshot() as conn:
            return self._items(conn, best)

    def _set_vectors(self, pairs: list[tuple[bytes | None, int]]) -> None:
        with self._database() as conn, conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE memory SET vector = ? WHERE id = ?", pairs)

    def _by_words(self, namespace: str, others: Query, k: int) -> list[MemoryItem]:
        """The best items by BM25 over the namespace's (matching) items for the query's
        words, scaled so the best is 1. Each row is read once and only the rows sharing a
        word with the query are kept (their length and term counts), not their texts."""
        terms = set(_words(others.text))
        if not terms:
            return []
        now = self.clock()
        count = total = 0
        frequency: Counter[str] = Counter()
        found: list[tuple[int, float, int, tuple[tuple[str, int], ...]]] = []
        with self._snapshot() as conn:
            for item, created, text, _ in self._rows(conn, "text", namespace, others):
                folded = text.casefold()
                words = _WORD.findall(folded)
                count += 1
                total += len(words)
                if not any(term in folded for term in terms):
                    continue  # a word of the text is a part of it: none can match
                document = Counter(words)
                # Sorted: the sum below takes them in this order, and a set's order (the
                # hash seed's) would make a score differ in its last bit between processes.
                shared = tuple((term, document[term])
                               for term in sorted(terms & document.keys()))
                if shared:
                    frequency.update(term for term, _ in shared)
                    found.append((item, created, len(words), shared))
            if not found:
                return []
            average = total / count or 1.0
            idf = {term: math.log(1.0 + (count - n + 0.5) / (n + 0.5))
                   for term, n in frequency.items()}
            scores = []
            for _, _, length, shared in found:
                score = 0.0
                for term, tf in shared:
                    score += idf[term] * tf * (_K1 + 1) / (
                        tf + _K1 * (1 - _B + _B * length / average))
                scores.append(score)
            top = max(scores)
            best = _Best(k)
            for (item, created, _, _), score in zip(found, scores, strict=True):
                best.offer(self._score(score / top, created, now), created, item)
            return self._items(conn, best)
