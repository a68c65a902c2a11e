"""Statistics of evaluation runs: bootstrap confidence intervals of a mean, and the paired
bootstrap test of the difference between two systems scored on the same items.

Both are percentile bootstraps, seeded, so a report's numbers are reproducible. Means of
finite values never overflow: where a plain sum would pass a float's range (scores near
1e308), each value is divided by the count first; a number is then not finite only where
its true value is past a float's range (a mean difference of 3e308).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import numpy as np

__all__ = ["MeanCI", "PairedDiff", "mean_ci", "mean_cis", "paired_bootstrap"]


@attrs.frozen
class MeanCI:
    """A mean with its bootstrap confidence interval.

    :param mean: the sample mean.
    :param low: the interval's lower end.
    :param high: the interval's upper end.
    :param n: the number of values.
    """

    mean: float
    low: float
    high: float
    n: int


@attrs.frozen
class PairedDiff:
    """The paired bootstrap test of ``b - a`` over items both systems scored.

    :param mean_diff: the mean of the per-item differences ``b - a``.
    :param low: the confidence interval's lower end.
    :param high: the confidence interval's upper end.
    :param p_value: two-sided p-value of "no difference" (the share of bootstrap means of
        the centred differences at least as far from 0 as the observed mean, with the
        usual +1 correction, so it is never 0).
    :param n: the number of paired items.
    :param mean_a: system a's mean on those items.
    :param mean_b: system b's mean on those items.
    """

    mean_diff: float
    low: float
    high: float
    p_value: float
    n: int
    mean_a: float
    mean_b: float

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0."""
        return self.low > 0 or self.high < 0


def _draw(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    """``rows`` resamples of ``n`` indices with replacement."""
    return rng.integers(0, n, size=(rows, n))


def _mean(data: np.ndarray) -> float:
    """numpy's mean of a 1-d array; for finite values whose sum passes a float's range,
    ``fsum(value / n)`` instead (a sum of values each at most ``max / n``: it cannot)."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(data.mean())
    if not math.isfinite(mean) and bool(np.isfinite(data).all()):
        mean = math.fsum((data / data.size).tolist())
    return mean


def _quantiles(values: np.ndarray, qs: list[float]) -> list[float]:
    """numpy's (linear) quantiles; of finite values ``2 * quantile(values / 2)``, the
    same numbers, where the interpolation's ``high - low`` passes a float's range."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):
        out = np.quantile(values, qs)
        if not np.isfinite(out).all() and np.isfinite(values).all():
            out = np.quantile(values / 2.0, qs) * 2.0
    return [float(q) for q in out]


def _boot_means(data: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Means of ``samples`` resamples with replacement of each row of ``data`` (shape
    ``(k, n)``: rows of equal size share the drawn indices, which depend only on ``n`` and
    the seed, so each row's means are those it has alone, bit for bit), drawn in blocks
    so that memory stays bounded (about 4 million indices at a time) whatever the data's
    size. :returns: shape ``(k, samples)``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    k, n = data.shape
    block = max(1, (1 << 22) // n)
    out = np.empty((k, samples), dtype=float)
    # A row whose sum could pass a float's range is summed as value / n (no overflow).
    huge = [bool(np.abs(data[row]).max() > sys.float_info.max / n) for row in range(k)]
    scaled = [data[row] / n if huge[row] else data[row] for row in range(k)]
    for start in range(0, samples, block):
        rows = min(block, samples - start)
        indices = _draw(rng, n, rows)
        for row in range(k):
            out[row, start:start + rows] = (scaled[row][indices].sum(axis=1) if huge[row]
                                            else data[row][indices].mean(axis=1))
    return out


def _check_seed(seed: int) -> None:
    """Refuse a negative seed with its name (numpy's message names nothing)."""
    if seed < 0:
        raise ValueError(f"the bootstrap seed must not be negative, got {seed}")


def mean_ci(values: Sequence[float], *, samples: int = 1000, confidence: float = 0.95,
            seed: int = 0) -> MeanCI:
    """The mean of ``values`` and its percentile bootstrap interval.

    :raises ValueError: for no values, a confidence outside (0, 1) or a negative seed.
    """
    return mean_cis([values], samples=samples, confidence=confidence, seed=seed)[0]


def mean_cis(groups: Sequence[Sequence[float]], *, samples: int = 1000,
             confidence: float = 0.95, seed: int = 0) -> list[MeanCI]:
    """:func:`mean_ci` of each group, bit for bit, in order: groups of the same size share
    one draw of resampled indices (a report's metrics over the same items, its slices of
    equal size), instead of drawing them again for each.

    :raises ValueError: for a group without values, a confidence outside (0, 1) or a
        negative seed.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    _check_seed(seed)
    import numpy as np  # imported here: `aieng --help` loads this plugin

    arrays = [np.asarray(values, dtype=float) for values in groups]
    if any(data.size == 0 for data in arrays):
        raise ValueError("no values to average")
    by_size: dict[int, list[int]] = {}
    for i, data in enumerate(arrays):
        by_size.setdefault(data.size, []).append(i)
    alpha = (1.0 - confidence) / 2.0
    out: list[MeanCI | None] = [None] * len(arrays)
    for size, members in by_size.items():
        if size == 1 or samples < 1:
            for i in members:
                mean = _mean(arrays[i])
                out[i] = MeanCI(mean, mean, mean, size)
            continue
        means = _boot_means(np.stack([arrays[i] for i in members]), samples, seed)
        for row, i in enumerate(members):
            mean = _mean(arrays[i])
            low, high = _quantiles(means[row], [alpha, 1.0 - alpha])
            out[i] = MeanCI(mean, min(low, mean), max(high, mean), size)
    return [ci for ci in out if ci is not None]


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, samples: int = 1000,
                     confidence: float = 0.95, seed: int = 0) -> PairedDiff:
    """The paired bootstrap test of ``mean(b - a)``: ``a[i]`` and ``b[i]`` are two systems'
    scores on the same item ``i``.

    :raises ValueError: when the lengths differ, there are no pairs, the confidence is
        outside (0, 1) or the seed negative.
    """
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    _check_seed(seed)
    import numpy as np

    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    if xa.size == 0:
        raise ValueError("no paired items")
    # Differences of finite scores past a float's range (1e308 - -1e308): the halves'
    # differences, which fit, and the numbers shown doubled (exact, but past the range).
    scale = 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        diffs = xb - xa
        if not np.isfinite(diffs).all() and np.isfinite(xa).all() and np.isfinite(xb).all():
            scale, diffs = 2.0, xb / 2.0 - xa / 2.0
    observed = _mean(diffs)
    samples = max(samples, 1)
    means = _boot_means(diffs[None, :], samples, seed)[0]
    alpha = (1.0 - confidence) / 2.0
    low, high = _quantiles(means, [alpha, 1.0 - alpha])
    # Under "no difference" the bootstrap distribution is centred on 0: shift it there.
    with np.errstate(over="ignore", invalid="ignore"):
        centred = means - observed
    # A tolerance keeps float noise from turning equal magnitudes into misses.
    extreme = int(np.count_nonzero(np.abs(centred) >= abs(observed) - 1e-12))
    p_value = (extreme + 1) / (samples + 1)
    return PairedDiff(mean_diff=scale * observed, low=scale * min(low, observed),
                      high=scale * max(high, observed), p_value=min(p_value, 1.0),
                      n=int(diffs.size), mean_a=_mean(xa), mean_b=_mean(xb))
