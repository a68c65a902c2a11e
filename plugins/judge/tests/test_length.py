"""Length control over a batch: the logistic LC win rate and the log-length adjustment."""

from __future__ import annotations

import math
import random

import pytest
from aieng_judge import length_adjusted_scores, length_controlled_win_rate, spearman
from hypothesis import given, settings
from hypothesis import strategies as st


def simulate(n: int, *, skill: float, length_effect: float, seed: int,
             verbose: bool) -> tuple[list[float], list[int], list[int]]:
    """Pairs drawn from the fitted model's own form, P(win) = sigmoid(skill +
    length_effect * tanh(d / sd)) with sd the batch's std of length differences; a verbose
    model writes longer answers than the baseline."""
    rng = random.Random(seed)
    baseline = [rng.randint(20, 200) for _ in range(n)]
    model = [b + rng.randint(-60, 150) if verbose else rng.randint(20, 200) for b in baseline]
    diffs = [m - b for m, b in zip(model, baseline)]
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / n)
    outcomes = []
    for d in diffs:
        p = 1 / (1 + math.exp(-(skill + length_effect * math.tanh(d / sd))))
        outcomes.append(1.0 if rng.random() < p else 0.0)
    return outcomes, model, baseline


@given(st.integers(0, 10_000))
@settings(max_examples=10, deadline=None)
def test_verbosity_alone_is_controlled_away(seed: int) -> None:
    """A verbose model with no real skill wins well over half raw, yet its
    length-controlled win rate is near 0.5 and its length coefficient positive."""
    outcomes, model, baseline = simulate(3000, skill=0.0, length_effect=2.0, seed=seed,
                                         verbose=True)
    result = length_controlled_win_rate(outcomes, model, baseline)
    assert result.raw > 0.6
    assert result.controlled == pytest.approx(0.5, abs=0.06)
    assert result.length_coefficient > 1.0


def test_real_skill_survives() -> None:
    """Without a length effect, the controlled win rate stays near the raw one."""
    outcomes, model, baseline = simulate(4000, skill=1.0, length_effect=0.0, seed=3,
                                         verbose=False)
    result = length_controlled_win_rate(outcomes, model, baseline)
    assert result.controlled == pytest.approx(result.raw, abs=0.05)
    assert abs(result.length_coefficient) < 0.3


def test_ties_and_separation_stay_finite() -> None:
    """Ties count half; outcomes perfectly separated by length give finite numbers."""
    result = length_controlled_win_rate([1.0, 1.0, 0.0, 0.0], [100, 90, 10, 20], [50] * 4)
    assert math.isfinite(result.controlled) and math.isfinite(result.length_coefficient)
    assert length_controlled_win_rate([0.5, 0.5], [10, 20], [10, 20]).raw == 0.5


def _penalized_gradient(outcomes: list[float], model: list[int], baseline: list[int],
                        theta: float, beta: float) -> tuple[float, float]:
    """The gradient of the fit's objective (log-likelihood less the 1e-3 ridge) at
    ``(theta, beta)``, the features built as the function builds them."""
    diffs = [float(m - b) for m, b in zip(model, baseline)]
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / len(diffs)) or 1.0
    g0, g1 = -1e-3 * theta, -1e-3 * beta
    for d, y in zip(diffs, outcomes):
        x = math.tanh(d / sd)
        p = 1 / (1 + math.exp(-(theta + beta * x)))
        g0 += y - p
        g1 += (y - p) * x
    return g0, g1


def test_a_batch_where_length_and_model_coincide_is_fitted() -> None:
    """Every answer of the model longer by the same margin (length and model cannot be
    told apart): the ridge splits the effect, the win rate is not reset to 0.5 (the
    Newton step once added the ridge to the Hessian's cross term, found it singular
    and stopped before the first step)."""
    outcomes = [1.0] * 50 + [0.0]
    result = length_controlled_win_rate(outcomes, [100] * 51, [1] * 51)
    assert result.controlled > 0.8
    assert result.length_coefficient > 1.0
    theta = math.log(result.controlled / (1 - result.controlled))
    g0, g1 = _penalized_gradient(outcomes, [100] * 51, [1] * 51, theta,
                                 result.length_coefficient)
    assert abs(g0) < 1e-6 and abs(g1) < 1e-6


@given(st.lists(st.tuples(st.sampled_from([0.0, 0.5, 1.0]), st.integers(1, 300),
                          st.integers(1, 300)), min_size=1, max_size=30))
@settings(max_examples=60, deadline=None)
def test_the_fit_is_the_penalized_maximum(rows: list[tuple[float, int, int]]) -> None:
    """Whatever the batch (ties, separation, equal lengths), the returned fit is where
    the penalized log-likelihood's gradient vanishes (a concave objective: its maximum)."""
    outcomes = [y for y, _, _ in rows]
    model = [m for _, m, _ in rows]
    baseline = [b for _, _, b in rows]
    result = length_controlled_win_rate(outcomes, model, baseline)
    assert 0.0 < result.controlled < 1.0
    theta = math.log(result.controlled / (1 - result.controlled))
    g0, g1 = _penalized_gradient(outcomes, model, baseline, theta, result.length_coefficient)
    assert abs(g0) < 1e-6 * len(rows) and abs(g1) < 1e-6 * len(rows)


def test_win_rate_errors() -> None:
    """Empty, mismatched and out-of-range inputs are refused."""
    with pytest.raises(ValueError, match="non-empty"):
        length_controlled_win_rate([], [], [])
    with pytest.raises(ValueError, match="non-empty"):
        length_controlled_win_rate([1.0], [1, 2], [1])
    with pytest.raises(ValueError, match=r"outcomes\[0\]"):
        length_controlled_win_rate([2.0], [1], [1])


@given(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 2000)), min_size=3, max_size=40))
def test_adjusted_scores_keep_the_mean_and_drop_the_length_correlation(
    pairs: list[tuple[int, int]],
) -> None:
    """The mean is kept and the adjusted scores are (numerically) uncorrelated with log
    length."""
    scores = [float(s) for s, _ in pairs]
    lengths = [n for _, n in pairs]
    adjusted = length_adjusted_scores(scores, lengths)
    assert sum(adjusted) / len(adjusted) == pytest.approx(sum(scores) / len(scores))
    logs = [math.log(n) for n in lengths]
    mean_log = sum(logs) / len(logs)
    mean_adj = sum(adjusted) / len(adjusted)
    covariance = sum((x - mean_log) * (a - mean_adj) for x, a in zip(logs, adjusted))
    assert covariance == pytest.approx(0.0, abs=1e-6)


def test_adjusted_scores_example() -> None:
    """Scores that only follow length become flat; constant lengths change nothing."""
    lengths = [10, 100, 1000]
    scores = [1.0 + math.log10(n) for n in lengths]
    assert spearman(scores, lengths) == 1.0
    assert length_adjusted_scores(scores, lengths) == pytest.approx([3.0, 3.0, 3.0])
    assert length_adjusted_scores([1.0, 2.0], [5, 5]) == [1.0, 2.0]
    with pytest.raises(ValueError, match="non-empty"):
        length_adjusted_scores([1.0], [])
