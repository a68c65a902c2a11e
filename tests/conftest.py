"""Set-up of the tests/ folder (the repository-wide settings, one thread for numeric
libraries and the hypothesis profile, are in the root conftest.py)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the project's own markers (``--strict-markers`` rejects unknown ones)."""
    config.addinivalue_line(
        "markers",
        "mutates_venv: pip-installs into the running environment; never run in parallel "
        "with other tests (deselect with -m 'not mutates_venv')",
    )

