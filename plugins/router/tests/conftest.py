"""Fixtures of the router tests (the helpers live in ``router_testing``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from router_testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at 1000 s, moved only by the test."""
    return FakeClock()
