"""Counting the scans the guards make (imported by the tests: this folder is on sys.path)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from aieng_guardrails import _guards


def counting(monkeypatch: pytest.MonkeyPatch, name: str) -> Counter[str]:
    """Count the texts ``_guards.<name>`` (a scan) is called on."""
    scanned: Counter[str] = Counter()
    scan = getattr(_guards, name)

    def counted(text: str, *args: Any, **kwargs: Any) -> Any:
        scanned[text] += 1
        return scan(text, *args, **kwargs)

    monkeypatch.setattr(_guards, name, counted)
    return scanned
