"""The feedback store's aggregates against the signals recorded, computed here another way
(exact fractions, counted by hand): per kind, the count and the mean of the values."""

from __future__ import annotations

import math
import sqlite3
import tempfile
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import anyio
from aieng_hookspecs.types import Feedback
from aieng_monitoring import FeedbackOptions, FeedbackStore
from hypothesis import given, settings
from hypothesis import strategies as st

DAY = 86400.0
SIGNAL = st.tuples(st.sampled_from(["thumbs", "rating", "score", "early_stop"]),
                   st.one_of(st.sampled_from([1.0, -1.0, 0.1, 0.7, 3.0]),
                             st.floats(-1e9, 1e9), st.integers(-(10**9), 10**9)))


def _exact_means(signals: list[tuple[str, float]]) -> dict[str, tuple[int, Fraction]]:
    by_kind: defaultdict[str, list[Fraction]] = defaultdict(list)
    for kind, value in signals:
        by_kind[kind].append(Fraction(float(value)))  # stored as a REAL
    return {kind: (len(vs), sum(vs, Fraction(0)) / len(vs)) for kind, vs in by_kind.items()}


def _summary_of(path: Path, signals: list[tuple[str, float]]) -> dict[str, dict[str, float]]:
    async def main() -> dict[str, dict[str, float]]:
        store = FeedbackStore(FeedbackOptions(path=str(path), value_ranges={}))
        for n, (kind, value) in enumerate(signals):
            await store.aieng_feedback_record(Feedback(f"r{n}", kind, value))
        try:
            return await store.summary()
        finally:
            await store.aieng_pipeline_close()

    return anyio.run(main)


def _assert_means(summary: dict[str, dict[str, float]],
                  exact: dict[str, tuple[int, Fraction]]) -> None:
    assert summary.keys() == exact.keys()
    for kind, (count, mean) in exact.items():
        assert summary[kind]["count"] == count
        # The sum is correctly rounded, then divided: within one unit in the last place.
        assert abs(Fraction(summary[kind]["mean"]) - mean) <= Fraction(math.ulp(float(mean)))


@settings(max_examples=20, deadline=None)
@given(st.lists(SIGNAL, max_size=25))
def test_summary_counts_and_means_equal_the_signals(signals: list[tuple[str, float]]) -> None:
    """Per kind, ``count`` is how many signals were recorded and ``mean`` their mean within
    one ulp of the exact one, whatever SQLite's version sums with."""
    with tempfile.TemporaryDirectory() as folder:
        summary = _summary_of(Path(folder) / "f.sqlite3", signals)
    _assert_means(summary, _exact_means(signals))


def test_a_mean_users_read_is_not_float_noise(tmp_path: Path) -> None:
    """Ten scores of 0.1 have the mean 0.1 (a running double sum said
    0.09999999999999999); the same signal sent twice counts twice."""
    summary = _summary_of(tmp_path / "f.sqlite3", [("score", 0.1)] * 10 + [("thumbs", 1)] * 2)
    assert summary == {"score": {"count": 10, "mean": 0.1},
                       "thumbs": {"count": 2, "mean": 1.0}}


def test_a_mean_of_finite_values_is_finite(tmp_path: Path) -> None:
    """Values whose sum passes a float's range still have their finite mean (SQLite's AVG
    said inf for both)."""
    summary = _summary_of(tmp_path / "f.sqlite3", [("a", 1e308), ("a", 1e308),
                                                    ("b", 1e308), ("b", 1e308),
                                                    ("b", -1e308), ("b", -1e308)])
    assert summary == {"a": {"count": 2, "mean": 1e308}, "b": {"count": 4, "mean": 0.0}}


def test_an_empty_store_summarises_to_nothing(tmp_path: Path) -> None:
    assert _summary_of(tmp_path / "f.sqlite3", []) == {}


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(SIGNAL, st.floats(0.0, 200.0)), max_size=30),
       st.floats(1.0, 150.0))
def test_pruning_keeps_the_aggregates_of_what_is_kept(
        aged: list[tuple[tuple[str, float], float]], cutoff_days: float) -> None:
    """``prune(before)`` deletes exactly the signals recorded before ``before`` (one
    recorded at ``before`` stays) and the summary afterwards is that of the rows kept."""
    now = time.time()
    rows = [(now - age * DAY, kind, float(value)) for (kind, value), age in aged]
    before = now - cutoff_days * DAY
    rows.append((before, "rating", 5.0))  # exactly at the bound: kept
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.sqlite3"
        _summary_of(path, [])  # creates the table
        with sqlite3.connect(path) as db:
            db.executemany("INSERT INTO feedback (ts, run_id, kind, value, text, metadata) "
                           "VALUES (?, 'r', ?, ?, '', '{}')", rows)
        db.close()

        async def main() -> tuple[int, dict[str, dict[str, float]], int]:
            store = FeedbackStore(FeedbackOptions(path=str(path)))
            try:
                deleted = await store.prune(before)
                return deleted, await store.summary(), len(await store.query(limit=10**6))
            finally:
                await store.aieng_pipeline_close()

        deleted, summary, left = anyio.run(main)
    kept = [(kind, value) for ts, kind, value in rows if ts >= before]
    assert (deleted, left) == (len(rows) - len(kept), len(kept))
    _assert_means(summary, _exact_means(kept))
