"""Helpers of the router tests: a fake clock, the intent data set, bus settling."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["INTENTS", "FakeClock", "intent_split"]

#: 80 labelled support requests, 20 per intent (billing, tech, shipping, account).
INTENTS = Path(__file__).resolve().parent / "data" / "intents.jsonl"


class FakeClock:
    """A clock for circuit breakers that only moves when told (no sleeping in tests)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


def intent_split(train_per_label: int = 12) -> tuple[dict[str, list[str]],
                                                     list[tuple[str, str]]]:
    """The data set split per label: the first ``train_per_label`` texts of each label as
    examples, the rest as held-out ``(text, label)`` pairs."""
    by_label: dict[str, list[str]] = {}
    for line in INTENTS.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        by_label.setdefault(entry["label"], []).append(entry["text"])
    train = {label: texts[:train_per_label] for label, texts in by_label.items()}
    held = [(text, label) for label, texts in by_label.items()
            for text in texts[train_per_label:]]
    return train, held



