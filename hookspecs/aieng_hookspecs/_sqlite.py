"""SQLite for plugins that keep a file (the cache, feedback, gateway keys, memory): WAL mode
that survives two connections opening the same fresh file at once, the file's layout
version, a read-only open for a file on a read-only mount, and what a forked child does
with the connections it inherited (:class:`ForkGuard`).

Switching a database's journal mode takes an exclusive lock, and SQLite answers a
connection that cannot get it with ``database is locked`` at once, without calling the
busy handler (``timeout=`` of :func:`sqlite3.connect` does not help). Two threads or
processes opening a new file together then fail one time in a few dozen.
:func:`enable_wal` retries with a short backoff until the timeout instead.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["WAL_SIZE_LIMIT", "ForkGuard", "check_layout", "create_private", "enable_wal",
           "mark_layout", "open_read_only", "reclaim_space", "sqlite_busy", "sqlite_error",
           "writable", "write_transaction"]

_RETRY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
#: The bytes a WAL file keeps after a checkpoint (``PRAGMA journal_size_limit``): above
#: the ~4 MB that SQLite's automatic checkpoint (1,000 pages) lets it reach, so a usual
#: cycle never shrinks it to grow it again; a burst (a bulk import) is given back.
WAL_SIZE_LIMIT = 8 << 20
#: Connections forked children inherited: kept alive, never used nor closed (ForkGuard).
_INHERITED: list[sqlite3.Connection] = []


class ForkGuard:
    """The process a component's SQLite connections and locks belong to.

    :meth:`forked` is true, once, in a process forked from the one that made the guard or
    last asked (``multiprocessing``'s "fork", gunicorn ``--preload``). The component then
    takes locks of its own (one another thread held at the fork is never released in the
    child) and opens connections of its own, handing the inherited ones to
    :meth:`set_aside`: SQLite forbids using a connection across ``fork()`` (its file locks
    are the parent's), and closing one in the child would run SQLite's close (a WAL
    checkpoint) on the parent's handles, so they are kept, unused (as SQLAlchemy's
    ``dispose(close=False)``). A database in memory is the child's own copy: it keeps it.
    """

    def __init__(self) -> None:
        self._pid = os.getpid()

    def forked(self) -> bool:
        """Whether this process was forked since the last call (or the guard's making)."""
        pid = os.getpid()
        if pid == self._pid:
            return False
        self._pid = pid
        return True

    @staticmethod
    def set_aside(*connections: sqlite3.Connection | None) -> None:
        """Keep inherited connections alive and never touch them again."""
        _INHERITED.extend(conn for conn in connections if conn is not None)


def create_private(path: Path) -> None:
    """Create ``path`` empty, readable and writable by its owner alone (0600) whatever the
    umask, when it does not exist, before :func:`sqlite3.connect` opens it: a store that
    holds users' texts (prompts and answers, feedback, an agent's memory, API keys) is
    never readable by others, not even for a moment. SQLite gives its -wal and -shm files
    the database's mode. An existing file keeps its own mode; a path that cannot be
    created (no folder, no access, a folder there) is left for ``connect`` to report."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        pass


def _lock_wait(timeout: object) -> float:
    """``timeout`` as the seconds a lock is waited for: a finite number >= 0.

    :raises ValueError: naming ``timeout``, its unit and what it got.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not math.isfinite(timeout) or timeout < 0:
        raise ValueError(f"timeout takes a finite number of seconds >= 0 (how long another "
                         f"connection's lock is waited for); got {timeout!r}")
    return float(timeout)


def _locked_past(error: sqlite3.Error, timeout: float, doing: str) -> sqlite3.Error:
    """SQLite's "database is locked" saying how long it was waited for, and what to do."""
    return sqlite_error(error, f"{error}: another connection held it for longer than "
                               f"{doing} waits (timeout={timeout:g} s); raise the timeout, "
                               "or find the program holding the file")


def enable_wal(conn: sqlite3.Connection, *, timeout: float = 5.0,
               size_limit: int = WAL_SIZE_LIMIT, reclaim: bool = False) -> str:
    """Put ``conn``'s database in WAL mode (persistent: later connections find it so), its
    WAL file cut back to ``size_limit`` bytes after each checkpoint (this connection's
    ``PRAGMA journal_size_limit``).

    SQLite reuses a WAL file from its start after a checkpoint but never shrinks it while a
    connection is open: without the limit, one burst of writes (a bulk import, a large
    purge) kept its size on disk for as long as the process ran.

    :param conn: an open connection, outside any transaction.
    :param timeout: seconds to keep retrying while another connection holds the lock (a
        finite number >= 0; 0: one try), on the monotonic clock.
    :param size_limit: the bytes the WAL file keeps after a checkpoint (an integer >= 0;
        -1: no limit, SQLite's default).
    :param reclaim: a database with nothing in it yet is made one whose free pages can go
        back to the disk (``PRAGMA auto_vacuum = INCREMENTAL``; see :func:`reclaim_space`).
        The mode is written with the first page and changes later only by a ``VACUUM``:
        an existing database keeps its own (setting it would write its header).
    :returns: the journal mode now in force (``"wal"``; ``"memory"`` for ``:memory:``).
    :raises sqlite3.OperationalError: the lock was still held after ``timeout`` seconds
        (its message says so and names the timeout), or any other error.
    :raises ValueError: for a ``timeout`` that is not a finite number >= 0, or a
        ``size_limit`` that is not an integer >= -1.
    """
    timeout = _lock_wait(timeout)
    if isinstance(size_limit, bool) or not isinstance(size_limit, int) or size_limit < -1:
        raise ValueError(f"size_limit takes a number of bytes >= 0 (or -1: no limit); got "
                         f"{size_limit!r}")
    if reclaim and not conn.execute("PRAGMA page_count").fetchone()[0]:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            conn.execute(f"PRAGMA journal_size_limit = {size_limit}")
            return mode
        except sqlite3.OperationalError as error:
            if not sqlite_busy(error):
                raise
            if time.monotonic() + delay > deadline:
                raise _locked_past(error, timeout, "the switch to WAL") from error
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on a connection in autocommit mode (``isolation_level=None``):
    ``BEGIN IMMEDIATE`` (the writers of other connections wait for it, up to the busy
    timeout), committed when the block ends, rolled back when it raises — unless SQLite
    rolled it back itself (a full disk)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


_CHECKPOINTS = frozenset({"PASSIVE", "FULL", "RESTART", "TRUNCATE"})


def reclaim_space(conn: sqlite3.Connection, *, min_pages: int = 256, share: float = 0.25,
                  checkpoint: str = "PASSIVE") -> bool:
    """Give a database's free pages (those its deleted rows left) back to the disk when
    they are more than ``min_pages`` and more than ``share`` of its pages; fewer stay for
    later writes to reuse. Only a database made with ``enable_wal(reclaim=True)`` (or
    rebuilt by a ``VACUUM`` after ``PRAGMA auto_vacuum = INCREMENTAL``) can: another keeps
    its pages, and this returns ``False``.

    The pages go with ``PRAGMA incremental_vacuum`` run to its end (through
    ``executescript``: ``execute`` frees one page a call), and a ``checkpoint`` of the WAL
    copies the smaller database into its file now rather than at the next checkpoint.

    :param conn: an open connection in autocommit mode, outside any transaction.
    :param checkpoint: the checkpoint's mode (``PASSIVE`` waits for no reader;
        ``TRUNCATE`` also empties the WAL file, waiting for readers up to the busy timeout).
    :returns: whether pages were given back.
    :raises sqlite3.Error: as SQLite raises it (a full disk, a lock held past the timeout).
    """
    if checkpoint not in _CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {sorted(_CHECKPOINTS)}, got "
                         f"{checkpoint!r}")
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    if free <= min_pages or free <= share * int(conn.execute("PRAGMA page_count").fetchone()[0]):
        return False
    if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) != 2:  # 2: incremental
        return False
    conn.executescript(f"PRAGMA incremental_vacuum; PRAGMA wal_checkpoint({checkpoint});")
    return True


def sqlite_busy(error: BaseException | None) -> bool:
    """Whether ``error`` is SQLite's "database is locked" (busy or locked: another
    connection holds what it needs, past the busy timeout when one was set)."""
    return getattr(error, "sqlite_errorcode", 0) & 0xFF in _RETRY  # extended → primary


def sqlite_error(exc: sqlite3.Error, message: str) -> sqlite3.Error:
    """``exc`` with another message (one naming the database file and what to do): the
    same type and SQLite codes (``sqlite_errorcode``, ``sqlite_errorname``), so that
    callers catching it by type or code still do. Raise it ``from exc``."""
    error = type(exc)(message)
    for name in ("sqlite_errorcode", "sqlite_errorname"):
        if hasattr(exc, name):
            setattr(error, name, getattr(exc, name))
    return error



def check_layout(conn: sqlite3.Connection, version: int, owner: str) -> int:
    """The layout version of ``conn``'s database (``PRAGMA user_version``; 0 for a file
    written before a plugin marked its files, or a new one). Call it before writing
    anything, and :func:`mark_layout` once the schema is made.

    :param version: the newest layout the caller reads (the one it writes).
    :param owner: the distribution that writes the file (``aieng-cache``), named in the
        error.
    :raises sqlite3.DatabaseError: for a newer layout (a later ``owner`` wrote it, or
        another program): the file is left as it is.
    """
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > version:
        raise sqlite3.DatabaseError(
            f"its layout is version {found} (PRAGMA user_version), newer than this {owner} "
            f"reads (version {version} and older): it was written by a newer {owner} (or "
            f"is another program's database); upgrade {owner}, or give another file. The "
            "file was left as it is")
    return found


def mark_layout(conn: sqlite3.Connection, found: int, version: int) -> None:
    """Mark the database with layout ``version`` when :func:`check_layout` found an older
    one (a file read as it was, or a new one)."""
    if found < version:
        conn.execute(f"PRAGMA user_version = {int(version)}")


def writable(file: Path) -> bool:
    """Whether this process may write ``file`` and make its -wal and -shm files beside it
    (root may even on a read-only mount: the open itself says so then)."""
    return os.access(file, os.W_OK) and os.access(file.parent, os.W_OK | os.X_OK)


def open_read_only(file: Path, *, timeout: float = 5.0) -> sqlite3.Connection:
    """``file`` opened for reading only (a read-only mount, a file this process may not
    write), with ``query_only`` on and autocommit (``isolation_level=None``), usable from
    any thread: through its -shm file when it can be read or made, else as immutable,
    which is safe only while no -wal file holds writes not yet in the database.

    :param timeout: SQLite's busy timeout: seconds a writer's lock is waited for (a
        finite number >= 0).
    :raises sqlite3.OperationalError: when it cannot be read, a writer holds it locked past
        ``timeout`` (the message says so), or only its -wal file holds its last writes.
    :raises ValueError: for a ``timeout`` that is not a finite number >= 0.
    """
    timeout = _lock_wait(timeout)
    uri = file.absolute().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as error:
        conn.close()
        if sqlite_busy(error):  # a writer holds the file past the timeout: no unlocked read
            raise _locked_past(error, timeout, "a read-only open") from error
        wal = Path(f"{file}-wal")
        if wal.exists() and wal.stat().st_size:
            raise
        conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None,
                               check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    return conn
