"""Argument types the benchmark scripts share: counts that must be at least one.

``--docs 0`` or ``--repeats 0`` used to get past argparse and end in a traceback deep in
the measurement (an empty median, a division by zero); argparse now refuses them with
its usual one-line usage error. The same holds for the float options (``--rates 0``,
``--delay -1``, ``--max-wait-ms -5``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"an integer expected, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"at least {minimum} expected, got {value}")
        return value

    return parse


def _float_at_least(minimum: float, *, strict: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"a number expected, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"a finite number expected, got {text!r}")
        if value < minimum or (strict and value == minimum):
            bound = "more than" if strict else "at least"
            raise argparse.ArgumentTypeError(f"{bound} {minimum:g} expected, got {text}")
        return value

    return parse


#: An integer of at least 1, for ``type=`` in ``add_argument``.
positive = _at_least(1)
#: An integer of at least 0 (a warm-up that may be skipped).
nonnegative = _at_least(0)
#: A finite number above 0 (a rate).
positive_float = _float_at_least(0.0, strict=True)
#: A finite number of at least 0 (a delay, a wait).
nonnegative_float = _float_at_least(0.0, strict=False)
