"""Length control: judges prefer longer answers; these take the length effect out of a batch.

- :func:`length_controlled_win_rate` (pairwise): a simplified AlpacaEval-LC. Fit
  ``P(model beats baseline) = sigmoid(theta + beta * tanh(d / sd))`` by maximum likelihood
  over a batch, where ``d`` is the length difference (words) of each pair and ``sd`` its
  standard deviation over the batch; the length-controlled win rate is the win rate the fit
  predicts at equal length, ``sigmoid(theta)``. AlpacaEval's GLM also has a per-instruction
  difficulty term, left out here: with one baseline it mostly shifts, not removes, the
  length effect.
- :func:`length_adjusted_scores` (pointwise): regress the scores on ``log(words)`` over the
  batch (ordinary least squares) and remove the fitted length effect, keeping the mean.

Both only *remove a linear (in the logit, or in log length) association* between length
and score over the batch they are given: if longer answers really are better in the batch,
that is removed too. Report them next to the raw numbers, never instead of them.
(The per-sample verbosity penalty relative to a reference is the ``rubric`` judge's
``length_penalty`` option, :func:`aieng_judge.length_controlled`.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs

__all__ = ["LengthControlled", "length_adjusted_scores", "length_controlled_win_rate"]

_RIDGE = 1e-3


@attrs.frozen
class LengthControlled:
    """A batch's win rate before and after length control.

    :param raw: the plain win rate (ties count half).
    :param controlled: the win rate the fit predicts at equal lengths.
    :param length_coefficient: ``beta``: how strongly the judge's preference follows the
        length difference (0: not at all; positive: longer wins).
    """

    raw: float
    controlled: float
    length_coefficient: float


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def length_controlled_win_rate(
    outcomes: Sequence[float], model_lengths: Sequence[int], baseline_lengths: Sequence[int],
    *, iterations: int = 100,
) -> LengthControlled:
    """The length-controlled win rate of a model against a baseline over a batch.

    :param outcomes: per pair, the model's score: 1.0 win, 0.5 tie, 0.0 loss (a
        ``pairwise.win`` score, or ``ranking.Game``'s third element).
    :param model_lengths: the model's answer lengths (words), pair by pair.
    :param baseline_lengths: the baseline's answer lengths, pair by pair.
    :param iterations: the most Newton steps of the fit (it converges in a handful).
    :raises ValueError: empty or mismatched inputs, or an outcome outside [0, 1].
    """
    n = len(outcomes)
    if n == 0 or len(model_lengths) != n or len(baseline_lengths) != n:
        raise ValueError("length_controlled_win_rate needs equally long, non-empty outcomes "
                         f"and lengths (got {n}, {len(model_lengths)}, "
                         f"{len(baseline_lengths)})")
    for i, y in enumerate(outcomes):
        if not 0.0 <= y <= 1.0:
            raise ValueError(f"outcomes[{i}] must be in [0, 1], got {y!r}")
    diffs = [float(m - b) for m, b in zip(model_lengths, baseline_lengths, strict=True)]
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / n) or 1.0
    xs = [math.tanh(d / sd) for d in diffs]
    theta = beta = 0.0
    # Newton's method on the ridge-penalized log-likelihood (ties: fractional targets);
    # the ridge keeps the fit finite when outcomes separate perfectly.
    for _ in range(iterations):
        g0 = -_RIDGE * theta
        g1 = -_RIDGE * beta
        h00 = h11 = _RIDGE  # the ridge adds _RIDGE * I to the Hessian: nothing to h01
        h01 = 0.0
        for x, y in zip(xs, outcomes, strict=True):
            p = _sigmoid(theta + beta * x)
            w = p * (1.0 - p)
            g0 += y - p
            g1 += (y - p) * x
            h00 += w
            h01 += w * x
            h11 += w * x * x
        det = h00 * h11 - h01 * h01
        if det <= 0:
            break
        step0 = (h11 * g0 - h01 * g1) / det
        step1 = (h00 * g1 - h01 * g0) / det
        theta += step0
        beta += step1
        if abs(step0) < 1e-10 and abs(step1) < 1e-10:
            break
    return LengthControlled(raw=sum(outcomes) / n, controlled=_sigmoid(theta),
                            length_coefficient=beta)


def length_adjusted_scores(scores: Sequence[float], lengths: Sequence[int]) -> list[float]:
    """Scores with their linear association with ``log(words)`` over the batch removed.

    ``adjusted_i = score_i - b * (log(len_i) - mean(log(len)))`` with ``b`` the least-squares
    slope of score on log length; the mean score is unchanged, and the adjusted scores are
    uncorrelated with log length. Lengths below 1 count as 1.

    :raises ValueError: empty or mismatched inputs.
    """
    n = len(scores)
    if n == 0 or len(lengths) != n:
        raise ValueError(f"length_adjusted_scores needs equally long, non-empty scores and "
                         f"lengths (got {n}, {len(lengths)})")
    logs = [math.log(max(length, 1)) for length in lengths]
    mean_log = sum(logs) / n
    mean_score = sum(scores) / n
    sxx = sum((x - mean_log) ** 2 for x in logs)
    if sxx == 0.0:
        return [float(s) for s in scores]
    slope = sum((x - mean_log) * (s - mean_score) for x, s in zip(logs, scores, strict=True)) / sxx
    return [s - slope * (x - mean_log) for x, s in zip(logs, scores, strict=True)]
