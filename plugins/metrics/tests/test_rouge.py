"""ROUGE equals rouge-score (its tokenizer, the Porter stemmer, ROUGE-1/2/L/Lsum, several
references) on random text; the bit-parallel LCS equals the quadratic table."""

from __future__ import annotations

import math
import random
import tracemalloc

import pytest
from aieng_metrics import lcs_length, rouge, rouge_tokenize
from aieng_metrics._rouge import _lcs_indices
from hypothesis import given, settings
from hypothesis import strategies as st
from metrics_strategies import reference_lists, texts

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
from rouge_score import tokenize as rs_tokenize

SETTINGS = settings(max_examples=150, deadline=None)
TYPES = ["rouge1", "rouge2", "rouge3", "rougeL", "rougeLsum"]
_SCORERS = {stem: rouge_scorer.RougeScorer(TYPES, use_stemmer=stem) for stem in (False, True)}


def close(a: float, b: float) -> bool:
    """Equal to 1e-9 (in practice bit-identical)."""
    return math.isclose(a, b, rel_tol=0.0, abs_tol=1e-9)


def sentences() -> st.SearchStrategy[str]:
    """Texts of several lines (ROUGE-Lsum's sentences)."""
    return st.lists(texts(max_pieces=8), max_size=4).map("\n".join)


@SETTINGS
@given(texts(), st.booleans())
def test_tokenizer_equals_rouge_score(text: str, stem: bool) -> None:
    """Our tokens are rouge-score's, with and without stemming."""
    stemmer = _SCORERS[True]._tokenizer._stemmer if stem else None
    assert rouge_tokenize(text, stem) == rs_tokenize.tokenize(text, stemmer)


@SETTINGS
@given(sentences(), sentences(), st.booleans())
def test_scores_equal_rouge_score(prediction: str, reference: str, stem: bool) -> None:
    """Precision, recall and F of every variant equal RougeScorer.score(target, pred)."""
    ours = rouge(prediction, reference, TYPES, use_stemmer=stem)
    theirs = _SCORERS[stem].score(reference, prediction)
    for kind in TYPES:
        a, b = ours[kind], theirs[kind]
        assert close(a.precision, b.precision), (kind, a, b)
        assert close(a.recall, b.recall), (kind, a, b)
        assert close(a.fmeasure, b.fmeasure), (kind, a, b)


@SETTINGS
@given(sentences(), reference_lists(2, 3))
def test_several_references_equal_score_multi(prediction: str, references: list[str]) -> None:
    """With several references, each variant's best-F reference counts, as score_multi."""
    ours = rouge(prediction, references, TYPES)
    theirs = _SCORERS[False].score_multi(references, prediction)
    for kind in TYPES:
        assert close(ours[kind].fmeasure, theirs[kind].fmeasure)
        assert close(ours[kind].precision, theirs[kind].precision)


def _lcs_table(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = (table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1]
                           else max(table[i - 1][j], table[i][j - 1]))
    return table[-1][-1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from("abcde"), max_size=70),
       st.lists(st.sampled_from("abcdef"), max_size=70))
def test_bit_parallel_lcs_equals_the_table(a: list[str], b: list[str]) -> None:
    """The bit-parallel LCS length is the dynamic-programming one, past 64 tokens too."""
    assert lcs_length(a, b) == _lcs_table(a, b) == lcs_length(b, a)


def test_worked_example() -> None:
    """Worked by hand: 6 shared unigrams of 8 and 9; an LCS of 5 tokens."""
    scores = rouge("The quick brown dog jumps on the log.",
                   "The quick brown fox jumps over the lazy dog", ["rouge1", "rougeL"])
    assert scores["rouge1"].precision == pytest.approx(0.75)
    assert scores["rouge1"].recall == pytest.approx(0.6666666666666666)
    assert scores["rougeL"].fmeasure == pytest.approx(50 / 85)


def test_bad_input_is_named() -> None:
    """An unknown variant, a string for the list of variants and no reference fail
    clearly."""
    with pytest.raises(ValueError, match="unknown ROUGE variant 'rougeX'"):
        rouge("a", "a", ["rougeX"])
    with pytest.raises(TypeError, match="list of ROUGE variants"):
        rouge("a", "a", "rouge1")
    with pytest.raises(ValueError, match="at least one reference"):
        rouge("a", [])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=90),
       st.lists(st.sampled_from("abcde"), max_size=90),
       st.integers(1, 6), st.integers(2, 5))
def test_union_lcs_indices_equal_rouge_scores(ref: list[str], can: list[str], block: int,
                                              fanout: int) -> None:
    """ROUGE-Lsum's LCS read-out from checkpointed rows is rouge-score's ``lcs_ind`` (its
    quadratic table and tie-breaking), whatever the span sizes, the defaults included."""
    expected = rouge_scorer.lcs_ind(ref, can)
    assert _lcs_indices(ref, can, block=block, fanout=fanout) == expected
    assert _lcs_indices(ref, can) == expected


def test_rouge_lsum_of_long_unbroken_texts_holds_linear_memory() -> None:
    """Two 4,000-token texts without a sentence break: rouge-score's table would hold 16
    million cells (over 100 MB); the read-out holds a few rows of 4,000 bits. The score is
    the one the table gives (its LCS length equals the bit-parallel one here, every token
    of the union LCS counted once)."""
    rng = random.Random(7)
    words = [f"w{i}" for i in range(40)]
    reference = " ".join(rng.choice(words) for _ in range(4_000))
    prediction = " ".join(rng.choice(words) for _ in range(4_000))
    tracemalloc.start()
    try:
        score = rouge(prediction, reference, ["rougeL", "rougeLsum"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000
    # one sentence each: the union is the one LCS, so ROUGE-Lsum is ROUGE-L
    assert score["rougeLsum"] == score["rougeL"]
