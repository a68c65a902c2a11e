"""Percentiles the benchmark scripts share, by one stated rule.

``pXX`` is the nearest-rank percentile: the smallest sample that at least XX % of the
samples are at or below, i.e. the ``ceil(XX / 100 * n)``-th of the ``n`` samples sorted
(numpy's ``method="inverted_cdf"``). p50 of an even count is then the lower of the two
middle samples, p99 of 100 samples the 99th (not the largest), and every pXX is a
latency that was measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction


def nearest_rank(values: Sequence[float], percent: float) -> float:
    """The ``percent`` (0 < percent <= 100) nearest-rank percentile of ``values``.

    :raises ValueError: for no values, or a percent out of range.
    """
    if not values:
        raise ValueError("a percentile of no samples")
    if not 0 < percent <= 100:
        raise ValueError(f"a percent in (0, 100] expected, got {percent}")
    ordered = sorted(values)
    # Exactly, from the percent as written: 0.99 * 100 computed in floats may be a hair
    # above 99 (the 100th sample) or below it.
    rank = math.ceil(Fraction(str(percent)) * len(ordered) / 100)
    return ordered[max(rank, 1) - 1]
