"""BLEU and chrF equal sacrebleu's scores (its 13a tokenizer, smoothings, corpus and
sentence level, chrF and chrF++) on random text, and reject bad input clearly."""

from __future__ import annotations

import math
from typing import Any

import aieng_metrics._chrf as _chrf_module
import pytest
from aieng_metrics import (
    corpus_bleu,
    corpus_chrf,
    sentence_bleu,
    sentence_bleu_score,
    sentence_chrf,
    tokenize_13a,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from metrics_strategies import reference_lists, texts

sacrebleu = pytest.importorskip("sacrebleu")
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

SETTINGS = settings(max_examples=150, deadline=None)
_SACRE_13A = Tokenizer13a()


def same(ours: float, theirs: float) -> bool:
    """Equal to 1e-9 (in practice the scores are bit-identical)."""
    return math.isclose(ours, theirs, rel_tol=0.0, abs_tol=1e-9)


@SETTINGS
@given(texts())
def test_13a_tokenizer_equals_sacrebleu(line: str) -> None:
    """Our 13a tokens, joined by spaces, are sacrebleu's 13a output."""
    assert " ".join(tokenize_13a(line)) == _SACRE_13A(line)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="09a.,-()&;' \n\t\u00a0<>skiped", max_size=30))
def test_13a_tokenizer_equals_sacrebleu_on_dense_punctuation(line: str) -> None:
    """Digits, periods, commas, dashes and brackets packed together, entity and
    ``<skipped>`` fragments, odd whitespace: the tokens still equal sacrebleu's."""
    assert " ".join(tokenize_13a(line)) == _SACRE_13A(line)


@SETTINGS
@given(texts(), reference_lists())
def test_sentence_bleu_equals_sacrebleu(hypothesis: str, references: list[str]) -> None:
    """sentence_bleu == sacrebleu.sentence_bleu (exp smoothing, effective order), with one
    or several references."""
    ours = sentence_bleu(hypothesis, references)
    theirs = sacrebleu.sentence_bleu(hypothesis, references).score
    assert same(ours, theirs), (ours, theirs)


@SETTINGS
@given(texts(), reference_lists(), st.sampled_from(["exp", "floor", "add-k", "none"]),
       st.booleans(), st.booleans(), st.sampled_from(["13a", "none"]))
def test_bleu_options_equal_sacrebleu(hypothesis: str, references: list[str], smooth: str,
                                      effective: bool, lowercase: bool,
                                      tokenize: str) -> None:
    """Every smoothing, effective order on and off, lower-casing and both tokenizers agree
    with sacrebleu's BLEU class, statistics included."""
    options: dict[str, Any] = {"smooth_method": smooth, "tokenize": tokenize}
    ours = sentence_bleu_score(hypothesis, references, effective_order=effective,
                               lowercase=lowercase, **options)
    metric = BLEU(smooth_method=smooth, effective_order=effective, lowercase=lowercase,
                  tokenize=tokenize)
    theirs = metric.sentence_score(hypothesis, references)
    assert same(ours.score, theirs.score), (ours, theirs.score)
    assert (ours.sys_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
    assert list(ours.counts) == list(theirs.counts)
    assert list(ours.totals) == list(theirs.totals)
    assert same(ours.bp, theirs.bp)


@SETTINGS
@given(st.lists(st.tuples(texts(), reference_lists(2, 2)), min_size=1, max_size=6))
def test_corpus_bleu_equals_sacrebleu(pairs: list[tuple[str, list[str]]]) -> None:
    """corpus_bleu (references per segment) == sacrebleu.corpus_bleu (reference streams)."""
    hypotheses = [h for h, _ in pairs]
    references = [refs for _, refs in pairs]
    streams = [list(stream) for stream in zip(*references)]
    ours = corpus_bleu(hypotheses, references).score
    theirs = sacrebleu.corpus_bleu(hypotheses, streams).score
    assert same(ours, theirs), (ours, theirs)


@SETTINGS
@given(texts(), reference_lists(), st.sampled_from([0, 2]), st.booleans(), st.booleans())
def test_sentence_chrf_equals_sacrebleu(hypothesis: str, references: list[str],
                                        word_order: int, lowercase: bool,
                                        whitespace: bool) -> None:
    """chrF and chrF++ (word_order 2), with and without lower-casing and whitespace, equal
    sacrebleu's CHRF."""
    ours = sentence_chrf(hypothesis, references, word_order=word_order, lowercase=lowercase,
                         whitespace=whitespace)
    theirs = CHRF(word_order=word_order, lowercase=lowercase,
                  whitespace=whitespace).sentence_score(hypothesis, references).score
    assert same(ours, theirs), (ours, theirs)


@SETTINGS
@given(texts(max_pieces=40), reference_lists(), st.sampled_from([0, 2]), st.booleans(),
       st.sampled_from([0, 10 ** 9]))
def test_both_chrf_counting_paths_equal_sacrebleu(hypothesis: str, references: list[str],
                                                  word_order: int, whitespace: bool,
                                                  threshold: int) -> None:
    """The numpy n-gram counting (forced for every length) and the Counter one (forced
    for every length) both give sacrebleu's chrF."""
    saved = _chrf_module._NUMPY_MIN_CHARS
    _chrf_module._NUMPY_MIN_CHARS = threshold
    try:
        ours = sentence_chrf(hypothesis, references, word_order=word_order,
                             whitespace=whitespace)
    finally:
        _chrf_module._NUMPY_MIN_CHARS = saved
    theirs = CHRF(word_order=word_order, whitespace=whitespace).sentence_score(
        hypothesis, references).score
    assert same(ours, theirs), (ours, theirs)


@SETTINGS
@given(st.lists(st.tuples(texts(), texts()), min_size=1, max_size=6), st.booleans())
def test_corpus_chrf_equals_sacrebleu(pairs: list[tuple[str, str]], eps: bool) -> None:
    """Corpus chrF (and its epsilon smoothing) equals sacrebleu's corpus score."""
    hypotheses = [h for h, _ in pairs]
    references = [r for _, r in pairs]
    ours = corpus_chrf(hypotheses, references, eps_smoothing=eps)
    theirs = CHRF(eps_smoothing=eps).corpus_score(hypotheses, [references]).score
    assert same(ours, theirs), (ours, theirs)


def test_chrf_with_many_distinct_characters() -> None:
    """Past 1,023 distinct characters the numpy keys would not fit 60 bits: the Counter
    path takes over, still equal to sacrebleu."""
    hypothesis = "".join(chr(0x4E00 + i) for i in range(1100))
    reference = hypothesis[::2] + "".join(chr(0x4E00 + i) for i in range(0, 1100, 7))
    assert _chrf_module._char_statistics_numpy(hypothesis, reference, 6) is None
    theirs = CHRF().sentence_score(hypothesis, [reference]).score
    assert same(sentence_chrf(hypothesis, reference), theirs)


def test_bleu_worked_examples() -> None:
    """Identical text scores 100; no shared word scores 0; a reference list beats its
    worst member."""
    assert sentence_bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(100)
    assert sentence_bleu("a b c d", "w x y z") == 0.0
    one = sentence_bleu("the cat sat on a mat", "a dog lay on the rug")
    both = sentence_bleu("the cat sat on a mat", ["a dog lay on the rug", "the cat sat"])
    assert both > one
    assert sentence_chrf("hello world", "hello world") == pytest.approx(100)


def test_bad_input_is_named() -> None:
    """Mismatched lengths, no reference, a string for a list and unknown options fail
    with a message saying what is wrong."""
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one reference"):
        sentence_bleu("a", [])
    with pytest.raises(TypeError, match="list of hypotheses"):
        corpus_bleu("a b", ["a b"])
    with pytest.raises(ValueError, match="smooth_method"):
        sentence_bleu("a", "a", smooth_method="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tokenizer"):
        sentence_bleu("a", "a", tokenize="intl")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reference must be str"):
        sentence_chrf("a", ["a", 3])  # type: ignore[list-item]
