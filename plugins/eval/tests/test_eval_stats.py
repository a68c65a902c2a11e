"""Bootstrap intervals and the paired bootstrap test."""

from __future__ import annotations

import random

import pytest
from aieng_eval import mean_ci, paired_bootstrap
from hypothesis import given, settings
from hypothesis import strategies as st

scores = st.lists(st.floats(min_value=-10, max_value=10, allow_nan=False), min_size=1,
                  max_size=40)


def test_a_known_difference_is_detected() -> None:
    """b beats a by 0.5 on average with noise: the interval excludes 0, p is small."""
    rng = random.Random(1)
    a = [rng.random() for _ in range(60)]
    b = [x + 0.5 + rng.uniform(-0.2, 0.2) for x in a]
    result = paired_bootstrap(a, b, seed=3)
    assert result.low > 0.3 and result.high < 0.7 and result.significant
    assert result.p_value < 0.01 and result.n == 60
    assert result.mean_diff == pytest.approx(sum(b) / 60 - sum(a) / 60)


def test_no_difference_includes_zero() -> None:
    """Each system wins half the items by the same margin: the interval includes 0 and
    p is large; identical systems give [0, 0] and p = 1."""
    a = [1.0, 0.0] * 20
    b = [0.0, 1.0] * 20
    result = paired_bootstrap(a, b, seed=0)
    assert result.mean_diff == 0.0 and result.low < 0 < result.high
    assert result.p_value > 0.5 and not result.significant
    same = paired_bootstrap(a, a)
    assert (same.low, same.high, same.p_value) == (0.0, 0.0, 1.0)


def test_seeded_and_validated() -> None:
    """The same seed gives the same interval; bad input is refused with a reason."""
    a, b = [0.1, 0.5, 0.9, 0.3], [0.2, 0.4, 1.0, 0.8]
    assert paired_bootstrap(a, b, seed=5) == paired_bootstrap(a, b, seed=5)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="no paired items"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0], confidence=1.0)
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])
    for seeded in (lambda: mean_ci([1.0, 2.0], seed=-1), lambda: mean_ci([1.0], seed=-1),
                   lambda: paired_bootstrap(a, b, seed=-2)):
        with pytest.raises(ValueError, match="bootstrap seed must not be negative"):
            seeded()


@settings(max_examples=50, deadline=None)
@given(scores, st.integers(0, 100))
def test_interval_contains_the_mean(values: list[float], seed: int) -> None:
    """The interval always holds the estimate, and lies within the values' range."""
    ci = mean_ci(values, samples=200, seed=seed)
    assert ci.low <= ci.mean <= ci.high and ci.n == len(values)
    assert min(values) - 1e-9 <= ci.low and ci.high <= max(values) + 1e-9


@settings(max_examples=50, deadline=None)
@given(scores, st.floats(min_value=-5, max_value=5), st.integers(0, 100))
def test_paired_difference_is_shift_equivariant(values: list[float], shift: float,
                                                seed: int) -> None:
    """Adding a constant to system b moves the difference and its interval by that
    constant; swapping the systems negates them."""
    shifted = [v + shift for v in values]
    base = paired_bootstrap(values, values, samples=100, seed=seed)
    moved = paired_bootstrap(values, shifted, samples=100, seed=seed)
    assert moved.mean_diff == pytest.approx(base.mean_diff + shift, abs=1e-9)
    assert moved.low == pytest.approx(shift, abs=1e-9)
    assert moved.high == pytest.approx(shift, abs=1e-9)
    rng = random.Random(seed)
    other = [v + rng.uniform(-1, 1) for v in values]
    forward = paired_bootstrap(values, other, samples=100, seed=seed)
    backward = paired_bootstrap(other, values, samples=100, seed=seed)
    assert backward.mean_diff == pytest.approx(-forward.mean_diff, abs=1e-9)
    assert backward.low == pytest.approx(-forward.high, abs=1e-9)
    assert 0 < forward.p_value <= 1
