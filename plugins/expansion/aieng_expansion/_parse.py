"""Turning a model's answer into queries: pure functions, tested without a model."""

from __future__ import annotations

import re

__all__ = ["normalized", "passage", "rewrites"]

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
# "1. ", "2) ", "- ", "* ", "• ", "Query 2: ", "Rewrite: "; a label's punctuation is followed
# by whitespace, so "Question-answering" and "Version 2.0" are words, not markers.
_MARKER = re.compile(
    r"^\s*(?:\d+\s*[.):]\s+|[-*•]\s+"
    r"|(?:query|rewrite|version|question)\s*\d*\s*[:.)-](?:\s+|$))",
    re.IGNORECASE)
_QUOTES = "\"'`“”‘’«»"
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[^\W_]")  # a letter or digit, in any script
_LABEL = re.compile(r"^\s*(?:passage|document|answer)\s*:\s*", re.IGNORECASE)


def normalized(text: str) -> str:
    """``text`` case-folded with its whitespace collapsed: equal queries compare equal."""
    return _SPACE.sub(" ", text).strip().casefold()


def _clean_line(line: str) -> str:
    line = _MARKER.sub("", line, count=1).strip()
    if len(line) >= 2 and line[0] in _QUOTES and line[-1] in _QUOTES:
        line = line[1:-1].strip()
    return _SPACE.sub(" ", line)


def rewrites(answer: str, original: str, *, limit: int, max_chars: int) -> list[str]:
    """The query rewrites in a model's answer, one per line.

    List markers (``1.``, ``-``, ``Query 2:``) and surrounding quotes are removed; blank
    lines, lines without a letter or digit (code fences, rules), preambles (a line ending
    in ``:``), repeats and the original query itself are dropped; each rewrite is cut to
    ``max_chars`` characters.

    :param answer: the model's text.
    :param original: the user's query.
    :param limit: the most rewrites to keep.
    :param max_chars: the longest rewrite kept.
    :returns: at most ``limit`` distinct rewrites, in the answer's order.
    """
    seen = {normalized(original)}
    found: list[str] = []
    for raw in _THINK.sub("\n", answer).splitlines():
        if raw.rstrip().endswith(":"):
            continue
        line = _clean_line(raw)[:max_chars].strip()
        key = normalized(line)
        if not _WORD.search(line) or key in seen:  # blank, or a fence, rule or marker
            continue
        seen.add(key)
        found.append(line)
        if len(found) == limit:
            break
    return found


def passage(answer: str) -> str:
    """The hypothetical document in a model's answer: without a ``<think>`` block or a
    leading ``Passage:`` label, whitespace trimmed (empty when there is none)."""
    return _LABEL.sub("", _THINK.sub(" ", answer), count=1).strip()
