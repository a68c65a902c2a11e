"""Tokenizing and splitting used by the built-in components (private)."""

from __future__ import annotations

import re

__all__ = ["STOPWORDS", "sentences", "tokenize"]

_TOKEN = re.compile(r"\w+", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`*\[(])")

STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its "
    "of on or so such that the their then there these they this to was were what when where "
    "which who why will with you your".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens without stopwords."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS]


def sentences(text: str) -> list[str]:
    """Split prose into sentences (a simple rule: end punctuation, then a capital or digit)."""
    parts: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        block = " ".join(block.split())
        if block:
            parts.extend(s.strip() for s in _SENTENCE.split(block) if s.strip())
    return parts
