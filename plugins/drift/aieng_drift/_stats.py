"""The statistics of drift detection, in numpy: the two-sample Kolmogorov–Smirnov test,
the population stability index (numeric and categorical), and embedding-centroid drift
with a permutation test."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs
from aieng_hookspecs import stop_if_cancelled

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float64]

__all__ = [
    "KSResult",
    "categorical_psi",
    "centroid_distance",
    "centroid_permutation_test",
    "kolmogorov_sf",
    "ks_2samp",
    "psi",
    "quantile_edges",
]

#: Above this many cells (n × m) the p-value is the asymptotic one. The exact one walks
#: ``min(n, m) + 1`` rows over at most this many cells, so it costs little at any shape
#: (scipy's ``auto`` is exact while both sizes are at most 10,000, whatever n × m).
EXACT_CELLS = 1_000_000


@attrs.frozen
class KSResult:
    """A two-sample Kolmogorov–Smirnov test.

    :param statistic: the largest distance between the two empirical CDFs, in [0, 1].
    :param p_value: the two-sided p-value (probability of a statistic at least this large
        when both samples come from one continuous distribution).
    :param method: ``"exact"`` or ``"asymptotic"``.
    """

    statistic: float
    p_value: float
    method: str


def _sample(values: Sequence[float] | Vector, name: str) -> Vector:
    import numpy as np

    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{name} is empty: the test needs at least one value in each sample")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def kolmogorov_sf(x: float) -> float:
    """The survival function of the Kolmogorov distribution, P(K > x)."""
    if x <= 0.0:
        return 1.0
    if x < 1.18:  # the theta-function form converges fast for small x
        factor = math.sqrt(2.0 * math.pi) / x
        w = -(math.pi ** 2) / (8.0 * x * x)
        cdf = factor * sum(math.exp((2 * k - 1) ** 2 * w) for k in range(1, 8))
        return min(1.0, max(0.0, 1.0 - cdf))
    total = 0.0
    for k in range(1, 101):
        term = math.exp(-2.0 * k * k * x * x)
        total += term if k % 2 else -term
        if term < 1e-17:
            break
    return min(1.0, max(0.0, 2.0 * total))


def _next_row(previous: Vector, plo: int, lo: int, hi: int) -> Vector:
    """Row ``i`` of the lattice-path log-counts from row ``i - 1`` (``previous``, cells
    ``plo`` … of that row): a cell's paths come from the cell below or the one to its left,
    so the row is the running log-sum of the previous row from ``lo`` on, flat past the
    previous row's end (no path enters there from below)."""
    import numpy as np

    running = np.logaddexp.accumulate(previous[lo - plo:])
    row: Vector = np.empty(hi - lo + 1)
    row[:running.size] = running
    row[running.size:] = running[-1]
    return row


def _log_binomials(a: int, b0: int, count: int) -> Vector:
    """``log C(a + b, a)`` for ``b = b0 … b0 + count - 1``: each from the one before
    (``C(a + b, a) = C(a + b - 1, a) · (a + b) / b``), from an exact ``lgamma`` every
    1024 values so that rounding does not build up along a long range."""
    import numpy as np

    parts = []
    for start in range(b0, b0 + count, 1024):
        size = min(1024, b0 + count - start)
        first = math.lgamma(a + start + 1) - math.lgamma(a + 1) - math.lgamma(start + 1)
        steps = np.log1p(a / np.arange(start + 1, start + size, dtype=float))
        parts.append(first + np.concatenate(([0.0], np.cumsum(steps))))
    return np.concatenate(parts)


def _exact_p(d: float, n: int, m: int) -> float:
    """P(D >= d) for samples of sizes n and m: the probability that a random lattice path
    from (0, 0) to (n, m) leaves the band ``|i/n - j/m| < d``.

    The walk goes row by row along the smaller sample (``min(n, m) + 1`` numpy steps over
    the band's cells, whatever the other size), counting the paths that stay inside as
    logarithms (no count overflows). The paths that leave are summed where they first
    step out (the paths inside up to there, times every way on to (n, m)), then divided
    by all ``C(n + m, n)`` paths: a sum of positive terms, so a p-value far in the tail
    keeps its digits (1 minus the share inside would leave rounding noise of 1e-16); at
    p > 0.5, where that subtraction loses nothing, it is 1 minus the share inside.
    """
    import numpy as np

    # D = |i/n - j/m| = |i*m - j*n| / (n*m): compare integers, not floats.
    limit = round(d * n * m)
    if limit <= 0:
        return 1.0
    if n > m:  # the band is symmetric: walk the rows of the smaller sample
        n, m = m, n
    # row i, inside: i*m - limit < j*n < i*m + limit; row 0 holds one path per cell
    previous = np.zeros(min(m, -(-limit // n) - 1) + 1)
    plo, phi = 0, previous.size - 1
    exits: list[Vector] = []

    def step_right_out(row: Vector, i: int, lo: int, hi: int) -> None:
        if hi < m:  # from (i, hi) to (i, hi + 1), outside; then on to (n, m)
            exits.append(row[hi - lo] + _log_binomials(n - i, m - hi - 1, 1))

    step_right_out(previous, 0, plo, phi)
    for i in range(1, n + 1):
        lo = max(0, (i * m - limit) // n + 1)
        hi = min(m, -((-(i * m + limit)) // n) - 1)
        if lo > phi:  # the band breaks: no path stays inside
            return 1.0
        for first, last in ((plo, min(phi, lo - 1)), (max(plo, hi + 1), phi)):
            if first <= last:  # up from (i - 1, j) to (i, j), outside; then on
                ways_on = _log_binomials(n - i, m - last, last - first + 1)[::-1]
                exits.append(previous[first - plo:last - plo + 1] + ways_on)
        previous, plo, phi = _next_row(previous, plo, lo, hi), lo, hi
        step_right_out(previous, i, lo, hi)
    log_paths = math.lgamma(n + m + 1) - math.lgamma(n + 1) - math.lgamma(m + 1)
    inside = math.exp(float(previous[m - plo]) - log_paths)
    if inside <= 0.5 or not exits:  # 1 - inside loses no digits
        return float(min(1.0, max(0.0, 1.0 - inside)))
    terms = np.concatenate(exits)
    top = float(terms.max())
    out = top + math.log(float(np.exp(terms - top).sum()))  # numpy sums pairwise
    return float(min(1.0, max(0.0, math.exp(out - log_paths))))


def ks_2samp(first: Sequence[float] | Vector, second: Sequence[float] | Vector) -> KSResult:
    """The two-sided two-sample Kolmogorov–Smirnov test.

    The statistic is exact with ties (both CDFs right-continuous, as scipy computes it).
    The p-value is exact (lattice-path probability, assuming no ties; ``min(n, m) + 1``
    numpy steps) when ``n × m`` is at most 1,000,000, else asymptotic (the Kolmogorov
    distribution at ``(√en + 0.12 + 0.11/√en) · D`` with ``en = n·m/(n+m)``, Stephens'
    correction).

    :raises ValueError: when a sample is empty or holds NaN or infinity.
    """
    import numpy as np

    a = np.sort(_sample(first, "the first sample"))
    b = np.sort(_sample(second, "the second sample"))
    n, m = a.size, b.size
    pooled = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, pooled, side="right") / n
    cdf_b = np.searchsorted(b, pooled, side="right") / m
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    if n * m <= EXACT_CELLS:
        return KSResult(d, _exact_p(d, n, m), "exact")
    en = math.sqrt(n * m / (n + m))
    return KSResult(d, kolmogorov_sf((en + 0.12 + 0.11 / en) * d), "asymptotic")


def quantile_edges(reference: Sequence[float] | Vector, bins: int) -> Vector:
    """The inner bin edges of ``bins`` quantile bins of the reference (repeated quantiles
    of discrete data merge, so there may be fewer bins)."""
    import numpy as np

    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    values = np.sort(_sample(reference, "the reference"))
    # The quantile at i / bins by linear interpolation (numpy's default method), its
    # position (n - 1) * i / bins split in integers: np.quantile's float positions put an
    # edge that is a data value (a word count) a rounding error off it (-4.4e-16 for 0),
    # and the values on it in the bin above.
    whole, part = np.divmod((values.size - 1) * np.arange(1, bins), bins)
    low, high = values[whole], values[np.minimum(whole + 1, values.size - 1)]
    with np.errstate(over="ignore", invalid="ignore"):
        between = low + (high - low) * part / bins
    edges: Vector = np.unique(np.where(part == 0, low, between))
    return edges


def _psi_terms(expected: Vector, actual: Vector, epsilon: float) -> float:
    import numpy as np

    p = np.maximum(expected, epsilon)
    q = np.maximum(actual, epsilon)
    # each term (q - p) ln(q / p) is >= 0: the index is never negative
    return float(np.sum((q - p) * np.log(q / p)))


def psi(reference: Sequence[float] | Vector, current: Sequence[float] | Vector, *,
        bins: int = 10, epsilon: float = 1e-4) -> float:
    """The population stability index of ``current`` against ``reference``.

    Bins are the reference's quantile bins (``bins`` of them, fewer when quantiles repeat;
    when the lowest quantile is the reference's minimum, values below it get a bin of their
    own, as values above the highest quantile do); a bin's share below ``epsilon`` counts as ``epsilon``. PSI = Σ (q − p) · ln(q / p) over
    the bins, p the reference's share, q the current one's. Rules of thumb: < 0.1 stable,
    0.1–0.25 moderate shift, > 0.25 major shift.

    :raises ValueError: when a sample is empty or holds NaN or infinity.
    """
    import numpy as np

    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    edges = quantile_edges(reference, bins)
    ref = _sample(reference, "the reference")
    cur = _sample(current, "the current sample")
    if edges[0] == ref.min():
        # The lowest bin (-inf, edge] would hold the reference's minimum and every value
        # below it: a constant reference would not see a shift down at all. Values above
        # the highest edge already get their own bin, so give those below the minimum one.
        edges = np.concatenate([[np.nextafter(edges[0], -np.inf)], edges])
    slots = edges.size + 1
    p = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=slots) / ref.size
    q = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=slots) / cur.size
    return _psi_terms(p, q, epsilon)


def categorical_psi(reference: Mapping[str, int], current: Mapping[str, int], *,
                    top: int = 500, epsilon: float = 1e-4) -> float:
    """The PSI of two count tables (tokens): the reference's ``top`` most frequent
    categories, plus one bucket for every other category.

    :raises ValueError: when a table is empty.
    """
    import numpy as np

    ref_total, cur_total = sum(reference.values()), sum(current.values())
    if ref_total <= 0 or cur_total <= 0:
        raise ValueError("both count tables need at least one count")
    kept = sorted(reference, key=lambda key: (-reference[key], key))[:top]
    p = np.array([reference[k] for k in kept] + [ref_total - sum(reference[k] for k in kept)],
                 dtype=np.float64) / ref_total
    cur_kept = [current.get(k, 0) for k in kept]
    q = np.array(cur_kept + [cur_total - sum(cur_kept)], dtype=np.float64) / cur_total
    return _psi_terms(p, q, epsilon)


def _matrix(rows: Sequence[Sequence[float]] | Vector, name: str) -> Vector:
    import numpy as np

    matrix = np.asarray(rows, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty list of equal-length vectors")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return matrix


def _cosine_distance(u: Vector, v: Vector) -> float:
    import numpy as np

    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu == 0.0 or nv == 0.0:
        return 0.0 if nu == nv else 1.0
    # clipped: the cosine of a vector with itself rounds to 1 + 2.2e-16 at times
    return min(2.0, max(0.0, float(1.0 - np.dot(u, v) / (nu * nv))))


def centroid_distance(reference: Sequence[Sequence[float]] | Vector,
                      current: Sequence[Sequence[float]] | Vector) -> float:
    """The cosine distance (1 − cosine) between the two sets' mean vectors, in [0, 2]."""
    ref = _matrix(reference, "the reference embeddings")
    cur = _matrix(current, "the current embeddings")
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(f"the embeddings differ in size: {ref.shape[1]} and {cur.shape[1]}")
    return _cosine_distance(ref.mean(axis=0), cur.mean(axis=0))


#: Splits of the permutation test between two looks for a cancellation.
PERMUTATION_BLOCK = 32


def centroid_permutation_test(reference: Sequence[Sequence[float]] | Vector,
                              current: Sequence[Sequence[float]] | Vector, *,
                              permutations: int = 500, seed: int = 0) -> tuple[float, float]:
    """The centroid distance and its permutation p-value.

    The two sets are pooled and split at random ``permutations`` times into sets of the
    original sizes; the p-value is ``(1 + #{split distance >= observed}) / (1 +
    permutations)``, so it is never 0 and its resolution is ``1 / (1 + permutations)``.
    In a worker thread of anyio's, a cancellation of the task waiting for it (a host's
    deadline) ends it within :data:`PERMUTATION_BLOCK` splits.

    :returns: ``(distance, p_value)``.
    """
    import numpy as np

    if permutations < 1:
        raise ValueError(f"permutations must be at least 1, got {permutations}")
    observed = centroid_distance(reference, current)
    ref = _matrix(reference, "the reference embeddings")
    pooled = np.vstack([ref, _matrix(current, "the current embeddings")])
    total, size = pooled.shape[0], ref.shape[0]
    rng = np.random.default_rng(seed)
    sums = pooled.sum(axis=0)
    hits = 0
    for done in range(permutations):
        if done % PERMUTATION_BLOCK == 0:
            stop_if_cancelled()
        chosen = rng.permutation(total)[:size]
        first = pooled[chosen].sum(axis=0)
        rest = sums - first
        distance = _cosine_distance(first / size, rest / max(total - size, 1))
        hits += distance >= observed - 1e-12
    return observed, (1 + hits) / (1 + permutations)
