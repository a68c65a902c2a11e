"""SQLite for plugins that keep a file (the cache, feedback, gateway keys): WAL mode that
survives two connections opening the same fresh file at once.

Switching a database's journal mode takes an exclusive lock, and SQLite answers a
connection that cannot get it with ``database is locked`` at once, without calling the
busy handler (``timeout=`` of :func:`sqlite3.connect` does not help). Two threads or
processes opening a new file together then fail one time in a few dozen.
:func:`enable_wal` retries with a short backoff until the timeout instead.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

__all__ = ["create_private", "enable_wal", "sqlite_error"]

_RETRY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


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


def enable_wal(conn: sqlite3.Connection, *, timeout: float = 5.0) -> str:
    """Put ``conn``'s database in WAL mode (persistent: later connections find it so).

    :param conn: an open connection, outside any transaction.
    :param timeout: seconds to keep retrying while another connection holds the lock.
    :returns: the journal mode now in force (``"wal"``; ``"memory"`` for ``:memory:``).
    :raises sqlite3.OperationalError: the lock was still held after ``timeout`` seconds,
        or any other error.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as error:
            code = getattr(error, "sqlite_errorcode", 0) & 0xFF  # extended → primary
            if code not in _RETRY or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def sqlite_error(exc: sqlite3.Error, message: str) -> sqlite3.Error:
    """``exc`` with another message (one naming the database file and what to do): the
    same type and SQLite codes (``sqlite_errorcode``, ``sqlite_errorname``), so that
    callers catching it by type or code still do. Raise it ``from exc``."""
    error = type(exc)(message)
    for name in ("sqlite_errorcode", "sqlite_errorname"):
        if hasattr(exc, name):
            setattr(error, name, getattr(exc, name))
    return error

