"""Turning a model's answer into queries: pure functions, tested without a model."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator

__all__ = ["normalized", "passage", "rewrites"]

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
# A closing tag left alone: the chat template opened the block, so what precedes is reasoning.
_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(?:```|~~~)")  # a code fence, with or without its language
_BOLD = re.compile(r"\*\*(.+?)\*\*")  # markdown bold: "**2.** ", "1. **rewrite**"
_LABELS = (r"(?:(?:search|rewritten|alternative)\s+)?"
           r"(?:query|rewrite|version|question|variation|paraphrase)")
# A list item's marker: "1. ", "2) ", "(3) ", "4: ", "1、", "２．", "- ", "* ", "• ", "+ ",
# "Query 2: ". ASCII punctuation is followed by whitespace or the line's end, so
# "Question-answering", "Version 2.0" and "3.5 minutes" are words, not markers.
_ITEM = re.compile(
    r"^\s*(?:[(（]?\d+\s*(?:[.):](?:\s+|$)|[、．）：]\s*)|[-*•+–◦▪‣](?:\s+|$)"
    rf"|{_LABELS}\s*#?\d+\s*[:.)-](?:\s+|$))",
    re.IGNORECASE)
# "1 - ": a marker only where such lines count 1, 2, 3, ... ("2024 - 2025 budget" is a query).
_DASH = re.compile(r"^\s*(\d+)\s*[-–—](?:\s+|$)")
# A label without a number ("Rewrite: ", "Question - "): removed, but it makes no list.
# Possessive blanks and digits: a model's long run of blanks after a label ("query" and
# 20,000 spaces) was split between the two ``\s*`` in every way, quadratic time.
_LABEL = re.compile(rf"^\s*+{_LABELS}\s*+#?\d*+\s*+[:.)-](?:\s+|$)", re.IGNORECASE)
_HEADING = re.compile(r"^\s*#{2,6}\s")  # "## Rewrites"; "# of minutes" is a query
_COLONS = (":", "：")  # a preamble's end, full-width in Chinese and Japanese answers
_QUOTES = "\"'`“”‘’«»„「」『』"
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[^\W_]")  # a letter or digit, in any script
_FINAL = " .?!。"  # "how long?" and "how long" are one query (NFKC makes "？" a "?")
_EMPHASIS = ("__", "*", "_")  # markdown italic or bold ("**" goes with _BOLD)
# A passage's leading label, bold, italic or a heading: "**Passage:**", "Answer:",
# "## Hypothetical document" alone on its line.
# Possessive blanks, for the same reason as _LABEL's (blank runs on either side of an absent
# ``**`` took minutes).
_PASSAGE_LABEL = re.compile(
    r"^\s*+(?:#{1,6}[ \t]*+)?[*_]{0,2}[ \t]*+(?:hypothetical[ \t]++)?"
    r"(?:passage|document|answer)"
    r"[ \t]*+[*_]{0,2}[ \t]*+(?::[ \t]*+[*_]{0,2}|(?=\n))\s*",
    re.IGNORECASE)


# A first line announcing the passage: "Sure! Here's a short passage:", "Here is the
# answer:". Only with "here" and a label word before its final colon: "It takes three
# steps:" is the passage's own.
_ANNOUNCEMENT = re.compile(
    r"\A[^\S\n]*[^\n:：]*\bhere\b[^\n:：]*\b(?:passage|document|answer)\b[^\n:：]*[:：]"
    r"[^\S\n]*\n", re.IGNORECASE)
_ANNOUNCEMENT_CHARS = 200


def normalized(text: str) -> str:
    """``text`` in Unicode compatibility form (NFKC), case-folded, its whitespace collapsed
    and its final ``.``, ``?`` or ``!`` removed: equal queries compare equal, however they
    were typed."""
    text = _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()
    return text.rstrip(_FINAL).casefold()


def _without_reasoning(answer: str) -> str:
    """``answer`` without its ``<think>`` blocks, nor what precedes a lone ``</think>``."""
    return _CLOSE.split(_THINK.sub("\n", answer))[-1]


def _unquoted(text: str) -> str:
    """``text`` without quotes enclosing all of it: ``"a" or "b"`` keeps its own, and so
    does ``'rock 'n' roll'``; an apostrophe between letters (``'it's'``) is no quote."""
    if len(text) < 2 or text[0] not in _QUOTES or text[-1] not in _QUOTES:
        return text
    inner = text[1:-1]
    for i, char in enumerate(inner):
        if char in (text[0], text[-1]) and not (
                0 < i < len(inner) - 1 and inner[i - 1].isalnum() and inner[i + 1].isalnum()):
            return text
    return inner.strip()


def _unemphasized(text: str) -> str:
    """``text`` without markdown emphasis around all of it (``*a*``, ``__a__``): ``*a* or
    *b*`` keeps its own."""
    for mark in _EMPHASIS:
        inner = text[len(mark):-len(mark)]
        if (len(text) > 2 * len(mark) and text.startswith(mark) and text.endswith(mark)
                and mark[0] not in inner and inner == inner.strip()):
            return inner
    return text


def _indent(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip())


def _dash_numbers(lines: list[str]) -> bool:
    """Whether the lines starting ``N - `` count 1, 2, 3, ... in order: a list."""
    numbers = [match[1] for line in lines if (match := _DASH.match(line))]
    return bool(numbers) and all(
        len(number) < 4 and int(number) == i for i, number in enumerate(numbers, 1))


def _items(lines: list[str]) -> Iterator[tuple[str, int | None]]:
    """Each line with a word, its marker, label, emphasis and quotes removed, with the
    indentation of its list marker (``None``: no list item). A line following a marker
    alone on its line is that marker's item. Headings and preambles (a line ending in
    ``:``) are dropped."""
    dashed = _dash_numbers(lines)
    pending: int | None = None  # the indentation of a marker alone on its line
    for line in lines:
        marker = _ITEM.match(line) or (_DASH.match(line) if dashed else None)
        rest = line[marker.end():] if marker else line
        if marker and not rest.strip():  # "1." alone: the item is on the next line
            pending = _indent(line)
            continue
        if _HEADING.match(line) or line.rstrip().endswith(_COLONS):
            continue
        text = _LABEL.sub("", rest, count=1).strip()
        text = _SPACE.sub(" ", _unquoted(_unemphasized(text)))
        if not _WORD.search(text):  # blank, or a rule
            continue
        yield text, _indent(line) if marker else pending
        pending = None


def rewrites(answer: str, original: str, *, limit: int, max_chars: int) -> list[str]:
    """The query rewrites in a model's answer, one per line.

    List markers (``1.``, ``-``, ``+``, ``Query 2:``, ``1 -`` where such lines count from
    1), labels (``Rewrite:``), markdown bold and quotes around a whole line are removed;
    reasoning (a ``<think>`` block, or what precedes a lone ``</think>``), blank lines,
    code fences, lines without a letter or digit (rules), preambles (a line ending in
    ``:``), repeats and the original query itself are dropped; each rewrite is cut to
    ``max_chars`` characters. When lines carry list markers, the lines without one are
    chat ("Sure! Here are three queries.", "Let me know if you need more!") and are
    dropped, and so are items nested deeper than the others (notes under an item);
    without any marker, every line is a rewrite.

    :param answer: the model's text.
    :param original: the user's query.
    :param limit: the most rewrites to keep.
    :param max_chars: the longest rewrite kept.
    :returns: at most ``limit`` distinct rewrites, in the answer's order.
    """
    if limit < 1 or max_chars < 1:
        return []
    kept = [raw for raw in _without_reasoning(answer).splitlines() if not _FENCE.match(raw)]
    listed = _json_strings(kept)
    if listed is not None:  # a JSON array of the queries: one per string
        kept = [" ".join(text.split()) for text in listed]
    lines = [_BOLD.sub(r"\1", raw) for raw in kept]
    items = list(_items(lines))
    indents = [indent for _, indent in items if indent is not None]
    seen = {normalized(original)}
    found: list[str] = []
    for text, indent in items:
        # Within a list, chat has no marker and a note is nested: right-aligned numbers
        # (" 9." over "10.") are one column apart, nested items at least two.
        if indents and (indent is None or indent > min(indents) + 1):
            continue
        line = text[:max_chars].strip()
        key = normalized(line)
        if not _WORD.search(line) or key in seen:
            continue
        seen.add(key)
        found.append(line)
        if len(found) == limit:
            break
    return found


def _json_strings(lines: list[str]) -> list[str] | None:
    """The strings of a JSON array (or of the one array in a JSON object, such as
    ``{"queries": [...]}``) making up ``lines`` from the first one starting with ``[`` or
    ``{`` to the last one ending with ``]`` or ``}``; ``None`` when there is none."""
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith(("[", "{"))]
    ends = [i for i, line in enumerate(lines) if line.rstrip().endswith(("]", "}"))]
    if not starts or not ends or ends[-1] < starts[0]:
        return None
    try:
        value = json.loads("\n".join(lines[starts[0]:ends[-1] + 1]))
    except (ValueError, RecursionError):  # nested deeper than the interpreter's limit
        return None
    if isinstance(value, dict):
        arrays = [item for item in value.values() if isinstance(item, list)]
        value = arrays[0] if len(arrays) == 1 else None
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return value
    return None


def passage(answer: str) -> str:
    """The hypothetical document in a model's answer: without reasoning (a ``<think>``
    block, or what precedes a lone ``</think>``), code fences, a first line announcing
    it (``Sure! Here's a passage:``) or a leading label (``Passage:``, ``**Answer:**``,
    ``Hypothetical document:``, bold or not), whitespace trimmed (empty when there is
    none)."""
    lines = _without_reasoning(answer).splitlines()
    text = "\n".join(line for line in lines if not _FENCE.match(line)).lstrip()
    if len(text.partition("\n")[0]) <= _ANNOUNCEMENT_CHARS:  # a short line: cheap to match
        text = _ANNOUNCEMENT.sub("", text, count=1)
    return _PASSAGE_LABEL.sub("", text, count=1).strip()
