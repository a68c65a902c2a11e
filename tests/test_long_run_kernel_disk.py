"""Disk in the long run: a SQLite file in WAL mode (``enable_wal``, every plugin store's)
gives back the WAL of a burst of writes while the process keeps its connection, and the
build lock and ``replace_file`` leave no file per call behind."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from aieng_hookspecs import (
    build_lock,
    enable_wal,
    reclaim_space,
    replace_file,
    write_transaction,
)
from aieng_hookspecs._sqlite import WAL_SIZE_LIMIT


def wal_size(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_a_burst_of_writes_does_not_keep_its_wal_for_the_life_of_the_process(
        tmp_path: Path) -> None:
    """A bulk import of 20 MB, then the usual small writes on the same open connection (a
    server's store): after the next checkpoint the WAL file is back within the limit,
    not the burst's size for as long as the process runs."""
    db = tmp_path / "store.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert enable_wal(conn) == "wal"
        conn.execute("PRAGMA synchronous = OFF")  # no fsync a commit: the test is about size
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        conn.execute("BEGIN")
        for _ in range(10_000):
            conn.execute("INSERT INTO t (v) VALUES (?)", (os.urandom(2_000),))
        conn.execute("COMMIT")
        burst = wal_size(db)
        assert burst > 2 * WAL_SIZE_LIMIT
        conn.execute("DELETE FROM t")
        for n in range(3_000):  # small writes: the automatic checkpoints run and restart
            conn.execute("INSERT OR REPLACE INTO t (k, v) VALUES (?, ?)", (n % 10, b"x" * 100))
        assert wal_size(db) <= WAL_SIZE_LIMIT < burst
    finally:
        conn.close()


def test_the_wal_limit_is_an_option() -> None:
    """``size_limit`` -1 keeps SQLite's default (no limit); anything but an integer >= -1
    is refused, naming it."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        enable_wal(conn, size_limit=-1)
        assert conn.execute("PRAGMA journal_size_limit").fetchone()[0] == -1
        enable_wal(conn, size_limit=1 << 20)
        assert conn.execute("PRAGMA journal_size_limit").fetchone()[0] == 1 << 20
        for wrong in (-2, 1.5, True, "8MB"):
            with pytest.raises(ValueError, match="size_limit"):
                enable_wal(conn, size_limit=wrong)  # type: ignore[arg-type]
    finally:
        conn.close()


def test_builds_and_replacements_leave_no_file_per_call(tmp_path: Path) -> None:
    """Two hundred builds of as many cache entries, and two hundred replacements of one
    file (one failing on each tenth), leave the entries and the file: no lock file per key,
    no scratch file."""
    cache = tmp_path / "cache"
    for n in range(200):
        with build_lock(cache / f"entry-{n}") as held:
            assert held
            (cache / f"entry-{n}").write_text("built")
    target = tmp_path / "state.json"
    for n in range(200):
        if n % 10 == 9:
            with pytest.raises(UnicodeEncodeError):
                replace_file(target, "\ud800 a lone surrogate")
        else:
            replace_file(target, f'{{"n": {n}}}')
    assert len(list(cache.iterdir())) == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "state.json"]
    assert target.read_text() == '{"n": 198}'


def _filled(db: Path, *, reclaim: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    enable_wal(conn, reclaim=reclaim)
    conn.execute("CREATE TABLE rows (body BLOB)")
    conn.executemany("INSERT INTO rows VALUES (?)", [(os.urandom(4000),) for _ in range(500)])
    conn.execute("DELETE FROM rows")
    return conn


@pytest.mark.parametrize("reclaim", [True, False])
def test_a_store_made_to_reclaim_gives_deleted_pages_back(tmp_path: Path,
                                                          reclaim: bool) -> None:
    """``enable_wal(reclaim=True)`` on a new file, then ``reclaim_space`` after a mass
    delete: the file shrinks to what its rows need. A file made without it keeps its
    pages (for later writes) and says so."""
    db = tmp_path / "store.db"
    conn = _filled(db, reclaim=reclaim)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        before = db.stat().st_size
        assert before > 1_000_000
        assert reclaim_space(conn) is reclaim
        after = db.stat().st_size
        assert (after < before // 10) if reclaim else after == before
        assert reclaim_space(conn) is False  # nothing left to give back
    finally:
        conn.close()


def test_an_existing_store_keeps_its_mode_and_few_free_pages_stay(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    _filled(db, reclaim=False).close()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        enable_wal(conn, reclaim=True)  # the file exists: its header is not rewritten
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    finally:
        conn.close()
    conn = _filled(tmp_path / "new.db", reclaim=True)
    try:
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        assert reclaim_space(conn, min_pages=free) is False  # under the bound: kept
        with pytest.raises(ValueError, match="checkpoint must be one of"):
            reclaim_space(conn, checkpoint="NOW")
    finally:
        conn.close()


def test_a_write_transaction_commits_its_block_or_rolls_it_back(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    try:
        conn.execute("CREATE TABLE t (x)")
        with write_transaction(conn):
            conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(KeyError), write_transaction(conn):
            conn.execute("INSERT INTO t VALUES (2)")
            raise KeyError("the block failed")
        assert not conn.in_transaction
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        conn.close()
