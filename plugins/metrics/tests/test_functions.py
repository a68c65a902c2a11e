"""The pure functions: normalization, exact match, token F1, pass@k (against the direct
binomial formula), retrieval metrics (against the kernel's), perplexity and bits per
byte, cosine and greedy matching."""

from __future__ import annotations

import math
import sys
from fractions import Fraction

import numpy as np
import pytest
from aieng_hookspecs.types import Completion, TokenLogprob
from aieng_metrics import (
    Normalization,
    average_precision,
    bits_per_byte,
    cosine,
    exact_match,
    greedy_match,
    logprobs_from,
    mean_average_precision,
    mean_nll,
    mean_pass_at_k,
    mrr,
    ndcg,
    normalize_answer,
    pass_at_k,
    perplexity,
    recall,
    token_f1,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core.evaluation import mrr_at_k, ndcg_at_k, recall_at_k
from aieng_core.testing import strategies as aist

# -- normalization, exact match, token F1 -------------------------------------------------


def test_squad_normalization() -> None:
    """SQuAD's steps: lower case, punctuation, articles, whitespace."""
    assert normalize_answer("  The  Eiffel-Tower, in Paris!  ") == "eiffeltower in paris"
    assert exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert exact_match("Eiffel Tower", "Louvre") == 0.0


def test_each_normalization_option_matters() -> None:
    """Turning a step off makes the difference it removes count again; NFKC folds
    full-width and ligature forms."""
    strict = Normalization(lowercase=False, strip_punctuation=False, drop_articles=False,
                           collapse_whitespace=False)
    assert exact_match("Paris", "paris", strict) == 0.0
    assert exact_match("Paris", "paris", attrs_evolve(strict, lowercase=True)) == 1.0
    assert exact_match("Paris!", "Paris", attrs_evolve(strict, strip_punctuation=True)) == 1.0
    assert exact_match("the Paris", "a Paris", attrs_evolve(strict, drop_articles=True)) == 1.0
    assert exact_match("a  b ", "a b", attrs_evolve(strict, collapse_whitespace=True)) == 1.0
    assert exact_match("ｐａｒｉｓ", "paris") == 0.0
    assert exact_match("ｐａｒｉｓ", "paris", Normalization(nfkc=True)) == 1.0
    assert exact_match("ﬁsh", "fish", Normalization(nfkc=True)) == 1.0


def attrs_evolve(normalization: Normalization, **changes: bool) -> Normalization:
    """A copy of ``normalization`` with ``changes``."""
    import attrs

    return attrs.evolve(normalization, **changes)


def test_token_f1_worked_examples() -> None:
    """Bag-of-tokens F1 after normalization; SQuAD v2's empty-answer rule."""
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(2 * 1 * (2 / 3) / (5 / 3))
    assert token_f1("Paris", "paris.") == 1.0
    assert token_f1("x y", "z") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("the", "") == 1.0  # both normalize to no token
    assert token_f1("", "Paris") == 0.0
    assert token_f1("a a b", "a b b") == pytest.approx(2 / 3)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30), st.text(max_size=30))
def test_token_f1_is_symmetric_and_bounded(a: str, b: str) -> None:
    """F1 is symmetric, in [0, 1], and 1 exactly when the normalized bags are equal."""
    value = token_f1(a, b)
    assert value == token_f1(b, a)
    assert 0.0 <= value <= 1.0
    bags_equal = sorted(normalize_answer(a).split()) == sorted(normalize_answer(b).split())
    assert (value == 1.0) == bags_equal


def test_non_text_is_refused() -> None:
    """A non-string answer fails naming the type."""
    with pytest.raises(TypeError, match="got int"):
        exact_match(3, "3")  # type: ignore[arg-type]


# -- pass@k --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 200).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_equals_the_binomial_formula(nck: tuple[int, int, int]) -> None:
    """The stable product form equals 1 - C(n-c, k) / C(n, k) computed exactly."""
    n, c, k = nck
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12)


def test_pass_at_k_edges_and_errors() -> None:
    """No correct sample: 0; fewer wrong samples than k: 1; pass@1 is c/n; bad counts
    are named."""
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 6, 5) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert mean_pass_at_k([(10, 3), (10, 0)], 1) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="k must be between 1 and n=3"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="c must be between 0 and n=3"):
        pass_at_k(3, 4, 1)
    with pytest.raises(TypeError, match="n must be an integer"):
        pass_at_k(3.0, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one problem"):
        mean_pass_at_k([], 1)


# -- retrieval -----------------------------------------------------------------------------

_DOCS = st.sampled_from([f"d{i}" for i in range(12)])


@settings(max_examples=300, deadline=None)
@given(st.lists(_DOCS, max_size=15), st.dictionaries(_DOCS, st.integers(-1, 3), max_size=8),
       st.integers(1, 12))
def test_retrieval_metrics_agree_with_the_kernel(ranked: list[str], qrels: dict[str, int],
                                                 k: int) -> None:
    """nDCG@k, Recall@k and MRR@k equal aieng_core.evaluation's on random runs and graded
    qrels (duplicates, negative grades and unjudged documents included)."""
    assert ndcg(ranked, qrels, k) == pytest.approx(ndcg_at_k(ranked, qrels, k), abs=1e-9)
    assert recall(ranked, qrels, k) == pytest.approx(recall_at_k(ranked, qrels, k), abs=1e-9)
    assert mrr(ranked, qrels, k) == pytest.approx(mrr_at_k(ranked, qrels, k), abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.lists(_DOCS, max_size=15), st.dictionaries(_DOCS, st.integers(0, 3), max_size=8))
def test_average_precision_equals_its_definition(ranked: list[str],
                                                 qrels: dict[str, int]) -> None:
    """AP is the mean over relevant documents of the precision at their rank (0 when not
    retrieved), written out the long way."""
    unique = list(dict.fromkeys(ranked))
    relevant = [d for d, g in qrels.items() if g > 0]
    expected = 0.0
    if relevant:
        precisions = []
        for doc in relevant:
            if doc in unique:
                rank = unique.index(doc) + 1
                hits = sum(1 for d in unique[:rank] if qrels.get(d, 0) > 0)
                precisions.append(hits / rank)
            else:
                precisions.append(0.0)
        expected = sum(precisions) / len(relevant)
    assert average_precision(ranked, qrels) == pytest.approx(expected, abs=1e-12)


def test_retrieval_worked_example_and_map() -> None:
    """Relevant at ranks 1 and 3 of 2 relevant: AP = (1 + 2/3) / 2; MAP averages over
    judged queries, a missing run counting 0."""
    qrels = {"q1": {"a": 1, "c": 1}, "q2": {"x": 1}, "q3": {"z": 0}}
    runs = {"q1": ["a", "b", "c"]}
    assert average_precision(runs["q1"], qrels["q1"]) == pytest.approx(5 / 6)
    assert mean_average_precision(runs, qrels) == pytest.approx(5 / 12)
    assert ndcg(["b", "a"], {"a": 2}, 10) == pytest.approx(1 / math.log2(3))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ndcg(["a"], {"a": 1}, 0)
    with pytest.raises(TypeError, match="not a string"):
        recall("abc", {"a": 1})


# -- perplexity and bits per byte ------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(aist.token_logprobs(), min_size=1, max_size=20))
def test_perplexity_and_bpb_definitions(logprobs: list[TokenLogprob]) -> None:
    """Perplexity is exp(mean NLL) >= 1 (inf past a float's range); bits per byte is
    NLL / ln 2 / UTF-8 bytes."""
    nll = -sum(lp.logprob for lp in logprobs)
    ppl = perplexity(logprobs)
    assert ppl >= 1.0
    if math.isfinite(ppl):
        assert math.log(ppl) == pytest.approx(nll / len(logprobs), rel=1e-9, abs=1e-12)
    else:  # exp overflowed: the mean NLL is past what a float's exp can hold
        assert nll / len(logprobs) > 709
    text = "".join(lp.token for lp in logprobs)
    if text:
        size = len(text.encode("utf-8"))
        # Divided before summing, as the function does: NLL / ln 2 alone can overflow.
        expected = -math.fsum(lp.logprob / size for lp in logprobs) / math.log(2)
        assert bits_per_byte(logprobs) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_the_largest_log_probabilities_average_exactly() -> None:
    """Three log-probabilities of -1.8e308 (the float limit): their mean NLL is 1.8e308,
    not an OverflowError from fsum (each divided by 3 and rounded up, the three add up
    past the limit), and the perplexity is inf."""
    logprobs = [TokenLogprob("", -sys.float_info.max)] * 3
    assert mean_nll(logprobs) == sys.float_info.max
    assert perplexity(logprobs) == math.inf
    assert mean_nll([-sys.float_info.max, -sys.float_info.max, 0.0]) == pytest.approx(
        sys.float_info.max / 3 * 2)


def test_huge_log_probabilities_do_not_overflow() -> None:
    """Log-probabilities near the float limit give a mean NLL and bits per byte, not an
    OverflowError from summing them (perplexity is inf, past a float's range)."""
    logprobs = [TokenLogprob("a", -1.2e308), TokenLogprob("b", -1.2e308)]
    assert mean_nll(logprobs) == pytest.approx(1.2e308)
    assert perplexity(logprobs) == math.inf
    assert bits_per_byte(logprobs) == pytest.approx(1.2e308 / math.log(2))


def test_logprob_sources() -> None:
    """Completions, TokenLogprob lists, JSON objects and plain numbers are read; bad
    items are named by position."""
    lps = (TokenLogprob("ab", math.log(0.5)), TokenLogprob("c", math.log(0.25)))
    completion = Completion(text="abc", logprobs=lps)
    assert logprobs_from(completion) == list(lps)
    assert perplexity(logprobs_from(completion)) == pytest.approx(math.sqrt(8))
    assert bits_per_byte(lps) == pytest.approx(3 / 3)  # 3 bits over 3 bytes
    json_form = [{"token": "ab", "logprob": math.log(0.5)}, {"token": "c", "logprob": -1.0}]
    assert [lp.token for lp in logprobs_from(json_form)] == ["ab", "c"]
    assert perplexity([0.0, 0.0]) == 1.0
    with pytest.raises(ValueError, match="no log-probabilities"):
        logprobs_from(Completion(text="x"))
    with pytest.raises(ValueError, match="#1 is invalid"):
        logprobs_from([-1.0, {"token": "x"}])
    with pytest.raises(ValueError, match="must be finite and <= 0"):
        perplexity([0.5])
    with pytest.raises(ValueError, match="at least one"):
        perplexity([])
    with pytest.raises(ValueError, match="needs the text"):
        bits_per_byte([-1.0])


# -- cosine and greedy matching ----------------------------------------------------------------


def test_cosine_and_greedy_matching() -> None:
    """Cosine of parallel / orthogonal vectors; greedy matching of identical token sets
    is 1, and of a subset has full precision, partial recall."""
    assert cosine([1.0, 0.0], [2.0, 0.0]) == pytest.approx(1.0)
    assert cosine([1.0, 0.0], [0.0, 3.0]) == 0.0
    assert cosine([0.0, 0.0], [1.0, 1.0]) == 0.0
    with pytest.raises(ValueError, match="lengths differ"):
        cosine([1.0], [1.0, 2.0])
    eye = np.eye(4, dtype=np.float32)
    full = greedy_match(eye, eye)
    assert (full.precision, full.recall, full.f1) == pytest.approx((1.0, 1.0, 1.0))
    part = greedy_match(eye[:2], eye)
    assert part.precision == pytest.approx(1.0)
    assert part.recall == pytest.approx(0.5)
    assert part.f1 == pytest.approx(2 / 3)
    assert greedy_match(np.zeros((0, 4), np.float32), eye).f1 == 0.0


@pytest.mark.parametrize(("a", "b", "expected"), [
    ([1e200, 0.0], [-1e200, 0.0], -1.0),
    ([1e200, 1e200], [1.0, 0.0], math.sqrt(0.5)),
    ([1e-200, 0.0], [1e-200, 0.0], 1.0),
    ([3e-320, 0.0], [0.0, 5e-324], 0.0),
])
def test_cosine_of_huge_and_tiny_vectors(a: list[float], b: list[float],
                                         expected: float) -> None:
    """Components whose squares overflow or underflow a float still give their cosine
    (opposite huge vectors were read as 1.0, parallel tiny ones as 0.0)."""
    assert cosine(a, b) == pytest.approx(expected)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_vectors_have_no_similarity(bad: float) -> None:
    """A NaN or infinite component is an error, not a made-up similarity (NaN read as 0.0,
    an infinity as a perfect 1.0)."""
    with pytest.raises(ValueError, match="finite"):
        cosine([bad, 0.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        cosine([1.0, 0.0], [0.0, bad])
    vectors = np.eye(2)
    broken = vectors.copy()
    broken[1, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        greedy_match(broken, vectors)
    with pytest.raises(ValueError, match="NaN or infinite"):
        greedy_match(vectors, broken)
