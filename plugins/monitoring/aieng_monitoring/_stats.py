"""One latency series: fixed histogram buckets for Prometheus, a sliding window for
exact recent percentiles."""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence

__all__ = ["Series", "percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-quantile (0 < q <= 1) of ``values``; NaN when empty.

    Nearest rank returns an observed value (never an interpolation): p99 of 100 samples
    is the 99th smallest.
    """
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q!r}")
    if not values:
        return math.nan
    ordered = sorted(values)
    # The rank is ceil(q * n); rounded first, so that float noise (0.07 * 100 is
    # 7.000000000000001) does not push a whole rank to the next one.
    rank = math.ceil(round(q * len(ordered), 9))
    return ordered[max(0, rank - 1)]


class Series:
    """Observations of one metric for one label set.

    :param bounds: the histogram's upper bounds (strictly increasing).
    :param window: the percentiles are exact over the last ``window`` observations.
    """

    __slots__ = ("bounds", "count", "counts", "recent", "total")

    def __init__(self, bounds: Sequence[float], window: int) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is the +Inf overflow
        self.count = 0
        self.total = 0.0
        self.recent: deque[float] = deque(maxlen=window)

    def observe(self, value: float) -> None:
        """Add one observation (a negative or non-finite one is ignored: clocks misbehave)."""
        if not math.isfinite(value) or value < 0:
            return
        # le is inclusive: a value equal to a bound falls in that bound's bucket.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value
        self.recent.append(value)

    def quantile(self, q: float) -> float:
        """The ``q``-quantile of the recent window (NaN before any observation)."""
        return percentile(list(self.recent), q)
