"""A feedback file that cannot be used: an error naming it, and no connection left open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from aieng_hookspecs.types import Feedback
from aieng_monitoring import FeedbackOptions, FeedbackStore

from aieng_core.testing import open_files

pytestmark = pytest.mark.anyio


def _open_fds(path: Path) -> int:
    """How many of this process's file descriptors are open on ``path``."""
    return open_files().count(str(path))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
async def test_a_file_that_is_no_database_names_it_and_leaks_nothing(tmp_path: Path) -> None:
    """A path holding another kind of file fails each call with SQLite's error type, its
    message naming the file; the connection opened for it is closed each time (a sink
    retried by every request must not pile up open files), and nothing is written."""
    path = tmp_path / "feedback.sqlite3"
    text = b"not a database, just some notes\n" * 200
    path.write_bytes(text)
    store = FeedbackStore(FeedbackOptions(path=str(path)))
    for _ in range(3):
        with pytest.raises(sqlite3.DatabaseError, match="feedback.sqlite3") as caught:
            await store.aieng_feedback_record(Feedback(run_id="r", kind="thumbs", value=1))
        assert "not a database" in str(caught.value)
        assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    with pytest.raises(sqlite3.DatabaseError, match="feedback.sqlite3"):
        await store.query()
    assert _open_fds(path) == 0
    assert path.read_bytes() == text
    await store.aieng_pipeline_close()


class _FullDisk:
    """A connection whose INSERTs fail as on a full disk (SQLITE_FULL)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql.lstrip().upper().startswith("INSERT"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def close(self) -> None:
        self.db.close()


async def test_a_write_that_fails_names_the_file(tmp_path: Path) -> None:
    """A write failing on an open database (a full disk) is SQLite's error type naming the
    file; the rows stored before it stay, and the next write goes through."""
    path = tmp_path / "feedback.sqlite3"
    store = FeedbackStore(FeedbackOptions(path=str(path)))
    await store.aieng_feedback_record(Feedback(run_id="kept", kind="thumbs", value=1))
    db = store._db
    assert db is not None
    store._db = _FullDisk(db)  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError,
                       match=r"feedback\.sqlite3.*disk is full") as caught:
        await store.aieng_feedback_record(Feedback(run_id="lost", kind="thumbs", value=1))
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    store._db = db
    await store.aieng_feedback_record(Feedback(run_id="next", kind="thumbs", value=0))
    assert [row.run_id for row in await store.query()] == ["kept", "next"]
    await store.aieng_pipeline_close()
