"""Drift over millions of observations: the windows stay their size, the reference file is
written when a window freezes (not per observation), and judge metric names that vary per
request do not grow the monitor past :data:`MAX_SCORE_DETECTORS` detectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog
from aieng_drift import DriftComponent, DriftMonitor, DriftOptions
from aieng_drift._monitor import MAX_SCORE_DETECTORS
from aieng_hookspecs.types import Score

from aieng_core.testing.steady import ameasure_growth, measure_growth


def _options(path: Path | None = None) -> DriftOptions:
    return DriftOptions(reference_size=300, window_size=200, check_every=100,
                        detectors=("length", "vocabulary", "score"),
                        reference_path=None if path is None else str(path))


def test_observations_keep_the_windows_their_size_and_the_file_unwritten(
        tmp_path: Path) -> None:
    """5,000 requests and scores past the warm-up: no memory retained per observation,
    and the reference file written once per detector (when its window froze), never
    again while items slide through the current windows."""
    path = tmp_path / "reference.json"
    monitor = DriftMonitor(_options(path))
    assert monitor.store is not None
    writes: list[int] = []
    write = monitor.store.write

    def counted(generation: int, document: Any) -> bool:
        writes.append(generation)
        return write(generation, document)

    monitor.store.write = counted  # type: ignore[method-assign]

    def observe(i: int) -> None:
        monitor.observe_text(f"user {i} asks about order {i % 97} " * (1 + i % 4))
        monitor.observe_score("faithfulness", (i % 10) / 10)

    with structlog.testing.capture_logs():
        growth = measure_growth(observe, warmup=1_000, calls=5_000)
    assert growth.per_call < 1, growth.report()
    assert len(writes) <= 3  # length, vocabulary, score:faithfulness froze once each
    assert all(len(w.current) <= 200 and len(w.reference) == 300
               for w in monitor.windows.values())
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert set(saved["windows"]) == {"length", "vocabulary", "score:faithfulness"}


def test_metric_names_that_vary_per_request_are_capped() -> None:
    """Judge metric names with a request id in them: past MAX_SCORE_DETECTORS detectors
    later names are not watched (one warning), so memory stays flat; the detectors already
    watched go on counting."""
    monitor = DriftMonitor(_options())
    with structlog.testing.capture_logs() as logs:
        growth = measure_growth(lambda i: monitor.observe_score(f"judge.req-{i}", 0.5),
                                warmup=MAX_SCORE_DETECTORS + 100, calls=2_000)
        monitor.observe_score("judge.req-0", 0.25)
    assert growth.per_call < 8, growth.report()
    scores = [name for name in monitor.windows if name.startswith("score:")]
    assert len(scores) == MAX_SCORE_DETECTORS
    assert len(monitor.windows["score:judge.req-0"].reference) == 2
    assert [e["event"] for e in logs].count("drift.score_metrics_capped") == 1


@pytest.mark.anyio
async def test_the_component_keeps_nothing_per_judged_run() -> None:
    """The pipeline component fed judge scores of distinct runs (fixed metric names, as
    a ``judge`` stage gives them): nothing retained per run past the warm-up."""
    component = DriftComponent(_options())

    async def judged(i: int) -> None:
        await component.observe_scores([Score(name="rubric.accuracy", value=float(i % 5)),
                                        Score(name="rubric.clarity", value=float(i % 3))])

    with structlog.testing.capture_logs():
        growth = await ameasure_growth(judged, warmup=600, calls=3_000)
    assert growth.per_call < 8 and not growth.held, growth.report()
