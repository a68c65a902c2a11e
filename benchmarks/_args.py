"""Argument types the benchmark scripts share: counts that must be at least one.

``--docs 0`` or ``--repeats 0`` used to get past argparse and end in a traceback deep in
the measurement (an empty median, a division by zero); argparse now refuses them with
its usual one-line usage error.
"""

from __future__ import annotations

import argparse
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


#: An integer of at least 1, for ``type=`` in ``add_argument``.
positive = _at_least(1)
#: An integer of at least 0 (a warm-up that may be skipped).
nonnegative = _at_least(0)
