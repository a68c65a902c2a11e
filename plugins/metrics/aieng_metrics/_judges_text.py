"""Judge components of the lexical metrics: exact match, token F1, BLEU, chrF, ROUGE, and of
perplexity and retrieval metrics read from a sample's metadata.

Each implements ``aieng_judge(sample)``: ``None`` when the metric does not apply (no
reference, no log-probabilities, no ranking), else its scores. BLEU, chrF and ROUGE are
``@blocking`` (they run in a worker thread: on long texts they are real CPU work; ROUGE-Lsum
is quadratic in sentence length); the others are cheap and run inline. Several references: the
best score counts (exact match, token F1, ROUGE per variant), except BLEU, whose own
definition uses all references at once (clipped counts, closest length), and chrF, which
takes the reference of best F as sacrebleu does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import attrs
from aieng_hookspecs import blocking, hookimpl
from aieng_hookspecs.types import Sample, Score
from attrs import validators as v

from ._bleu import sentence_bleu
from ._chrf import sentence_chrf
from ._logprobs import bits_per_byte, logprobs_from, mean_nll, perplexity
from ._retrieval import average_precision, mrr, ndcg, recall
from ._rouge import _check_types, rouge
from ._text import Normalization, exact_match, normalize_answer, token_f1

__all__ = [
    "BleuJudge",
    "BleuOptions",
    "ChrfJudge",
    "ChrfOptions",
    "ExactMatchJudge",
    "NormalizationOptions",
    "PerplexityJudge",
    "RetrievalJudge",
    "RetrievalOptions",
    "RougeJudge",
    "RougeOptions",
    "TokenF1Judge",
    "references_of",
]

_bool = v.instance_of(bool)


def references_of(sample: Sample) -> list[str] | None:
    """The sample's references as a list, or ``None`` when it has none."""
    if sample.reference is None:
        return None
    refs = [sample.reference] if isinstance(sample.reference, str) else list(sample.reference)
    return refs or None


@attrs.frozen
class NormalizationOptions:
    """Options of ``exact-match`` and ``token-f1``: how answers are normalized (SQuAD's
    normalization by default; see :class:`~aieng_metrics.Normalization`)."""

    lowercase: bool = attrs.field(default=True, validator=_bool)
    strip_punctuation: bool = attrs.field(default=True, validator=_bool)
    drop_articles: bool = attrs.field(default=True, validator=_bool)
    collapse_whitespace: bool = attrs.field(default=True, validator=_bool)
    nfkc: bool = attrs.field(default=False, validator=_bool)

    def normalization(self) -> Normalization:
        """These options as a :class:`Normalization`."""
        return Normalization(**attrs.asdict(self))


def _gold_answers(refs: list[str], normalization: Normalization) -> list[str]:
    # SQuAD v2's get_raw_scores: a reference that normalizes to nothing ("The", "...") is
    # dropped, unless all do; else an empty output would match it among real answers.
    return [ref for ref in refs if normalize_answer(ref, normalization)] or refs[:1]


class ExactMatchJudge:
    """``exact_match``: 1.0 when the normalized output equals a normalized reference (those
    normalizing to nothing left out unless all do, as SQuAD v2's evaluation)."""

    def __init__(self, options: NormalizationOptions | None = None) -> None:
        self.normalization = (options or NormalizationOptions()).normalization()

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score] | None:
        """Score 1.0 or 0.0; ``None`` without a reference."""
        refs = references_of(sample)
        if refs is None:
            return None
        refs = _gold_answers(refs, self.normalization)
        value = max(exact_match(sample.output, ref, self.normalization) for ref in refs)
        return [Score(name="exact_match", value=value)]


class TokenF1Judge:
    """``token_f1``: SQuAD's token-level F1 against the best reference, in [0, 1] (those
    normalizing to nothing left out unless all do, as SQuAD v2's evaluation)."""

    def __init__(self, options: NormalizationOptions | None = None) -> None:
        self.normalization = (options or NormalizationOptions()).normalization()

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score] | None:
        """Score in [0, 1]; ``None`` without a reference."""
        refs = references_of(sample)
        if refs is None:
            return None
        refs = _gold_answers(refs, self.normalization)
        value = max(token_f1(sample.output, ref, self.normalization) for ref in refs)
        return [Score(name="token_f1", value=value)]


@attrs.frozen
class BleuOptions:
    """Options of ``bleu`` (sentence BLEU, sacrebleu's ``sentence_bleu`` defaults).

    :param smooth_method: ``exp`` (default), ``floor``, ``add-k`` or ``none``.
    :param smooth_value: the value of ``floor`` (0.1) or ``add-k`` (1) when not default.
    :param lowercase: case-insensitive BLEU.
    :param tokenize: ``13a`` (default) or ``none`` (whitespace only).
    :param effective_order: average only over the n-gram orders the output has.
    """

    smooth_method: Literal["exp", "floor", "add-k", "none"] = attrs.field(
        default="exp", validator=v.in_(("exp", "floor", "add-k", "none")))
    smooth_value: float | None = attrs.field(
        default=None, validator=v.optional(v.instance_of((int, float))))
    lowercase: bool = attrs.field(default=False, validator=_bool)
    tokenize: Literal["13a", "none"] = attrs.field(default="13a",
                                                   validator=v.in_(("13a", "none")))
    effective_order: bool = attrs.field(default=True, validator=_bool)


class BleuJudge:
    """``bleu``: sentence BLEU on sacrebleu's 0-100 scale, all references together."""

    def __init__(self, options: BleuOptions | None = None) -> None:
        self.options = options or BleuOptions()

    @hookimpl
    @blocking
    def aieng_judge(self, sample: Sample) -> list[Score] | None:
        """Score in [0, 100]; ``None`` without a reference."""
        refs = references_of(sample)
        if refs is None:
            return None
        o = self.options
        value = sentence_bleu(sample.output, refs, smooth_method=o.smooth_method,
                              smooth_value=o.smooth_value, lowercase=o.lowercase,
                              tokenize=o.tokenize, effective_order=o.effective_order)
        # sacrebleu's exp of a float sum gives a perfect answer 100.00000000000004: the
        # function keeps sacrebleu's value to the last bit, the score keeps to its scale.
        return [Score(name="bleu", value=min(value, 100.0))]


@attrs.frozen
class ChrfOptions:
    """Options of ``chrf`` (sacrebleu's ``CHRF`` defaults; ``word_order = 2`` is chrF++).

    :param char_order: the longest character n-gram.
    :param word_order: the longest word n-gram.
    :param beta: recall's weight relative to precision.
    :param lowercase: case-insensitive.
    :param whitespace: keep whitespace in character n-grams.
    """

    char_order: int = attrs.field(default=6, validator=[v.instance_of(int), v.ge(1)])
    word_order: int = attrs.field(default=0, validator=[v.instance_of(int), v.ge(0)])
    beta: int = attrs.field(default=2, validator=[v.instance_of(int), v.ge(0)])
    lowercase: bool = attrs.field(default=False, validator=_bool)
    whitespace: bool = attrs.field(default=False, validator=_bool)


class ChrfJudge:
    """``chrf`` (or ``chrf++`` with word n-grams): sentence chrF on the 0-100 scale."""

    def __init__(self, options: ChrfOptions | None = None) -> None:
        self.options = options or ChrfOptions()

    @hookimpl
    @blocking
    def aieng_judge(self, sample: Sample) -> list[Score] | None:
        """Score in [0, 100]; ``None`` without a reference."""
        refs = references_of(sample)
        if refs is None:
            return None
        o = self.options
        value = sentence_chrf(sample.output, refs, char_order=o.char_order,
                              word_order=o.word_order, beta=o.beta, lowercase=o.lowercase,
                              whitespace=o.whitespace)
        return [Score(name="chrf" if o.word_order == 0 else "chrf++", value=value)]


def _rouge_types(value: tuple[str, ...]) -> tuple[str, ...]:
    value = tuple(value)
    if not value:
        raise ValueError("types must name at least one ROUGE variant")
    _check_types(value)
    return value


@attrs.frozen
class RougeOptions:
    """Options of ``rouge``.

    :param types: the variants, from ``rouge1`` .. ``rouge9``, ``rougeL``, ``rougeLsum``.
    :param use_stemmer: Porter-stem tokens longer than three characters (needs nltk).
    :param report: ``f`` (one score per variant, its F1) or ``prf`` (also
        ``<variant>_precision`` and ``<variant>_recall``).
    """

    types: tuple[str, ...] = attrs.field(default=("rouge1", "rouge2", "rougeL"),
                                         converter=_rouge_types)
    use_stemmer: bool = attrs.field(default=False, validator=_bool)
    report: Literal["f", "prf"] = attrs.field(default="f", validator=v.in_(("f", "prf")))


class RougeJudge:
    """``rouge``: ROUGE F1 (and optionally precision, recall) per variant, in [0, 1],
    against the reference with the best F1 per variant."""

    def __init__(self, options: RougeOptions | None = None) -> None:
        self.options = options or RougeOptions()

    @hookimpl
    @blocking
    def aieng_judge(self, sample: Sample) -> list[Score] | None:
        """One score per variant (three with ``report = "prf"``); ``None`` without a
        reference."""
        refs = references_of(sample)
        if refs is None:
            return None
        scores = rouge(sample.output, refs, self.options.types,
                       use_stemmer=self.options.use_stemmer)
        out = []
        for kind, score in scores.items():
            out.append(Score(name=kind, value=score.fmeasure))
            if self.options.report == "prf":
                out.append(Score(name=f"{kind}_precision", value=score.precision))
                out.append(Score(name=f"{kind}_recall", value=score.recall))
        return out


class PerplexityJudge:
    """``perplexity``: perplexity and bits per byte of the output from the backend's
    log-probabilities in ``sample.metadata["logprobs"]`` (a list of ``{"token",
    "logprob"}`` objects or of numbers)."""

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score] | None:
        """``mean_nll`` (nats per token), ``perplexity`` (>= 1; left out when it
        overflows a float) and, when the covered text is known, ``bits_per_byte`` (>= 0;
        left out when it overflows a float); ``None`` without log-probabilities.

        :raises ValueError: when ``metadata["logprobs"]`` is malformed.
        """
        raw = sample.metadata.get("logprobs")
        if raw is None:
            return None
        logprobs = logprobs_from(raw)
        if not logprobs:
            return None
        scores = [Score(name="mean_nll", value=mean_nll(logprobs))]
        value = perplexity(logprobs)
        if math.isfinite(value):  # past ~709 nats per token it overflows a float
            scores.append(Score(name="perplexity", value=value))
        text = "".join(lp.token for lp in logprobs) or sample.output
        bpb = bits_per_byte(logprobs, text) if text else math.inf
        if math.isfinite(bpb):  # left out without text, or past a float's range
            scores.append(Score(name="bits_per_byte", value=bpb))
        return scores


@attrs.frozen
class RetrievalOptions:
    """Options of ``retrieval``.

    :param k: the cut-off of nDCG, MRR and recall (average precision uses the whole
        ranking).
    """

    k: int = attrs.field(default=10, validator=[v.instance_of(int), v.ge(1)])


def _ranking(metadata: Mapping[str, Any]) -> tuple[list[str], dict[str, int]] | None:
    ranked, qrels = metadata.get("ranked"), metadata.get("qrels")
    if ranked is None or qrels is None:
        return None
    if isinstance(ranked, (str, bytes)) or not isinstance(ranked, (list, tuple)) \
            or not all(isinstance(d, str) for d in ranked):
        raise ValueError('metadata["ranked"] must be a list (or tuple) of document ids')
    if not isinstance(qrels, Mapping) or not all(
            isinstance(g, int) and not isinstance(g, bool) for g in qrels.values()):
        raise ValueError('metadata["qrels"] must map document ids to integer grades')
    return list(ranked), dict(qrels)


class RetrievalJudge:
    """``retrieval``: nDCG@k, MRR@k, Recall@k and average precision of the ranking in
    ``sample.metadata["ranked"]`` (document ids, best first) against
    ``sample.metadata["qrels"]`` (id -> graded relevance)."""

    def __init__(self, options: RetrievalOptions | None = None) -> None:
        self.options = options or RetrievalOptions()

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score] | None:
        """Four scores in [0, 1]; ``None`` without ``ranked`` and ``qrels``.

        :raises ValueError: when they are malformed.
        """
        found = _ranking(sample.metadata)
        if found is None:
            return None
        ranked, qrels = found
        k = self.options.k
        return [Score(name=f"ndcg@{k}", value=ndcg(ranked, qrels, k)),
                Score(name=f"mrr@{k}", value=mrr(ranked, qrels, k)),
                Score(name=f"recall@{k}", value=recall(ranked, qrels, k)),
                Score(name="average_precision", value=average_precision(ranked, qrels))]
