"""Turning a model's answer into queries: pure functions, tested without a model."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalized", "passage", "rewrites"]

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
# A closing tag left alone: the chat template opened the block, so what precedes is reasoning.
_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(?:```|~~~)")  # a code fence, with or without its language
_BOLD = re.compile(r"\*\*(.+?)\*\*")  # markdown bold: "**2.** ", "1. **rewrite**"
# "1. ", "2) ", "(3) ", "- ", "* ", "• ", "Query 2: ", "Rewrite: "; a marker's punctuation is
# followed by whitespace or the line's end, so "Question-answering", "Version 2.0" and
# "3.5 minutes" are words, not markers.
_MARKER = re.compile(
    r"^\s*(?:\(?\d+\s*[.):](?:\s+|$)|[-*•]\s+"
    r"|(?:query|rewrite|version|question)\s*\d*\s*[:.)-](?:\s+|$))",
    re.IGNORECASE)
_QUOTES = "\"'`“”‘’«»"
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[^\W_]")  # a letter or digit, in any script
_LABEL = re.compile(r"^\s*(?:passage|document|answer)\s*:\s*", re.IGNORECASE)


def normalized(text: str) -> str:
    """``text`` in Unicode compatibility form (NFKC), case-folded, its whitespace collapsed:
    equal queries compare equal, however they were typed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def _without_reasoning(answer: str) -> str:
    """``answer`` without its ``<think>`` blocks, nor what precedes a lone ``</think>``."""
    return _CLOSE.split(_THINK.sub("\n", answer))[-1]


def _clean_line(line: str) -> str:
    line = _MARKER.sub("", line, count=1).strip()
    if len(line) >= 2 and line[0] in _QUOTES and line[-1] in _QUOTES:
        line = line[1:-1].strip()
    return _SPACE.sub(" ", line)


def rewrites(answer: str, original: str, *, limit: int, max_chars: int) -> list[str]:
    """The query rewrites in a model's answer, one per line.

    List markers (``1.``, ``-``, ``Query 2:``), markdown bold and surrounding quotes are
    removed; reasoning (a ``<think>`` block, or what precedes a lone ``</think>``), blank
    lines, code fences, lines without a letter or digit (rules), preambles (a line ending
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
    for raw in _without_reasoning(answer).splitlines():
        if _FENCE.match(raw):
            continue
        line = _BOLD.sub(r"\1", raw)
        if line.rstrip().endswith(":"):
            continue
        line = _clean_line(line)[:max_chars].strip()
        key = normalized(line)
        if not _WORD.search(line) or key in seen:  # blank, or a fence, rule or marker
            continue
        seen.add(key)
        found.append(line)
        if len(found) == limit:
            break
    return found


def passage(answer: str) -> str:
    """The hypothetical document in a model's answer: without reasoning (a ``<think>``
    block, or what precedes a lone ``</think>``), code fences or a leading ``Passage:``
    label, whitespace trimmed (empty when there is none)."""
    lines = _without_reasoning(answer).splitlines()
    text = "\n".join(line for line in lines if not _FENCE.match(line))
    return _LABEL.sub("", text, count=1).strip()
