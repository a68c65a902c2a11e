"""BLEU, sacrebleu-compatible: the 13a tokenizer, corpus and sentence BLEU, its smoothings.

The scores equal sacrebleu 2.x's (``BLEU().corpus_score`` and ``BLEU(effective_order=True)
.sentence_score``, i.e. ``sacrebleu.corpus_bleu`` / ``sacrebleu.sentence_bleu``) to the
last bit; the property tests compare them on random text. What makes this faster: the
13a rules are local to whitespace-separated words, so words of letters and digits skip
them, and in the others the first rule (a per-character substitution) is a
``str.translate`` and the other three run only when the word holds a character they can
match; n-grams are counted
per order with ``zip``, and a reference's n-grams are counted once per segment.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Sequence
from itertools import pairwise
from typing import Literal

import attrs

__all__ = [
    "SMOOTH_METHODS",
    "BleuScore",
    "bleu_from_statistics",
    "corpus_bleu",
    "ngram_counts",
    "sentence_bleu",
    "sentence_bleu_score",
    "tokenize_13a",
]

SmoothMethod = Literal["exp", "floor", "add-k", "none"]
Tokenize = Literal["13a", "none"]
#: Smoothing methods and their default values (sacrebleu's ``BLEU.SMOOTH_DEFAULTS``).
SMOOTH_METHODS: dict[str, float | None] = {"none": None, "floor": 0.1, "add-k": 1, "exp": None}
#: The log sacrebleu uses for a zero precision (``utils.my_log``).
_LOG_ZERO = -9999999999

# sacrebleu's TokenizerRegexp rule 1 pads each of these characters with spaces (and the
# space itself, which changes no token: it is left out).
_PADDED = "".join(chr(c) for lo, hi in (("{", "~"), ("[", "`"), ("!", "&"), ("(", "+"),
                                         (":", "@"), ("/", "/"))
                  for c in range(ord(lo), ord(hi) + 1))
_PAD_TABLE = str.maketrans({c: f" {c} " for c in _PADDED})
_PERIOD_COMMA_AFTER = re.compile(r"([^0-9])([\.,])")
_PERIOD_COMMA_BEFORE = re.compile(r"([\.,])([^0-9])")
_DASH_AFTER_DIGIT = re.compile(r"([0-9])(-)")


def tokenize_13a(line: str) -> list[str]:
    """The tokens of ``line`` under mteval-v13a's rules, as sacrebleu's ``13a`` tokenizer
    makes them (joined with single spaces, they are its output).

    The rules are local to whitespace-separated words (each rule's match holds at most
    one whitespace character, on its edge, which no other match needs), so each word is
    tokenized on its own, and a word of letters and digits only, which no rule touches,
    is kept as it is without running any rule.

    :param line: one segment.
    :returns: its tokens.
    """
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = (line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                .replace("&gt;", ">"))
    tokens: list[str] = []
    for word in line.split():
        if word.isalnum():
            tokens.append(word)
        elif word[-1] in ".," and word[:-1].isalnum():
            # "word." / "3,": whatever the last letter, rule 2 or 3 splits the mark off.
            tokens += [word[:-1], word[-1]]
        else:
            tokens += _tokenize_word(word)
    return tokens


def _tokenize_word(word: str) -> list[str]:
    word = f" {word} ".translate(_PAD_TABLE)
    if "." in word or "," in word:
        word = _PERIOD_COMMA_AFTER.sub(r"\1 \2 ", word)
        word = _PERIOD_COMMA_BEFORE.sub(r" \1 \2", word)
    if "-" in word:
        word = _DASH_AFTER_DIGIT.sub(r"\1 \2 ", word)
    return word.split()


def _tokens(text: str, tokenize: Tokenize, lowercase: bool) -> list[str]:
    if lowercase:
        text = text.lower()
    text = text.rstrip()
    if tokenize == "13a":
        return tokenize_13a(text)
    if tokenize == "none":
        return text.split()
    raise ValueError(f"unknown BLEU tokenizer {tokenize!r}: choose '13a' or 'none'")


def ngram_counts(tokens: Sequence[str], max_order: int = 4) -> list[Counter[Hashable]]:
    """The n-gram counts of ``tokens`` for n = 1..``max_order``, one Counter per order
    (unigrams keyed by the token, longer n-grams by the tuple of tokens).

    :param tokens: the tokens.
    :param max_order: the longest n-gram.
    """
    counts: list[Counter[Hashable]] = [Counter(tokens)]
    # Orders 2-4 spelled out (pairwise, zip over slices): no generator in between.
    if max_order >= 2:
        counts.append(Counter(pairwise(tokens)))
    if max_order >= 3:
        counts.append(Counter(zip(tokens, tokens[1:], tokens[2:])))
    if max_order >= 4:
        counts.append(Counter(zip(tokens, tokens[1:], tokens[2:], tokens[3:])))
    for n in range(5, max_order + 1):
        counts.append(Counter(zip(*(tokens[i:] for i in range(n)))))
    return counts


@attrs.frozen
class BleuScore:
    """A BLEU score with its sufficient statistics (sacrebleu's ``BLEUScore`` fields).

    :param score: BLEU on sacrebleu's 0-100 scale.
    :param counts: matched n-grams per order.
    :param totals: hypothesis n-grams per order.
    :param precisions: the (smoothed) n-gram precisions, 0-100.
    :param bp: the brevity penalty.
    :param sys_len: hypothesis tokens.
    :param ref_len: reference tokens (the closest reference's length, per segment).
    """

    score: float
    counts: tuple[float, ...]
    totals: tuple[float, ...]
    precisions: tuple[float, ...]
    bp: float
    sys_len: int
    ref_len: int


def bleu_from_statistics(correct: Sequence[float], total: Sequence[float], sys_len: int,
                         ref_len: int, *, smooth_method: SmoothMethod = "exp",
                         smooth_value: float | None = None, effective_order: bool = False,
                         max_ngram_order: int = 4) -> BleuScore:
    """BLEU from its sufficient statistics, exactly as sacrebleu's ``BLEU.compute_bleu``.

    Smoothing (Chen & Cherry 2014): ``none``; ``floor`` (method 1, a zero match count
    becomes ``smooth_value``, default 0.1); ``add-k`` (method 2, ``smooth_value`` added to
    the counts of orders 2+, default 1); ``exp`` (method 3, mteval-v13a's: the k-th zero
    precision becomes 1 / (2^k * total)).

    :param effective_order: average only over the n-gram orders the hypothesis has
        n-grams of (sentence BLEU's default).
    """
    score, correct, total, precisions, bp = _compute(
        correct, total, sys_len, ref_len, smooth_method, smooth_value, effective_order,
        max_ngram_order)
    return BleuScore(score, tuple(correct), tuple(total), tuple(precisions), bp, sys_len,
                     ref_len)


def _compute(correct_in: Sequence[float], total_in: Sequence[float], sys_len: int,
             ref_len: int, smooth_method: str, smooth_value: float | None,
             effective_order: bool, max_ngram_order: int,
             ) -> tuple[float, list[float], list[float], list[float], float]:
    if smooth_method not in SMOOTH_METHODS:
        raise ValueError(f"unknown smooth_method {smooth_method!r}: choose one of "
                         f"{sorted(SMOOTH_METHODS)}")
    if smooth_value is None:
        smooth_value = SMOOTH_METHODS[smooth_method]
    correct = list(correct_in)
    total = list(total_in)
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    precisions = [0.0] * max_ngram_order
    if not any(correct):
        return 0.0, correct, total, precisions, bp
    smooth_mteval = 1.0
    eff_order = max_ngram_order
    for n in range(1, max_ngram_order + 1):
        if smooth_method == "add-k" and n > 1:
            assert smooth_value is not None
            correct[n - 1] += smooth_value
            total[n - 1] += smooth_value
        if total[n - 1] == 0:
            break
        if effective_order:
            eff_order = n
        if correct[n - 1] == 0:
            if smooth_method == "exp":
                smooth_mteval *= 2
                precisions[n - 1] = 100.0 / (smooth_mteval * total[n - 1])
            elif smooth_method == "floor":
                assert smooth_value is not None
                precisions[n - 1] = 100.0 * smooth_value / total[n - 1]
        else:
            precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1]
    score = bp * math.exp(
        sum([math.log(p) if p != 0.0 else _LOG_ZERO for p in precisions[:eff_order]])
        / eff_order)
    return score, correct, total, precisions, bp


def _references(references: str | Sequence[str]) -> list[str]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("BLEU needs at least one reference per hypothesis")
    for ref in refs:
        if not isinstance(ref, str):
            raise TypeError(f"a reference must be str, got {type(ref).__name__}")
    return refs


def _segment_statistics(hypothesis: str, references: str | Sequence[str], order: int,
                        tokenize: Tokenize, lowercase: bool) -> list[int]:
    if not isinstance(hypothesis, str):
        raise TypeError(f"a hypothesis must be str, got {type(hypothesis).__name__}")
    hyp_tokens = _tokens(hypothesis, tokenize, lowercase)
    hyp_len = len(hyp_tokens)
    ref_counts: list[Counter[Hashable]] | None = None
    closest_diff, closest_len = -1, -1
    for ref in _references(references):
        ref_tokens = _tokens(ref, tokenize, lowercase)
        ref_len = len(ref_tokens)
        diff = abs(hyp_len - ref_len)
        if closest_diff == -1 or diff < closest_diff:
            closest_diff, closest_len = diff, ref_len
        elif diff == closest_diff and ref_len < closest_len:
            closest_len = ref_len
        counts = ngram_counts(ref_tokens, order)
        if ref_counts is None:
            ref_counts = counts
        else:
            for merged, more in zip(ref_counts, counts):
                for gram, count in more.items():
                    merged[gram] = max(merged[gram], count)
    assert ref_counts is not None
    correct = [0] * order
    total = [0] * order
    for n, (hyp, ref_n) in enumerate(zip(ngram_counts(hyp_tokens, order), ref_counts)):
        total[n] = max(hyp_len - n, 0)
        matched = 0
        for gram, count in hyp.items():
            if gram in ref_n:
                other = ref_n[gram]
                # a conditional, not min() / max(): no call in the hot loop
                matched += count if count < other else other  # noqa: FURB136
        correct[n] = matched
    return [hyp_len, closest_len, *correct, *total]


def sentence_bleu(hypothesis: str, references: str | Sequence[str], *,
                  smooth_method: SmoothMethod = "exp", smooth_value: float | None = None,
                  lowercase: bool = False, tokenize: Tokenize = "13a",
                  effective_order: bool = True, max_ngram_order: int = 4) -> float:
    """Sentence BLEU (0-100) of one hypothesis against one or several references, equal to
    ``sacrebleu.sentence_bleu`` (exp smoothing and effective order by default).

    Several references are used together, as BLEU defines it: each n-gram's count is
    clipped by its largest count in any reference, and the brevity penalty uses the
    reference closest in length.
    """
    stats = _segment_statistics(hypothesis, references, max_ngram_order, tokenize, lowercase)
    return _compute(stats[2:2 + max_ngram_order], stats[2 + max_ngram_order:], stats[0],
                    stats[1], smooth_method, smooth_value, effective_order,
                    max_ngram_order)[0]


def sentence_bleu_score(hypothesis: str, references: str | Sequence[str], *,
                        smooth_method: SmoothMethod = "exp",
                        smooth_value: float | None = None, lowercase: bool = False,
                        tokenize: Tokenize = "13a", effective_order: bool = True,
                        max_ngram_order: int = 4) -> BleuScore:
    """:func:`sentence_bleu` with its statistics."""
    stats = _segment_statistics(hypothesis, references, max_ngram_order, tokenize, lowercase)
    return bleu_from_statistics(stats[2:2 + max_ngram_order], stats[2 + max_ngram_order:],
                                stats[0], stats[1], smooth_method=smooth_method,
                                smooth_value=smooth_value, effective_order=effective_order,
                                max_ngram_order=max_ngram_order)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]], *,
                smooth_method: SmoothMethod = "exp", smooth_value: float | None = None,
                lowercase: bool = False, tokenize: Tokenize = "13a",
                effective_order: bool = False, max_ngram_order: int = 4) -> BleuScore:
    """Corpus BLEU, equal to ``sacrebleu.corpus_bleu`` (exp smoothing, no effective order).

    Note the layout: ``references[i]`` holds the reference(s) of ``hypotheses[i]`` (a
    string or a list), whereas sacrebleu takes reference *streams* (``refs[j][i]``).

    :raises ValueError: when the two lists differ in length or a segment has no reference.
    """
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("corpus_bleu takes a list of hypotheses and a list of references")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("corpus_bleu needs at least one hypothesis")
    sums = [0] * (2 + 2 * max_ngram_order)
    for hyp, refs in zip(hypotheses, references):
        for i, value in enumerate(_segment_statistics(hyp, refs, max_ngram_order, tokenize,
                                                      lowercase)):
            sums[i] += value
    return bleu_from_statistics(sums[2:2 + max_ngram_order], sums[2 + max_ngram_order:],
                                sums[0], sums[1], smooth_method=smooth_method,
                                smooth_value=smooth_value, effective_order=effective_order,
                                max_ngram_order=max_ngram_order)
