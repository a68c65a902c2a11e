"""aieng_hookspecs.open_read_only: a file this process may only read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from aieng_hookspecs import open_read_only


def _table(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("CREATE TABLE t (v INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()


def test_reads_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "a b é.sqlite"
    _table(path)
    conn = open_read_only(path)
    try:
        assert conn.execute("SELECT v FROM t").fetchall() == [(1,)]
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("INSERT INTO t VALUES (2)")
    finally:
        conn.close()


def test_a_writer_holding_its_lock_is_an_error_not_an_unlocked_read(tmp_path: Path) -> None:
    """A rollback-journal file whose writer holds its lock past the timeout: reading it as
    immutable (no lock, the hot journal ignored) could see half a commit. It is refused."""
    path = tmp_path / "locked.sqlite"
    _table(path)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute("UPDATE t SET v = 2")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            open_read_only(path, timeout=0.1)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
