"""Choosing a semantic cache's threshold from labelled pairs of prompts.

A *hit* at threshold ``t`` is a pair whose cosine is at least ``t``. On paraphrase pairs a
hit is right (the hit rate is the share of paraphrase pairs that hit); on non-paraphrase
pairs it is a *false hit* (the false-hit rate is the share of non-paraphrase pairs that
hit: a user served someone else's answer). :func:`calibrate` picks the threshold on a
training split and reports both rates on the held-out split. A rate of no pairs (the hit
rate of a set without paraphrase pairs, the false-hit rate of one without non-paraphrase
pairs) is NaN, not 0.
"""

from __future__ import annotations

import inspect
import json
import math
import random
from collections.abc import Callable, Iterable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import attrs
from attrs import validators as v

__all__ = ["Calibration", "Pair", "Rates", "calibrate", "load_pairs", "measure", "score_pairs"]


@attrs.frozen
class Pair:
    """Two prompts and whether they ask the same thing (one answer fits both)."""

    text_a: str = attrs.field(validator=v.instance_of(str))
    text_b: str = attrs.field(validator=v.instance_of(str))
    is_paraphrase: bool = attrs.field(validator=v.instance_of(bool))
    #: a free label (``hard-negative``, ``paraphrase``, ``unrelated``)
    kind: str = attrs.field(default="", validator=v.instance_of(str))


@attrs.frozen
class Rates:
    """How a threshold does on a set of scored pairs (a rate of no pairs is NaN)."""

    threshold: float
    #: paraphrase pairs at or over the threshold / paraphrase pairs (NaN without any)
    hit_rate: float
    #: non-paraphrase pairs at or over the threshold / those pairs (NaN without any)
    false_hit_rate: float
    precision: float  #: right hits / all hits (1.0 when nothing hits)
    f_beta: float  #: of precision and hit rate (NaN without paraphrase pairs)
    positives: int
    negatives: int


@attrs.frozen
class Calibration:
    """The chosen threshold, how it did on the pairs it was chosen on (``train``) and on
    pairs it never saw (``heldout``)."""

    threshold: float
    objective: str
    train: Rates
    heldout: Rates


def load_pairs(path: str | Path | None = None) -> list[Pair]:
    """Labelled pairs from a JSON-lines file of ``{"a", "b", "paraphrase", "kind"}``;
    without a path, the set shipped with this package (``data/paraphrases.jsonl``).

    :raises ValueError: naming the line of a malformed record.
    """
    if path is None:
        text = files("aieng_cache").joinpath("data/paraphrases.jsonl").read_text("utf-8")
        source = "aieng_cache/data/paraphrases.jsonl"
    else:
        text = Path(path).read_text("utf-8")
        source = str(path)
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            pairs.append(Pair(record["a"], record["b"], record["paraphrase"],
                              record.get("kind", "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{source}:{number}: not a labelled pair "
                             f'{{"a", "b", "paraphrase"}}: {exc}') from None
    return pairs


async def score_pairs(pairs: Sequence[Pair],
                      embed: Callable[[Sequence[str]], Any]) -> list[float]:
    """The cosine of each pair's texts, embedding every distinct text once.

    :param embed: ``texts -> vectors``, plain or ``async``.
    """
    import numpy as np

    texts = sorted({t for p in pairs for t in (p.text_a, p.text_b)})
    vectors = embed(texts)
    if inspect.isawaitable(vectors):
        vectors = await vectors
    matrix = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = matrix / np.where(norms == 0, 1.0, norms)
    row = {text: index for index, text in enumerate(texts)}
    return [float(matrix[row[p.text_a]] @ matrix[row[p.text_b]]) for p in pairs]


def measure(scores: Sequence[float], labels: Sequence[bool], threshold: float, *,
            beta: float = 1.0) -> Rates:
    """The rates of ``threshold`` on scored, labelled pairs.

    A class without pairs has no rate: the hit rate (and F-beta) of pairs without a
    paraphrase, the false-hit rate of pairs without a non-paraphrase, are NaN.
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    tp = sum(1 for s, y in zip(scores, labels) if y and s >= threshold)
    fp = sum(1 for s, y in zip(scores, labels) if not y and s >= threshold)
    positives = sum(1 for y in labels if y)
    negatives = len(labels) - positives
    hit_rate = tp / positives if positives else math.nan
    precision = tp / (tp + fp) if tp + fp else 1.0
    b2 = beta * beta
    f_beta = ((1 + b2) * precision * hit_rate / (b2 * precision + hit_rate)
              if precision + hit_rate else 0.0)
    return Rates(threshold=threshold, hit_rate=hit_rate,
                 false_hit_rate=fp / negatives if negatives else math.nan,
                 precision=precision,
                 f_beta=f_beta, positives=positives, negatives=negatives)


def _split(count: int, labels: Sequence[bool], heldout: float,
           seed: int) -> tuple[list[int], list[int]]:
    """Indices of a training and a held-out split, stratified by label."""
    rng = random.Random(seed)
    train: list[int] = []
    test: list[int] = []
    for label in (True, False):
        group = [i for i in range(count) if labels[i] is label]
        rng.shuffle(group)
        cut = round(len(group) * heldout)
        test.extend(group[:cut])
        train.extend(group[cut:])
    return sorted(train), sorted(test)


def calibrate(pairs: Sequence[Pair], scores: Iterable[float], *,
              target_false_hit_rate: float = 0.02, beta: float | None = None,
              heldout: float = 0.3, seed: int = 0) -> Calibration:
    """Choose a semantic cache's threshold from labelled, scored pairs.

    The pairs are split (stratified by label, ``heldout`` of them held out, by ``seed``).
    On the training split, without ``beta``, the threshold is the lowest one whose
    false-hit rate is at most ``target_false_hit_rate`` — at a bounded false-hit rate,
    the one that hits most, hence the most precise — ties going to the higher threshold;
    with ``beta`` it is the one of the best F-beta. Candidates are the training scores
    themselves (and one above them all, which never hits); the threshold returned is
    the midpoint between the best candidate and the next lower training score, which
    splits the training pairs the same way with a margin on both sides.

    :param pairs: the labelled pairs; both labels must occur in the training split.
    :param scores: the cosine of each pair (:func:`score_pairs`), in the same order;
        finite numbers.
    :returns: the threshold with its rates on the training and the held-out split (a
        held-out split without a label has a NaN rate for it).
    :raises ValueError: for mismatched lengths, a non-finite score (naming its pair), a
        label missing (from the pairs or the training split), or rates out of range.
    """
    values = [float(s) for s in scores]
    labels = [p.is_paraphrase for p in pairs]
    if len(values) != len(labels):
        raise ValueError(f"{len(values)} scores for {len(labels)} pairs")
    for index, value in enumerate(values):
        if not math.isfinite(value):
            raise ValueError(f"the score of pair {index} is {value}: scores must be finite "
                             "(an embedder's NaN or infinite vector?)")
    if not any(labels) or all(labels):
        raise ValueError("calibration needs paraphrase and non-paraphrase pairs")
    if not 0.0 <= target_false_hit_rate < 1.0:
        raise ValueError(f"target_false_hit_rate must be in [0, 1), got {target_false_hit_rate}")
    if not 0.0 < heldout < 1.0:
        raise ValueError(f"heldout must be in (0, 1), got {heldout}")
    if beta is not None and not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a positive number, got {beta}")
    train, test = _split(len(values), labels, heldout, seed)
    t_scores = [values[i] for i in train]
    t_labels = [labels[i] for i in train]
    positives = sum(t_labels)
    if not positives or positives == len(t_labels):
        raise ValueError(
            f"the training split has {positives} paraphrase and "
            f"{len(t_labels) - positives} non-paraphrase pairs: it needs both (with "
            f"heldout={heldout:g} of each label held out); lower heldout or add pairs")
    candidates = sorted(set(t_scores)) + [math.nextafter(max(t_scores), math.inf)]
    measured = [measure(t_scores, t_labels, c, beta=beta or 1.0) for c in candidates]
    if beta is None:
        allowed = [r for r in measured if r.false_hit_rate <= target_false_hit_rate]
        best = max(allowed, key=lambda r: (r.hit_rate, r.precision, r.threshold))
        objective = f"max hit rate at false-hit rate <= {target_false_hit_rate:g}"
    else:
        best = max(measured, key=lambda r: (r.f_beta, r.threshold))
        objective = f"max F-{beta:g}"
    # Every threshold between the best candidate and the next lower training score splits
    # the training pairs alike; the midpoint leaves a margin on both sides for new pairs.
    below = [s for s in t_scores if s < best.threshold]
    threshold = best.threshold
    if below:
        middle = max(below) + (best.threshold - max(below)) / 2
        if max(below) < middle <= best.threshold:
            threshold = middle
    train_rates = measure(t_scores, t_labels, threshold, beta=beta or 1.0)
    held = measure([values[i] for i in test], [labels[i] for i in test], threshold,
                   beta=beta or 1.0)
    return Calibration(threshold=threshold, objective=objective, train=train_rates,
                       heldout=held)
