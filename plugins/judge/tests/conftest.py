"""Fixtures of the judge tests (the doubles live in ``judge_doubles``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog entry of the test, whatever its level (the level filter another
    test may have left is lifted for this test and restored after)."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


def pytest_configure(config: pytest.Config) -> None:
    """Register ``real_model``: the few tests that load the shipped SmolLM2."""
    config.addinivalue_line(
        "markers", "real_model: loads a shipped model (SmolLM2-135M-Instruct); slow-ish, "
        "skipped without the model package except under CI")
