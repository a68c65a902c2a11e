"""Numbers that must not depend on how they are asked for: a comparison's ratings under any
order of the runs on the command line, and means of huge finite scores (no overflow to
``inf`` / ``nan``)."""

from __future__ import annotations

import json
import math
import random
import re
from fractions import Fraction
from pathlib import Path

import pytest
from aieng_eval import ItemResult, compare_runs, mean_ci, paired_bootstrap
from aieng_eval._compare import compare_markdown
from aieng_eval.report import markdown_report, summarize
from hypothesis import given, settings
from hypothesis import strategies as st

_RUNS = ("alpha", "beta", "gamma", "delta")


def _write_run(folder: Path, scores: list[dict[str, float]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(
        json.dumps(ItemResult(id=f"i{i:02d}", status="ok", scores=s, line=i + 1).to_json())
        + "\n" for i, s in enumerate(scores)), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four runs of 12 items, two metrics, scores drawn so that games win, lose and tie."""
    rng = random.Random(7)
    base = tmp_path_factory.mktemp("runs")
    return [_write_run(base / name, [{"em": float(rng.randint(0, 1)),
                                      "f1": round(rng.random(), 1)} for _ in range(12)])
            for name in _RUNS]


def _ranking(dirs: list[Path]) -> dict[str, object]:
    ranking = compare_runs(dirs, samples=20, seed=5)["ranking"]
    assert ranking is not None
    return {method: dict(sorted(ranking[method].items())) for method in ("elo", "bradley_terry")}


@settings(max_examples=12, deadline=None)
@given(order=st.permutations(range(len(_RUNS))))
def test_ratings_do_not_depend_on_the_order_runs_are_given(
        runs: list[Path], order: list[int]) -> None:
    """``compare A B C D`` and any permutation of it: the same Elo (which depends on the
    order of its games) and Bradley–Terry ratings, intervals included, bit for bit."""
    assert _ranking([runs[i] for i in order]) == _ranking(runs)


def test_three_runs_in_two_orders_give_equal_elo(runs: list[Path]) -> None:
    """The case reported: ``compare A B C`` against ``compare C A B``."""
    first = compare_runs(runs[:3], samples=30, seed=1)["ranking"]
    second = compare_runs([runs[2], runs[0], runs[1]], samples=30, seed=1)["ranking"]
    assert first is not None and second is not None
    assert first["elo"] == second["elo"]
    assert first["games"] == second["games"]


# ---- means of huge finite scores -------------------------------------------------------

_HUGE = st.floats(min_value=-1.7e308, max_value=1.7e308, allow_nan=False)


def _exact_mean(values: list[float]) -> float:
    """The mean by exact rational arithmetic, rounded once (the oracle)."""
    return float(sum(map(Fraction, values)) / len(values))


@settings(max_examples=60, deadline=None)
@given(values=st.lists(_HUGE, min_size=1, max_size=8))
def test_mean_and_interval_are_finite_for_finite_scores(values: list[float]) -> None:
    """Any finite scores: a finite mean within a few ulps of the exact one, and a finite
    interval holding it (the sum of 1e308s overflowed to inf, its interval to nan)."""
    ci = mean_ci(values, samples=40, seed=2)
    assert math.isfinite(ci.mean) and math.isfinite(ci.low) and math.isfinite(ci.high)
    assert ci.low <= ci.mean <= ci.high
    # Within the scores' range and of the exact mean, up to float summation's rounding
    # (relative to the largest score: cancelling sums lose the digits below it).
    ulps = 1e-12 * max(map(abs, values))
    assert min(values) - ulps <= ci.low and ci.high <= max(values) + ulps
    assert math.isclose(ci.mean, _exact_mean(values), rel_tol=1e-12, abs_tol=ulps)


def test_mean_of_1e308_scores_is_1e308() -> None:
    ci = mean_ci([1e308] * 5, samples=50)
    assert (ci.mean, ci.low, ci.high) == (1e308, 1e308, 1e308)
    mixed = mean_ci([1e308, 1e308, -1e308, 0.0], samples=50)
    assert mixed.mean == pytest.approx(2.5e307)
    assert math.isfinite(mixed.low) and math.isfinite(mixed.high)


def test_small_scores_keep_their_usual_mean_bit_for_bit() -> None:
    """The overflow guard does not touch ordinary scores: numpy's mean, as before."""
    import numpy as np

    values = [0.1, 0.7, 0.3, 0.9, 0.2, 1 / 3]
    assert mean_ci(values, samples=10).mean == float(np.mean(values))


def test_paired_difference_of_huge_scores_is_finite_when_it_fits() -> None:
    """Differences past a float (1e308 - -1e308) whose mean still fits: a finite mean
    difference and interval, equal to the exact computation."""
    a, b = [1e308, -1e308] * 20, [-1e308, 1e308] * 20
    result = paired_bootstrap(a, b, samples=200, seed=0)
    # The differences -2e308 and 2e308, twenty each: their mean is 0 exactly, and the
    # resampled means (k of 40 items -2e308: (40 - 2k) / 40 * 2e308) fit a float.
    assert result.mean_diff == 0.0
    assert math.isfinite(result.low) and math.isfinite(result.high)
    assert -2e308 / 2 < result.low < 0.0 < result.high < 2e308 / 2
    assert (result.mean_a, result.mean_b) == (0.0, 0.0)
    assert result.p_value == 1.0


def test_a_mean_difference_past_a_float_reads_n_a_not_nan(tmp_path: Path) -> None:
    """Every item 1.7e308 ahead of -1.7e308: the true mean difference (3.4e308) is past a
    float. compare.md says n/a with a reason, never nan."""
    first = _write_run(tmp_path / "first", [{"s": -1.7e308}] * 3)
    second = _write_run(tmp_path / "second", [{"s": 1.7e308}] * 3)
    page = compare_markdown(compare_runs([first, second], samples=20))
    row = next(line for line in page.splitlines() if line.startswith("| s |"))
    assert not re.search(r"\b(nan|inf)\b", row)
    assert row.split(" | ")[4:6] == ["n/a", "[n/a, n/a]"]
    assert "past a float's range" in page.split(row)[1].split("## Ranking")[0]


def test_report_of_huge_scores_shows_numbers_not_inf() -> None:
    records = [ItemResult(id=f"i{i}", status="ok", line=i + 1, scores={"s": 1e308})
               for i in range(4)]
    summary = summarize(records, samples=30)
    metric = summary["metrics"]["s"]
    assert (metric["mean"], metric["low"], metric["high"]) == (1e308, 1e308, 1e308)
    page = markdown_report(summary, {})
    row = next(line for line in page.splitlines() if line.startswith("| s |"))
    assert "inf" not in row and "nan" not in row
