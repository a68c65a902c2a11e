"""Argument types the benchmark scripts share: counts that must be at least one.

``--docs 0`` or ``--repeats 0`` used to get past argparse and end in a traceback deep in
the measurement (an empty median, a division by zero); argparse now refuses them with
its usual one-line usage error.
"""

from __future__ import annotations

import argparse


def positive(text: str) -> int:
    """An integer of at least 1, for ``type=`` in ``add_argument``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an integer expected, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1 expected, got {value}")
    return value


def nonnegative(text: str) -> int:
    """An integer of at least 0 (a warm-up that may be skipped)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an integer expected, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"at least 0 expected, got {value}")
    return value
