"""The feedback file on the second day: its layout marked (``PRAGMA user_version``), a
file of a newer layout refused, a damaged row named, times that do not depend on TZ."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from aieng_hookspecs.types import Feedback
from aieng_monitoring import FeedbackOptions, FeedbackStore

from aieng_core.testing import sqlite_layout

pytestmark = pytest.mark.anyio


async def test_the_layout_is_marked_and_an_unmarked_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    store = FeedbackStore(FeedbackOptions(path=str(path)))
    await store.aieng_feedback_record(Feedback(run_id="r1", kind="thumbs", value=1.0))
    await store.aieng_pipeline_close()
    assert sqlite_layout(path) == 1
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 0")  # a file written before the marker
    conn.close()
    store = FeedbackStore(FeedbackOptions(path=str(path)))
    assert [row.run_id for row in await store.query()] == ["r1"]
    await store.aieng_pipeline_close()
    assert sqlite_layout(path) == 1


async def test_a_newer_layout_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    store = FeedbackStore(FeedbackOptions(path=str(path)))
    await store.aieng_feedback_record(Feedback(run_id="r1", kind="thumbs", value=1.0))
    await store.aieng_pipeline_close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    before = path.read_bytes()
    store = FeedbackStore(FeedbackOptions(path=str(path)))
    with pytest.raises(sqlite3.DatabaseError) as caught:
        await store.aieng_feedback_record(Feedback(run_id="r2", kind="thumbs", value=0.0))
    await store.aieng_pipeline_close()
    message = str(caught.value)
    assert str(path) in message and "version 2" in message and "upgrade" in message
    assert path.read_bytes() == before


async def test_times_are_seconds_since_the_epoch_whatever_tz_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal's ``ts`` is UTC seconds since the epoch: recorded under one TZ and read
    back under another, it is the same instant."""
    path = tmp_path / "f.db"
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    try:
        before = time.time()
        store = FeedbackStore(FeedbackOptions(path=str(path)))
        await store.aieng_feedback_record(Feedback(run_id="r1", kind="thumbs", value=1.0))
        await store.aieng_pipeline_close()
        monkeypatch.setenv("TZ", "America/Adak")
        time.tzset()
        store = FeedbackStore(FeedbackOptions(path=str(path)))
        (row,) = await store.query()
        await store.aieng_pipeline_close()
    finally:
        monkeypatch.undo()
        time.tzset()
    assert before <= row.ts <= time.time()
