"""Cohen's kappa and Spearman's rho against scikit-learn / scipy and textbook examples."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
from aieng_judge.agreement import cohen_kappa, spearman
from hypothesis import assume, given
from hypothesis import strategies as st


def oracle(module: str) -> Any:
    """scipy / scikit-learn, the oracles of the comparison tests (those skip without them;
    the textbook and property tests below do not need them)."""
    return pytest.importorskip(module)



@st.composite
def label_pairs(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Two raters' ordinal labels (1-5) of the same items."""
    n = draw(st.integers(1, 40))
    labels = st.integers(1, 5)
    return draw(st.lists(labels, min_size=n, max_size=n)), draw(
        st.lists(labels, min_size=n, max_size=n)
    )


@st.composite
def score_pairs(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    """Two score lists of the same length, with ties likely."""
    n = draw(st.integers(2, 40))
    values = st.one_of(st.integers(-3, 3).map(float), st.floats(-1e3, 1e3))
    return draw(st.lists(values, min_size=n, max_size=n)), draw(
        st.lists(values, min_size=n, max_size=n)
    )


def test_kappa_textbook_example() -> None:
    """The classic 50-item yes/no example: po = 0.7, pe = 0.5, kappa = 0.4."""
    a = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
@given(pair=label_pairs())
def test_kappa_matches_sklearn(pair: tuple[list[int], list[int]], weights: str | None) -> None:
    """Unweighted, linear and quadratic kappa equal scikit-learn's wherever it is defined."""
    a, b = pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = oracle("sklearn.metrics").cohen_kappa_score(a, b, weights=weights)
    assume(math.isfinite(expected))
    assert cohen_kappa(a, b, weights=weights) == pytest.approx(expected, abs=1e-9)  # type: ignore[arg-type]


@given(st.lists(st.sampled_from(["good", "bad", "ok"]), min_size=1, max_size=30))
def test_kappa_of_identical_labels_is_one(labels: list[str]) -> None:
    """A rater agrees perfectly with itself, even when it uses a single label."""
    assert cohen_kappa(labels, labels) == 1.0
    assert cohen_kappa(labels, list(labels), weights="quadratic") == 1.0


@given(label_pairs())
def test_kappa_is_symmetric_and_bounded(pair: tuple[list[int], list[int]]) -> None:
    """Swapping the raters changes nothing; kappa stays in [-1, 1]."""
    a, b = pair
    for weights in (None, "linear", "quadratic"):
        k = cohen_kappa(a, b, weights=weights)  # type: ignore[arg-type]
        assert k == pytest.approx(cohen_kappa(b, a, weights=weights))  # type: ignore[arg-type]
        assert -1.0 <= k <= 1.0


def test_kappa_errors() -> None:
    """Mismatched lengths, empty input, unknown weights and unsortable labels are named."""
    with pytest.raises(ValueError, match="differ in length"):
        cohen_kappa([1, 2], [1])
    with pytest.raises(ValueError, match="at least 1"):
        cohen_kappa([], [])
    with pytest.raises(ValueError, match="weights must be"):
        cohen_kappa([1], [1], weights="cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sortable"):
        cohen_kappa([1, "a"], ["a", 1], weights="linear")


def test_spearman_textbook_example() -> None:
    """Ten pairs with no ties: rho = 1 - 6·sum(d²)/(n(n²-1)) = -29/165."""
    iq = [106, 100, 86, 101, 99, 103, 97, 113, 112, 110]
    tv = [7, 27, 2, 50, 28, 29, 20, 12, 6, 17]
    assert spearman(iq, tv) == pytest.approx(-29 / 165)


@given(score_pairs())
def test_spearman_matches_scipy(pair: tuple[list[float], list[float]]) -> None:
    """Rho equals scipy's spearmanr, ties averaged, NaN where a list is constant."""
    x, y = pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = float(oracle("scipy.stats").spearmanr(x, y).statistic)
    ours = spearman(x, y)
    if math.isnan(expected):
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(expected, abs=1e-9)


@given(score_pairs())
def test_spearman_symmetric_bounded(pair: tuple[list[float], list[float]]) -> None:
    """Rho is symmetric in its arguments and lies in [-1, 1]."""
    x, y = pair
    rho = spearman(x, y)
    assume(not math.isnan(rho))
    assert rho == pytest.approx(spearman(y, x))
    assert -1.0 <= rho <= 1.0


@given(st.lists(st.integers(-100, 100), min_size=2, max_size=30, unique=True))
def test_spearman_monotone_maps(x: list[int]) -> None:
    """A strictly increasing map gives 1, a decreasing one -1."""
    assert spearman(x, [v * 3 + 1 for v in x]) == pytest.approx(1.0)
    assert spearman(x, [-(v ** 3) for v in x]) == pytest.approx(-1.0)


def test_spearman_errors() -> None:
    """Too few items, mismatched lengths and NaN are refused by name."""
    with pytest.raises(ValueError, match="at least 2"):
        spearman([1.0], [1.0])
    with pytest.raises(ValueError, match="differ in length"):
        spearman([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match=r"y\[1\]"):
        spearman([1.0, 2.0], [1.0, math.nan])
