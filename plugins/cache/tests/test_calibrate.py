"""Threshold calibration: the shipped paraphrase set, the choice rule, the rates."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
from aieng_cache import Pair, calibrate, load_pairs, measure, score_pairs
from hypothesis import given, settings
from hypothesis import strategies as st


def test_shipped_set_is_large_and_has_hard_negatives() -> None:
    """The shipped set has at least 150 labelled pairs, both labels, and hard negatives
    such as cancel vs place an order."""
    pairs = load_pairs()
    assert len(pairs) >= 150
    kinds = {p.kind for p in pairs}
    assert {"paraphrase", "hard-negative", "unrelated"} <= kinds
    assert sum(p.is_paraphrase for p in pairs) >= 75
    assert Pair("How do I cancel my order?", "How do I place my order?", False,
                "hard-negative") in pairs
    assert all(p.is_paraphrase == (p.kind == "paraphrase") for p in pairs)


def test_malformed_lines_are_named(tmp_path: Path) -> None:
    """A bad record is reported with its file and line number."""
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"a": "x", "b": "y", "paraphrase": True}) + "\n{\"a\": 1}\n")
    with pytest.raises(ValueError, match=r"pairs.jsonl:2"):
        load_pairs(path)


def test_separable_scores_give_a_threshold_between_the_classes() -> None:
    """When every paraphrase scores above every non-paraphrase, the threshold hits all
    paraphrases and no non-paraphrase, on both splits."""
    pairs = [Pair(f"a{i}", f"b{i}", i % 2 == 0) for i in range(40)]
    scores = [0.9 + i / 1000 if i % 2 == 0 else 0.5 + i / 1000 for i in range(40)]
    result = calibrate(pairs, scores, target_false_hit_rate=0.0)
    assert 0.5 < result.threshold <= 0.9
    assert result.heldout.hit_rate == 1.0 and result.heldout.false_hit_rate == 0.0
    assert result.train.precision == 1.0


@settings(max_examples=100, deadline=None)
@given(data=st.lists(st.tuples(st.floats(-1, 1), st.booleans()), min_size=4, max_size=60),
       target=st.floats(0, 0.5))
def test_the_target_false_hit_rate_holds_on_the_training_split(
    data: list[tuple[float, bool]], target: float
) -> None:
    """Whatever the scores, the chosen threshold keeps the training false-hit rate at or
    under the target, and no lower threshold would hit more within it."""
    labels = [y for _, y in data]
    if all(labels) or not any(labels):
        labels[0] = not labels[0]
    pairs = [Pair("a", "b", y) for y in labels]
    scores = [s for s, _ in data]
    result = calibrate(pairs, scores, target_false_hit_rate=target, heldout=0.25)
    assert result.train.false_hit_rate <= target
    if result.heldout.negatives:
        assert 0.0 <= result.heldout.false_hit_rate <= 1.0
    else:  # no held-out negatives: no rate
        assert math.isnan(result.heldout.false_hit_rate)


def test_f_beta_objective_and_bad_arguments() -> None:
    """With beta the best F-beta is chosen (perfect on separable scores); bad arguments
    are errors saying which."""
    pairs = [Pair(f"a{i}", f"b{i}", i % 2 == 0) for i in range(20)]
    scores = [0.9 - i / 100 if i % 2 == 0 else 0.4 + i / 100 for i in range(20)]
    result = calibrate(pairs, scores, beta=1.0)
    assert result.objective == "max F-1" and result.train.f_beta == 1.0
    with pytest.raises(ValueError, match="paraphrase and non-paraphrase"):
        calibrate(pairs[:1], scores[:1])
    with pytest.raises(ValueError, match="3 scores for 20 pairs"):
        calibrate(pairs, scores[:3])
    with pytest.raises(ValueError, match="target_false_hit_rate"):
        calibrate(pairs, scores, target_false_hit_rate=1.0)


def test_measure_counts() -> None:
    """Hit rate, false-hit rate and precision are counted as defined."""
    rates = measure([0.9, 0.8, 0.95, 0.2], [True, False, False, True], 0.85)
    assert (rates.hit_rate, rates.false_hit_rate, rates.precision) == (0.5, 0.5, 0.5)


@pytest.mark.anyio
async def test_score_pairs_embeds_each_text_once() -> None:
    """Each distinct text is embedded once; the cosine of identical texts is 1."""
    seen: list[list[str]] = []

    def embed(texts: list[str]) -> list[list[float]]:
        seen.append(list(texts))
        return [[1.0, float(len(t))] for t in texts]

    pairs = [Pair("x", "x", True), Pair("x", "yy", False)]
    scores = await score_pairs(pairs, embed)
    assert len(seen) == 1 and sorted(seen[0]) == ["x", "yy"]
    assert scores[0] == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scores_are_refused_naming_the_pair(bad: float) -> None:
    """A NaN or infinite score (an embedder's NaN vector) is a ValueError naming the
    pair's index and the value, never a NaN threshold."""
    pairs = [Pair(f"a{i}", f"b{i}", i % 2 == 0) for i in range(20)]
    scores = [0.9 - i / 100 if i % 2 == 0 else 0.4 + i / 100 for i in range(20)]
    scores[7] = bad
    with pytest.raises(ValueError, match=rf"pair 7 .*{bad}"):
        calibrate(pairs, scores)


def test_a_rate_of_no_pairs_is_nan() -> None:
    """The hit rate of a set without paraphrase pairs, the false-hit rate of one without
    non-paraphrase pairs, are NaN (no pairs: no rate), not 0.0; the other rate stays
    counted."""
    no_positives = measure([0.9, 0.2], [False, False], 0.5)
    assert math.isnan(no_positives.hit_rate) and math.isnan(no_positives.f_beta)
    assert no_positives.false_hit_rate == 0.5 and no_positives.positives == 0
    no_negatives = measure([0.9, 0.2], [True, True], 0.5)
    assert math.isnan(no_negatives.false_hit_rate)
    assert no_negatives.hit_rate == 0.5 and no_negatives.negatives == 0
    empty = measure([], [], 0.5)
    assert math.isnan(empty.hit_rate) and math.isnan(empty.false_hit_rate)


def test_a_training_split_without_a_class_is_refused() -> None:
    """One non-paraphrase pair with 70 % held out leaves none to train on: calibrate says
    how many of each the training split has and what changes that, instead of choosing
    the lowest threshold on a silent false-hit rate of 0."""
    pairs = [Pair(f"a{i}", f"b{i}", True) for i in range(9)] + [Pair("x", "y", False)]
    scores = [0.5 + i / 20 for i in range(9)] + [0.99]
    with pytest.raises(ValueError, match=r"3 paraphrase and 0 non-paraphrase.*heldout"):
        calibrate(pairs, scores, heldout=0.7)
    result = calibrate(pairs, scores, heldout=0.3)  # the negative stays in training
    assert result.train.negatives == 1 and math.isnan(result.heldout.false_hit_rate)


@settings(max_examples=200, deadline=None)
@given(data=st.lists(st.tuples(st.floats(-1, 1), st.booleans()), max_size=40),
       threshold=st.floats(-1.5, 1.5))
def test_measure_by_definition(data: list[tuple[float, bool]], threshold: float) -> None:
    """Each rate is its count over its class, by brute force with fractions; a class with
    no pairs has a NaN rate."""
    scores = [s for s, _ in data]
    labels = [y for _, y in data]
    rates = measure(scores, labels, threshold)
    hits = [s >= threshold for s in scores]
    for rate, label in ((rates.hit_rate, True), (rates.false_hit_rate, False)):
        members = [h for h, y in zip(hits, labels) if y is label]
        if members:
            assert rate == float(Fraction(sum(members), len(members)))
        else:
            assert math.isnan(rate)
