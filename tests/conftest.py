"""Shared test set-up: one thread for numeric libraries, hypothesis profiles."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("OMP_NUM_THREADS", "1")

settings.register_profile(
    "aieng", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("aieng")


def pytest_configure(config: pytest.Config) -> None:
    """Register the project's own markers (``--strict-markers`` rejects unknown ones)."""
    config.addinivalue_line(
        "markers",
        "mutates_venv: pip-installs into the running environment; never run in parallel "
        "with other tests (deselect with -m 'not mutates_venv')",
    )

