"""Agreement statistics between a judge and human labels (or two judges).

- :func:`cohen_kappa`: chance-corrected agreement of two raters on categorical labels,
  optionally weighted (linear / quadratic) for ordinal scales such as a 1–5 rubric.
- :func:`spearman`: rank correlation of two score lists, ties given their average rank.

Both follow the textbook definitions and agree with ``sklearn.metrics.cohen_kappa_score``
and ``scipy.stats.spearmanr`` (the tests use them as oracles), with two documented
differences on degenerate input noted in each docstring. Pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any, Literal

__all__ = ["cohen_kappa", "spearman"]


def _same_length(a: Sequence[Any], b: Sequence[Any], what: str, minimum: int) -> None:
    if len(a) != len(b):
        raise ValueError(f"{what}: the two sequences differ in length ({len(a)} vs {len(b)})")
    if len(a) < minimum:
        raise ValueError(f"{what}: needs at least {minimum} paired values, got {len(a)}")


def cohen_kappa(
    a: Sequence[Hashable],
    b: Sequence[Hashable],
    *,
    weights: Literal["linear", "quadratic"] | None = None,
) -> float:
    """Cohen's kappa between two raters' labels of the same items.

    ``kappa = 1 - sum(w * observed) / sum(w * expected)`` where ``observed`` is the joint
    label distribution, ``expected`` the product of the two marginals, and ``w`` the
    disagreement weight: ``0`` on the diagonal and ``1`` off it (unweighted), or ``|i - j|``
    (linear) or ``(i - j) ** 2`` (quadratic) where ``i, j`` are the positions of the labels
    in the sorted set of labels both raters used, as scikit-learn does (so labels 1, 2, 5
    are 0, 1, 2 apart, not 0, 1, 4).

    1 is perfect agreement, 0 what chance gives, negative worse than chance. When both raters
    give every item the same single label, kappa is 0/0; this returns 1.0 (they agree
    perfectly) where scikit-learn returns NaN.

    :param a: the first rater's labels.
    :param b: the second rater's labels, item by item.
    :param weights: ``None``, ``"linear"`` or ``"quadratic"``; weighted kappa needs labels
        that sort (numbers, or strings in their intended order).
    :returns: kappa, in [-1, 1].
    :raises ValueError: lengths differ, no items, unknown ``weights``, or unsortable labels
        with weights.
    """
    _same_length(a, b, "cohen_kappa", 1)
    if weights not in (None, "linear", "quadratic"):
        raise ValueError(f"cohen_kappa: weights must be None, 'linear' or 'quadratic', "
                         f"got {weights!r}")
    seen = list(dict.fromkeys([*a, *b]))
    if weights is not None:
        try:
            seen = sorted(seen)  # type: ignore[type-var]
        except TypeError as exc:
            raise ValueError(f"cohen_kappa: weighted kappa needs sortable labels, got {seen!r}"
                             ) from exc
    index = {label: i for i, label in enumerate(seen)}
    k = len(seen)
    n = len(a)
    observed = [[0.0] * k for _ in range(k)]
    for x, y in zip(a, b, strict=True):
        observed[index[x]][index[y]] += 1.0
    rows = [sum(row) for row in observed]
    cols = [sum(observed[i][j] for i in range(k)) for j in range(k)]

    def weight(i: int, j: int) -> float:
        if weights is None:
            return 0.0 if i == j else 1.0
        if weights == "linear":
            return float(abs(i - j))
        return float((i - j) ** 2)

    disagreement = math.fsum(
        weight(i, j) * observed[i][j] / n for i in range(k) for j in range(k)
    )
    chance = math.fsum(
        weight(i, j) * rows[i] * cols[j] / (n * n) for i in range(k) for j in range(k)
    )
    if chance == 0.0:
        # Both raters used one and the same label throughout: observed disagreement is 0 too.
        return 1.0
    return max(-1.0, min(1.0, 1.0 - disagreement / chance))


def _average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        rank = (start + end) / 2.0 + 1.0
        for position in range(start, end + 1):
            ranks[order[position]] = rank
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the two lists' ranks.

    Tied values get the average of the ranks they span (as ``scipy.stats.spearmanr``).
    When either list is constant the correlation is undefined and this returns NaN, as scipy
    does (without its warning): a judge that gives every answer the same score carries no
    ranking information, and a NaN says so rather than a made-up 0.

    :param x: the first scores.
    :param y: the second scores, item by item.
    :returns: rho, in [-1, 1], or NaN for a constant list.
    :raises ValueError: lengths differ, fewer than 2 items, or a non-finite value.
    """
    _same_length(x, y, "spearman", 2)
    for name, values in (("x", x), ("y", y)):
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value
            ):
                raise ValueError(f"spearman: {name}[{i}] must be a finite number, got {value!r}")
    rx = _average_ranks(x)
    ry = _average_ranks(y)
    mx = math.fsum(rx) / len(rx)
    my = math.fsum(ry) / len(ry)
    dx = [r - mx for r in rx]
    dy = [r - my for r in ry]
    sxx = math.fsum(d * d for d in dx)
    syy = math.fsum(d * d for d in dy)
    if sxx == 0.0 or syy == 0.0:
        return math.nan
    rho = math.fsum(p * q for p, q in zip(dx, dy, strict=True)) / math.sqrt(sxx * syy)
    return max(-1.0, min(1.0, rho))
