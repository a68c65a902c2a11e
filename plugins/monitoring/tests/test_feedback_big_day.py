"""The feedback file after months of traffic: signals older than ``retention_days`` leave
by themselves, ``prune`` deletes them on demand, in batches, through an index."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from aieng_hookspecs.types import Feedback
from aieng_monitoring import FeedbackOptions, FeedbackStore

pytestmark = pytest.mark.anyio

DAY = 86400.0


def _aged(path: Path, ages_days: list[float]) -> None:
    """Rows recorded ``ages_days`` ago, written straight into the file."""
    now = time.time()
    conn = sqlite3.connect(path)
    conn.executemany("INSERT INTO feedback (ts, run_id, kind, value, text, metadata) "
                     "VALUES (?, ?, 'thumbs', 1.0, '', '{}')",
                     [(now - age * DAY, f"r{n}") for n, age in enumerate(ages_days)])
    conn.commit()
    conn.close()


async def _made(path: Path) -> None:
    store = FeedbackStore(FeedbackOptions(path=str(path)))
    await store.summary()  # creates the table
    await store.aieng_pipeline_close()


async def test_prune_deletes_what_is_older_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    await _made(path)
    _aged(path, [100, 95, 10, 1])
    store = FeedbackStore(FeedbackOptions(path=str(path)))
    assert await store.prune(time.time() - 90 * DAY) == 2
    assert [row.run_id for row in await store.query()] == ["r2", "r3"]
    assert await store.prune(time.time() - 90 * DAY) == 0
    with pytest.raises(ValueError, match="seconds since the epoch"):
        await store.prune(float("nan"))
    await store.aieng_pipeline_close()


async def test_retention_days_prunes_when_the_file_opens(tmp_path: Path) -> None:
    """Without the option nothing is ever deleted; with it, the old rows go at the first
    call, the signal being recorded stays."""
    path = tmp_path / "f.db"
    await _made(path)
    _aged(path, [40, 20, 5])
    keep_all = FeedbackStore(FeedbackOptions(path=str(path)))
    assert len(await keep_all.query()) == 3
    await keep_all.aieng_pipeline_close()
    store = FeedbackStore(FeedbackOptions(path=str(path), retention_days=30))
    await store.aieng_feedback_record(Feedback(run_id="now", kind="thumbs", value=1.0))
    assert [row.run_id for row in await store.query()] == ["r1", "r2", "now"]
    await store.aieng_pipeline_close()


async def test_pruning_goes_in_batches_through_the_time_index(tmp_path: Path) -> None:
    """25,000 old rows leave in three transactions of at most 10,000, each finding its
    rows through the index on ``ts`` (a full scan per batch would make pruning a busy
    file quadratic)."""
    path = tmp_path / "f.db"
    await _made(path)
    _aged(path, [100.0] * 25_000 + [1.0])
    store = FeedbackStore(FeedbackOptions(path=str(path)))
    statements: list[str] = []
    await store.summary()
    assert store._db is not None
    store._db.set_trace_callback(statements.append)
    assert await store.prune(time.time() - 90 * DAY) == 25_000
    deletes = [s for s in statements if s.startswith("DELETE")]
    assert len(deletes) == 3
    plan = store._db.execute("EXPLAIN QUERY PLAN SELECT id FROM feedback WHERE ts < ? "
                             "LIMIT 10000", (0.0,)).fetchall()
    assert "feedback_ts" in " ".join(str(row[-1]) for row in plan)
    await store.aieng_pipeline_close()


def test_retention_days_must_be_a_number_of_days() -> None:
    for bad in (-1, float("inf"), True, "30"):
        with pytest.raises(ValueError, match="retention_days"):
            FeedbackOptions(retention_days=bad)  # type: ignore[arg-type]
