"""The SQLite store of the caches: one file in WAL mode, one connection per thread.

Every method here blocks (disk I/O): callers on the event loop go through
``anyio.to_thread.run_sync`` (see :class:`~aieng_cache._levels.SQLiteLevel`). WAL lets
readers run while one thread writes. Each call borrows a connection that no other thread
uses meanwhile (a ``sqlite3.Connection`` must not be used by two threads at once) and
gives it back: as many connections as calls ever ran at once, not one per worker thread
that ever lived (anyio retires idle workers, and their connections would pile up).
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Generator, Iterator
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import structlog
from aieng_hookspecs import (
    ForkGuard,
    check_layout,
    create_private,
    enable_wal,
    mark_layout,
    open_read_only,
    reclaim_space,
    sqlite_busy,
    sqlite_error,
    writable,
    write_transaction,
)

from ._clock import AHEAD_S
from ._codec import payload_namespace

__all__ = ["PURGE_EVERY", "VERSION", "Row", "SQLiteStore"]

log = structlog.get_logger(__name__)

#: The layout this module writes and the newest it reads (``PRAGMA user_version``). A file
#: written before the marker reads 0: the same layout, less the ``scope`` column (added
#: when it opens). An index added later (``entries_created_key``: the semantic cache's load
#: in order of storage, ties by key, and the ``max_entries`` bound, without sorting the
#: table; it replaced ``entries_created``, which an older version adds back) needs no new
#: version: an older version reads and writes the file as before, and SQLite keeps the
#: index up to date for it.
VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key      TEXT PRIMARY KEY,
    value    TEXT NOT NULL,
    kind     TEXT NOT NULL,
    tag      TEXT,
    vector   BLOB,
    created  REAL NOT NULL,
    expires  REAL,
    scope    TEXT
);
CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires);
CREATE INDEX IF NOT EXISTS entries_created_key ON entries (created, key);
DROP INDEX IF EXISTS entries_created;
"""


#: Stores between two purges of the dead entries (expired, or stored in the future) that
#: :meth:`SQLiteStore.put` makes itself, the first store of each store object included: a
#: file of distinct keys that no lookup finds again still loses them, without a call to
#: ``vacuum``. A purge walks the ``expires`` index over the dead rows only.
PURGE_EVERY = 1024
# Free pages (the file's pages no row uses) kept for later stores to reuse: past this, and
# past a quarter of the file, a purge or a clear gives them back to the disk
# (aieng_hookspecs.reclaim_space; files made before this: once ``vacuum`` has run).
_FREE_PAGES = 256

# An entry that is a miss at a time ``now``: expired, or stored more than AHEAD_S after it
# (parameters: now, now + AHEAD_S).
_DEAD = "((expires IS NOT NULL AND expires <= ?) OR created > ?)"


class Row(NamedTuple):
    """A stored entry: ``expires_at`` is ``inf`` for an entry that never expires."""

    key: str
    value: str
    kind: str
    tag: str | None
    vector: bytes | None
    created: float
    expires_at: float


def _row(found: tuple[Any, ...]) -> Row:
    key, value, kind, tag, vector, created, expires = found
    return Row(key, value, kind, tag, vector, created, math.inf if expires is None else expires)


def _add_scope(conn: sqlite3.Connection) -> None:
    """Add the ``scope`` column to a file made before it (its rows' scope: NULL)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
    if "scope" in columns:
        return
    try:
        conn.execute("ALTER TABLE entries ADD COLUMN scope TEXT")
    except sqlite3.OperationalError as exc:
        if "duplicate column" not in str(exc):  # another process added it meanwhile
            raise


def _reclaim(conn: sqlite3.Connection) -> None:
    """Give the file's free pages back to the disk when they are many (past
    :data:`_FREE_PAGES` and a quarter of the file); fewer stay for later stores to fill.
    Nothing in a file made without ``auto_vacuum`` (until ``vacuum`` rebuilds it)."""
    reclaim_space(conn, min_pages=_FREE_PAGES, share=0.25)


class SQLiteStore:
    """Entries in one SQLite file (created with its folder when missing).

    Times (``now``, ``expires_at``, ``created``) are wall-clock seconds since the Unix epoch,
    the same for every process sharing the file. A row keeps when it was stored: one
    stored more than :data:`~aieng_cache._clock.AHEAD_S` (1 s) after the reader's ``now``
    was stored before the system clock went back (an NTP step, a VM resumed), and is read
    as expired (a miss, deleted as an expired one is), so that a clock set back an hour
    does not keep entries an hour past their TTL; the first such row logs
    ``cache.stored_in_the_future``. A clock set forward expires what its new time says.

    :param path: the database file; ``":memory:"`` for a database in memory, one for the
        whole store (its calls then take turns on one connection).
    :param busy_timeout: seconds a writer waits for another connection's lock (``0``: not
        at all), past which the call fails with SQLite's "database is locked", the message
        naming this limit and its value.
    :param max_entries: most entries the file holds (``0``: no bound): a ``put`` that goes
        over deletes the oldest (by time stored; of two stored at the same time, the
        smaller key), expired or not.

    On disk the file holds what its live entries need, not the history of its stores:
    ``put`` deletes the dead entries every :data:`PURGE_EVERY` stores (a lookup deletes
    the one it finds at once); pages freed by deletions are reused by later stores, and
    given back to the disk when over a quarter of the file is free (a new file; one made
    before: after one :meth:`vacuum`); the ``-wal`` file shrinks back to
    8 MiB after a checkpoint (``aieng_hookspecs.WAL_SIZE_LIMIT``).

    A file this process cannot write (a read-only mount, a file of another owner) opens
    for reading: lookups are served, and what would write (``put``, ``delete``, ``clear``,
    ``purge``, ``vacuum``, deleting an expired entry found) writes nothing, as a warning
    (``cache.read_only``) said when it opened. A file of a newer layout (``PRAGMA
    user_version`` over :data:`VERSION`) is refused, left as it is.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0,
                 max_entries: int = 0) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) \
                or max_entries < 0:
            raise ValueError(f"max_entries must be an integer of at least 0 (0: no bound), "
                             f"got {max_entries!r}")
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)) \
                or not 0 <= busy_timeout < math.inf:
            raise ValueError(f"busy_timeout must be a finite number of seconds of at least 0, "
                             f"got {busy_timeout!r}")
        self.max_entries = max_entries
        self.in_memory = str(path) == ":memory:"
        self.path = Path(path) if self.in_memory else Path(path).expanduser()
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        # Each connection to ":memory:" is a database of its own: one connection, used by
        # one call at a time, keeps one database (a second would lack even the schema).
        self._turn: AbstractContextManager[object] = (
            threading.Lock() if self.in_memory else nullcontext())
        self._idle: list[sqlite3.Connection] = []
        self._fork = ForkGuard()  # a forked child opens connections of its own (_forked)
        self._closed = False
        self._ready = False
        #: Whether the file opened for reading only (see the class).
        self.read_only = False
        self._scoped = True  # whether the table has the scope column
        self._told_ahead = False  # whether a row stored in the future was logged
        self._puts = 0  # stores made, for the purge every PURGE_EVERY of them

    # -- connections ---------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """A new connection, the file set up (WAL, schema).

        :raises sqlite3.Error: of SQLite's type, its message naming the file, when the
            path cannot be opened as a database (a folder, a file of another kind).
        """
        if not self.in_memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            create_private(self.path)
        conn: sqlite3.Connection | None = None
        try:
            # isolation_level=None: autocommit; each statement is its own transaction
            # (VACUUM cannot run inside one). check_same_thread=False: a connection moves
            # between threads, one at a time (see _connection).
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=self.busy_timeout)
            try:
                # reclaim: a new file gives its free pages back (see _reclaim); the WAL
                # file is cut back to 8 MiB after a checkpoint (enable_wal's size_limit).
                enable_wal(conn, timeout=self.busy_timeout, reclaim=True)
            except sqlite3.OperationalError:
                if self.in_memory or not self.path.is_file() or writable(self.path):
                    raise
                conn.close()
                conn = None
                conn = open_read_only(self.path, timeout=self.busy_timeout)
                self._opened_read_only(conn)
            found = check_layout(conn, VERSION, "aieng-cache")
            if not self.read_only:
                conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints (WAL)
                with self._lock:
                    if not self._ready:
                        conn.executescript(_SCHEMA)
                        _add_scope(conn)
                        mark_layout(conn, found, VERSION)
                        self._ready = True
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            # SQLite's own message names no file ("unable to open database file"); keep
            # its type (callers may catch sqlite3.OperationalError) with the path added.
            hint = " (it is a folder)" if self.path.is_dir() else ""
            raise sqlite_error(exc, f"cannot open the cache database {self.path}{hint}: {exc}"
                         ) from exc
        return conn

    def _opened_read_only(self, conn: sqlite3.Connection) -> None:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
        with self._lock:
            warn, self.read_only = not self.read_only, True
            self._scoped = "scope" in columns
        if warn:
            log.warning("cache.read_only", path=str(self.path),
                        reason="this process cannot write the file or its folder",
                        effect="lookups are served; stores, deletions, clear and vacuum "
                               "write nothing")

    def _ahead(self, seconds: float) -> None:
        """Log, once, a row stored ``seconds`` after now: the clock went back."""
        if self._told_ahead:
            return
        self._told_ahead = True
        log.warning("cache.stored_in_the_future", path=str(self.path),
                    ahead_s=round(seconds, 3),
                    effect="the system clock went back: entries stored after the time it "
                           "shows now are misses (deleted, stored again on the next answer)")

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._fork.forked():
            self._forked()
        with self._turn, self._borrowed() as conn:
            try:
                yield conn
            except sqlite3.Error as exc:
                # A file that opened but fails a statement (damaged pages, another
                # writer's lock held past the busy timeout): SQLite's message names no
                # file and says nothing of what to do.
                if getattr(exc, "sqlite_errorname", "") == "SQLITE_CORRUPT":
                    message = (f"the cache database {self.path} is damaged ({exc}): delete "
                               "it, with its -wal and -shm files, and the cache starts empty")
                elif sqlite_busy(exc):
                    message = (f"cache database {self.path}: {exc}: another connection held "
                               f"its lock past the busy timeout ({self.busy_timeout:g} s); "
                               "raise the cache's busy timeout (sqlite_busy_timeout, or the "
                               "semantic cache's file_busy_timeout, in seconds) if its writers "
                               "take that long")
                else:
                    message = f"cache database {self.path}: {exc}"
                raise sqlite_error(exc, message) from exc

    def _forked(self) -> None:
        """In a forked child (see :class:`~aieng_hookspecs.ForkGuard`): locks of its own,
        and connections of its own on next use; a database in memory is its copy, kept."""
        self._lock = threading.Lock()
        if self.in_memory:
            self._turn = threading.Lock()
            return
        ForkGuard.set_aside(*self._idle)
        self._idle = []

    @contextmanager
    def _borrowed(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the cache database {self.path} is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._open()
        try:
            yield conn
        finally:
            with self._lock:
                if self._closed:
                    conn.close()
                else:
                    self._idle.append(conn)

    @property
    def idle_connections(self) -> int:
        """Open connections not in use now."""
        with self._lock:
            return len(self._idle)

    def journal_mode(self) -> str:
        """The database's journal mode (``wal``)."""
        with self._connection() as conn:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0])

    def close(self) -> None:
        """Close the connections (checkpointing the WAL); one in use closes when its call
        ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- entries -------------------------------------------------------------------------

    def get(self, key: str, now: float) -> Row | None:
        """The live entry under ``key``; an expired one (or one stored in the future: see
        the class) is deleted and missed."""
        with self._connection() as conn:
            found = conn.execute(
                "SELECT key, value, kind, tag, vector, created, expires FROM entries "
                "WHERE key = ?", (key,)).fetchone()
            if found is None:
                return None
            row = _row(found)
            if row.created > now + AHEAD_S:
                self._ahead(row.created - now)
            elif row.expires_at > now:
                return row
            if not self.read_only:
                conn.execute(f"DELETE FROM entries WHERE key = ? AND {_DEAD}",
                             (key, now, now + AHEAD_S))
            return None

    def put(self, key: str, value: str, *, kind: str, now: float,
            expires_at: float = math.inf, tag: str | None = None,
            vector: bytes | None = None, scope: str | None = None) -> None:
        """Store or replace the entry under ``key`` (``scope``: see :meth:`live`), in one
        transaction with what it deletes: the oldest entries past ``max_entries``, and
        every :data:`PURGE_EVERY` stores (the first one too) the dead ones."""
        with self._connection() as conn:  # (first: a forked child's lock is its own)
            if self.read_only:
                return
            with self._lock:
                purge = self._puts % PURGE_EVERY == 0
                self._puts += 1
            with write_transaction(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO entries (key, value, kind, tag, vector, created, "
                    "expires, scope) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, value, kind, tag, vector, now,
                     None if math.isinf(expires_at) else expires_at, scope))
                if purge:
                    conn.execute(f"DELETE FROM entries WHERE {_DEAD}", (now, now + AHEAD_S))
                if self.max_entries:
                    self._trim(conn, now)
            if purge:
                _reclaim(conn)

    def _trim(self, conn: sqlite3.Connection, now: float) -> None:
        """Delete the oldest entries past ``max_entries``: as many as the table holds past
        it (``count(*)`` counts the pages of the smallest index, reading no row), walked
        from the oldest down the ``entries_created_key`` index, so a store reads the same
        rows in a file of ``max_entries`` as in one of ten."""
        # Rows stored "in the future" (before the clock went back) are dead, and would
        # otherwise be the newest: each store past the bound would delete itself, the
        # oldest by its time, until the clock caught up with them.
        conn.execute("DELETE FROM entries WHERE created > ?", (now + AHEAD_S,))
        count = int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])
        if count > self.max_entries:
            # The newest max_entries, in the order loads read them (each_live), stay.
            conn.execute("DELETE FROM entries WHERE rowid IN (SELECT rowid FROM entries "
                         "ORDER BY created, key LIMIT ?)", (count - self.max_entries,))

    def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it was there."""
        with self._connection() as conn:
            if self.read_only:
                return False
            return conn.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount > 0

    def clear(self, namespace: str | None = None) -> None:
        """Remove every entry; with ``namespace``, only the entries whose value was encoded
        with that namespace (:func:`~aieng_cache.encode_completion`) and those whose
        namespace is unknown (values written without one, by an earlier version, or
        unreadable): they may be this namespace's, and must not keep answering after it
        is cleared."""
        with self._connection() as conn:
            if self.read_only:
                log.warning("cache.read_only", path=str(self.path), effect="not cleared")
                return
            if namespace is None:
                conn.execute("DELETE FROM entries")
            else:
                # The codec's own reading (as the Redis level's), not SQLite's JSON
                # functions, which builds of SQLite before 3.38 may lack: an unknown
                # namespace is this one.
                conn.create_function("aieng_namespace", 1, payload_namespace,
                                     deterministic=True)
                conn.execute("DELETE FROM entries WHERE coalesce(aieng_namespace(value), ?) "
                             "= ?", (namespace, namespace))
            _reclaim(conn)

    def count(self) -> int:
        """Entries stored, expired ones included until purged."""
        with self._connection() as conn:
            return int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])

    def purge(self, now: float) -> int:
        """Delete every expired entry (and every one stored in the future: see the
        class); returns how many."""
        with self._connection() as conn:
            if self.read_only:
                return 0
            purged: int = conn.execute(f"DELETE FROM entries WHERE {_DEAD}",
                                       (now, now + AHEAD_S)).rowcount
            _reclaim(conn)
            return purged

    def vacuum(self, now: float) -> int:
        """Purge expired entries, then rebuild the file to return the space to the disk.

        A file made before aieng-cache gave free pages back by itself (``PRAGMA
        auto_vacuum`` 0) is rebuilt in the mode that does (incremental): from then on,
        purges and clears shrink it too.

        :returns: the number of entries purged.
        """
        purged = self.purge(now)
        with self._connection() as conn:
            if self.read_only:
                log.warning("cache.read_only", path=str(self.path), effect="not vacuumed")
                return 0
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect with VACUUM
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return purged

    def live(self, now: float, *, limit: int, scope: str | None = None) -> list[Row]:
        """Live entries, newest first (of entries stored at the same time, the greater key
        first), at most ``limit``; with ``scope``, only the entries
        stored with that scope (and those stored without one)."""
        with closing(self.each_live(now, limit=limit, scope=scope)) as rows:
            return list(rows)

    def each_live(self, now: float, *, limit: int, scope: str | None = None
                  ) -> Generator[Row, None, None]:
        """:meth:`live`'s entries one at a time, as SQLite reads them (through the
        ``created`` index: no sort of the table): a caller building its own structure
        holds one row at a time, not all of them. The connection stays borrowed until
        the iterator ends or is closed (``contextlib.closing``)."""
        # Stored at most AHEAD_S after now (see the class): a range of the created index.
        where = "created <= ? AND (expires IS NULL OR expires > ?)"
        params: tuple[Any, ...] = (now + AHEAD_S, now)
        with self._connection() as conn:
            if scope is not None and self._scoped:  # a file without the column: all NULL
                where += " AND (scope IS NULL OR scope = ?)"
                params += (scope,)
            cursor = conn.execute(
                "SELECT key, value, kind, tag, vector, created, expires FROM entries "
                # key: of two entries stored at the same time (one clock tick), the one
                # loaded at the limit does not depend on which was written first.
                f"WHERE {where} ORDER BY created DESC, key DESC LIMIT ?", (*params, limit))
            try:
                for found in cursor:
                    yield _row(found)
            finally:
                cursor.close()
