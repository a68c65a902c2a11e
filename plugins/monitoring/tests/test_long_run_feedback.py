"""The feedback file over a year of signals: what a pruning deletes goes back to the disk
(the file shrinks, the WAL file is cut back), by itself under ``retention_days`` too, and
recording keeps nothing per signal in memory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from aieng_hookspecs.types import Feedback
from aieng_monitoring import FeedbackOptions, FeedbackStore
from aieng_monitoring._feedback import _SCHEMA, _WAL_LIMIT

from aieng_core.testing.steady import ameasure_growth

pytestmark = pytest.mark.anyio

DAY = 86400.0
START = 1_700_000_000.0
TEXT = "a user's correction, " * 20  # ~400 bytes a signal


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _bulk(path: Path, rows: int, *, start: float = START) -> None:
    """``rows`` signals a minute apart from ``start``, written by another connection (a
    second server process) in one transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_SCHEMA)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO feedback (ts, run_id, kind, value, text, metadata) "
                     "VALUES (?, ?, 'thumbs', 1.0, ?, '{}')",
                     [(start + 60.0 * n, f"run-{n}", TEXT) for n in range(rows)])
    conn.execute("COMMIT")
    conn.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_pruning_gives_the_space_back_and_cuts_the_wal(tmp_path: Path) -> None:
    """20,000 signals, then a pruning of all but the newest 500: the file comes back
    down to a small share of its size and the WAL file to at most its limit (before,
    both stayed at their largest: SQLite keeps freed pages and a WAL file's size)."""
    path = tmp_path / "feedback.db"
    store = FeedbackStore(FeedbackOptions(path=str(path)), clock=lambda: START)
    await store.summary()  # the store makes the file
    _bulk(path, 20_000)
    full = _size(path) + _size(Path(f"{path}-wal"))
    assert full > 8_000_000
    deleted = await store.prune(START + 60.0 * 19_500)
    assert deleted == 19_500
    assert _size(path) < full // 10, (_size(path), full)
    assert _size(Path(f"{path}-wal")) <= _WAL_LIMIT
    rows = await store.query(limit=1_000)
    assert [r.run_id for r in rows[:1]] == ["run-19500"] and len(rows) == 500
    await store.aieng_pipeline_close()


async def test_retention_prunes_at_a_restart_and_shrinks_the_file(tmp_path: Path) -> None:
    """``retention_days = 30`` after a year of signals: the store a restarted server
    opens deletes what is older by itself, the file shrinks, and what was pruned stays
    pruned at the next restart."""
    path = tmp_path / "feedback.db"
    options = FeedbackOptions(path=str(path), retention_days=30)
    year = 365 * DAY
    first = FeedbackStore(options, clock=lambda: START)
    await first.summary()
    await first.aieng_pipeline_close()
    _bulk(path, 20_000, start=START)  # ~14 days of signals, a year ago
    before = _size(path)
    restarted = FeedbackStore(options, clock=lambda: START + year)
    await restarted.aieng_feedback_record(Feedback(run_id="new", kind="thumbs", value=1.0))
    assert _size(path) < before // 10, (_size(path), before)
    await restarted.aieng_pipeline_close()
    again = FeedbackStore(options, clock=lambda: START + year + DAY)
    assert [r.run_id for r in await again.query()] == ["new"]
    await again.aieng_pipeline_close()


async def test_a_file_of_an_earlier_version_is_rebuilt_once_to_shrink(
        tmp_path: Path) -> None:
    """A file made without incremental vacuum (an earlier aieng-monitoring, or by hand)
    is rebuilt with it at the first pruning that frees at least half of it; later
    prunings shrink it as a new file's."""
    path = tmp_path / "feedback.db"
    _bulk(path, 20_000)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()
    before = _size(path)
    store = FeedbackStore(FeedbackOptions(path=str(path)), clock=lambda: START)
    assert await store.prune(START + 60.0 * 15_000) == 15_000
    middle = _size(path)
    assert middle < before // 2, (middle, before)
    assert await store.prune(START + 60.0 * 19_000) == 4_000
    assert _size(path) < middle // 2, (_size(path), middle)
    await store.aieng_pipeline_close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    assert conn.execute("SELECT count(*) FROM feedback").fetchone()[0] == 1_000
    conn.close()


async def test_recording_keeps_nothing_per_signal(tmp_path: Path) -> None:
    """Signals of distinct runs and kinds, each with a client's id: the store keeps no
    Python memory, descriptor or thread per signal (they are rows in the file)."""
    store = FeedbackStore(FeedbackOptions(path=str(tmp_path / "f.db")),
                          clock=lambda: START)

    async def record(i: int) -> None:
        await store.aieng_feedback_record(Feedback(
            run_id=f"run-{i}", kind=f"kind-{i % 7}", value=float(i % 5), text=f"t{i}",
            metadata={"feedback_id": f"id-{i}", "user": f"user-{i}"}))

    growth = await ameasure_growth(record, warmup=200, calls=1_000)
    assert growth.per_call < 32 and not growth.held, growth.report()
    await store.aieng_pipeline_close()
