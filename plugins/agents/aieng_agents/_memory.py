"""``long-memory``: an agent's long-term memory in a SQLite file.

It keeps the ``"long"`` items it is given (one row per distinct text and namespace) and
recalls the most relevant ones: by the cosine of their embeddings when the pipeline can
embed (``context.embed``), else by word overlap (BM25), optionally weighted toward recent
items. Each namespace (a user, an agent) keeps at most ``max_items`` items, the oldest
evicted first.
"""

from __future__ import annotations

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
from typing import Any

import anyio.to_thread
import attrs
import structlog
from aieng_hookspecs import (
    PipelineContext,
    check_layout,
    create_private,
    enable_wal,
    hookimpl,
    mark_layout,
    open_read_only,
    sqlite_error,
    valid_utf8,
    writable,
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


@attrs.frozen
class _Row:
    id: int
    text: str
    metadata: dict[str, Any]
    created: float
    vector: bytes | None


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
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _database(self) -> Iterator[sqlite3.Connection]:
        """The connection, held by this thread; SQLite's errors, which name no file and
        say nothing of what to do, are raised again (same type) with both."""
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
                        enable_wal(conn, timeout=10.0)
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

    def _namespace(self, metadata: dict[str, Any]) -> str:
        name = metadata.get("namespace")
        return name if isinstance(name, str) else self.options.namespace

    def _insert(self, rows: list[tuple[str, str, str, float, bytes | None]]) -> None:
        with self._database() as conn:
            conn.execute("BEGIN IMMEDIATE")  # the writers of other connections wait
            try:
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
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back itself (disk full)
                    conn.execute("ROLLBACK")
                raise

    @hookimpl
    async def aieng_memory_recall(self, query: Query, k: int) -> list[MemoryItem]:
        """At most ``k`` items relevant to the query, best first (none share a word or a
        positive cosine with it: none are returned)."""
        if k < 1 or not query.text.strip():
            return []
        filters = dict(query.filters)
        namespace = filters.pop("namespace", self.options.namespace)
        if not isinstance(namespace, str):
            return []
        rows = await anyio.to_thread.run_sync(self._rows, valid_utf8(namespace))
        others = attrs.evolve(query, filters=filters)  # its rule: JSON equality per key
        rows = [row for row in rows if others.matches(row.metadata)]
        if not rows:
            return []
        relevance = await self._by_embedding(query.text, rows)
        if relevance is None:
            relevance = self._by_words(query.text, rows)
        now = self.clock()
        weight = self.options.recency_weight
        scored = []
        for row, score in zip(rows, relevance, strict=True):
            if score <= 0.0:
                continue
            recency = 0.5 ** (max(now - row.created, 0.0) / self.options.half_life_s)
            scored.append(((1.0 - weight) * score + weight * recency, row))
        scored.sort(key=lambda pair: (-pair[0], -pair[1].created, -pair[1].id))
        return [MemoryItem(text=row.text, kind="long", score=score, metadata=row.metadata)
                for score, row in scored[:k]]

    def _rows(self, namespace: str) -> list[_Row]:
        with self._database() as conn:
            found = conn.execute(
                "SELECT id, text, metadata, created, vector FROM memory WHERE namespace = ?",
                (namespace,)).fetchall()
            # Inside: a damaged row's error names the file too.
            return [_Row(id=r[0], text=r[1], metadata=_metadata(r[0], r[2]), created=r[3],
                         vector=r[4]) for r in found]

    async def _by_embedding(self, text: str, rows: list[_Row]) -> list[float] | None:
        """Cosines with the query's embedding; ``None`` when the pipeline cannot embed."""
        packed = await self._embed([text])
        query = _unpack(packed[0]) if packed else None
        if query is None:
            return None
        vectors = [_unpack(row.vector) for row in rows]
        # Items kept before an embedder was there (or by another model): embed them now,
        # once, and keep their vectors.
        missing = [n for n, v in enumerate(vectors) if v is None or len(v) != len(query)]
        if missing:
            fresh = await self._embed([rows[n].text for n in missing])
            if fresh is None:
                return None
            for n, blob in zip(missing, fresh, strict=True):
                vectors[n] = _unpack(blob)
            await anyio.to_thread.run_sync(
                self._set_vectors, [(fresh[i], rows[n].id) for i, n in enumerate(missing)])
        return await anyio.to_thread.run_sync(
            lambda: [_cosine(query, v) if v is not None and len(v) == len(query) else 0.0
                     for v in vectors])

    def _set_vectors(self, pairs: list[tuple[bytes | None, int]]) -> None:
        with self._database() as conn, conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE memory SET vector = ? WHERE id = ?", pairs)

    @staticmethod
    def _by_words(text: str, rows: list[_Row]) -> list[float]:
        """BM25 scores of the rows for the query's words, scaled so the best is 1."""
        terms = set(_words(text))
        documents = [Counter(_words(row.text)) for row in rows]
        count = len(documents)
        average = sum(sum(d.values()) for d in documents) / count or 1.0
        frequency = Counter(term for d in documents for term in terms if term in d)
        scores = []
        for document in documents:
            length = sum(document.values())
            score = 0.0
            for term in terms & document.keys():
                idf = math.log(1.0 + (count - frequency[term] + 0.5) / (frequency[term] + 0.5))
                tf = document[term]
                score += idf * tf * (_K1 + 1) / (tf + _K1 * (1 - _B + _B * length / average))
            scores.append(score)
        best = max(scores, default=0.0)
        return [s / best if best > 0 else 0.0 for s in scores]
