"""``aieng_hookspecs.enable_wal``: WAL mode despite a lock SQLite will not wait for."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from aieng_hookspecs import enable_wal


def _writer_holding_the_lock(path: Path) -> sqlite3.Connection:
    """A connection inside ``BEGIN IMMEDIATE`` on a fresh rollback-journal file."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_plain_pragma_fails_at_once_under_a_writers_lock(tmp_path: Path) -> None:
    """The case enable_wal exists for: SQLite skips the busy handler (the 5 s timeout)."""
    holder = _writer_holding_the_lock(tmp_path / "x.db")
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None, timeout=5.0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        conn.execute("PRAGMA journal_mode=WAL")
    holder.execute("COMMIT")


def test_enable_wal_waits_for_the_lock(tmp_path: Path) -> None:
    holder = _writer_holding_the_lock(tmp_path / "x.db")
    release = threading.Timer(0.2, lambda: holder.execute("COMMIT"))
    release.start()
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    assert enable_wal(conn, timeout=5.0) == "wal"
    release.join()
    again = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    assert again.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent


def test_enable_wal_gives_up_after_the_timeout(tmp_path: Path) -> None:
    holder = _writer_holding_the_lock(tmp_path / "x.db")
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        enable_wal(conn, timeout=0.1)
    holder.execute("COMMIT")


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    (tmp_path / "x.db").write_bytes(b"not a database" * 100)
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        enable_wal(conn, timeout=60.0)


def test_threads_opening_one_fresh_file_together(tmp_path: Path) -> None:
    """Eight threads at once on each of 30 fresh files (a plain pragma failed 8 times in
    200 such rounds here): every one ends in WAL and writes."""
    for round_ in range(30):
        path = tmp_path / f"{round_}.db"
        errors: list[BaseException] = []
        start = threading.Barrier(8)

        def open_and_write(path: Path = path, errors: list[BaseException] = errors,
                           start: threading.Barrier = start) -> None:
            try:
                conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
                start.wait()
                assert enable_wal(conn) == "wal"
                conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
                conn.execute("INSERT INTO t VALUES (1)")
                conn.close()
            except BaseException as error:  # noqa: BLE001 - reported by the test below
                errors.append(error)

        threads = [threading.Thread(target=open_and_write) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 8
