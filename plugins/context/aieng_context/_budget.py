"""Choosing the passages that fit a token budget: best first, the last one cut to fit."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

import attrs
from aieng_hookspecs.types import Hit

from ._fence import fence, neutralize
from ._tokens import TokenCounter

__all__ = ["Passage", "select"]

# A passage longer than this many characters per token of room left is cut without being
# counted whole: counting megabytes on every request would cost more than it could gain
# (only text that is nearly all whitespace fits in fewer tokens than this).
_CHARS_PER_TOKEN_CAP = 32
_MIN_CLIP = 4096
_WORD_END = re.compile(r"\S(?=\s)")
_ZWJ = "\u200d"


@attrs.frozen
class Passage:
    """A hit as the context shows it.

    :param hit: the hit.
    :param text: a prefix of the hit's text: all of it, or the cut that fitted.
    :param cut: whether ``text`` was cut to fit.
    """

    hit: Hit
    text: str
    cut: bool = False


def select(hits: Sequence[Hit], *, count: TokenCounter, room: int, min_passage_tokens: int,
           separator: str = "\n\n") -> list[Passage]:
    """The passages to show, in the order of ``hits`` (best first).

    Whole passages are taken while their fenced blocks fit in ``room`` tokens, each block
    after the first counted with the ``separator`` before it. The first passage that does
    not fit whole is cut at the last word boundary that fits, and kept when at least
    ``min_passage_tokens`` of its text remain; it and every lower-ranked passage after it
    are otherwise dropped. The counts of the parts are added up: a tokenizer may count
    the joined whole a little differently, which the builder checks.
    """
    chosen: list[Passage] = []
    used = 0
    for n, hit in enumerate(hits, start=1):
        left = room - used
        if left <= 0:
            break
        title, text = hit.document.title, hit.document.text
        lead = separator if chosen else ""
        clip = max(left * _CHARS_PER_TOKEN_CAP, _MIN_CLIP)
        if len(text) <= clip:
            tokens = count(lead + fence(n, text, title=title))
            if tokens <= left:
                chosen.append(Passage(hit, text))
                used += tokens
                continue

        def fits(prefix: str, n: int = n, title: str = title, left: int = left,
                 lead: str = lead) -> bool:
            return count(lead + fence(n, prefix, title=title, cut=True)) <= left

        def enough(prefix: str) -> bool:
            return count(neutralize(prefix)) >= min_passage_tokens

        cut = _cut(text, min(clip, len(text) - 1), fits, enough)
        if cut is not None:
            chosen.append(Passage(hit, cut, cut=True))
        break
    return chosen


def _cut(text: str, limit: int, fits: Callable[[str], bool],
         enough: Callable[[str], bool]) -> str | None:
    """The longest prefix of at most ``limit`` characters that fits and is enough: cut at
    the end of a word (followed by whitespace) when one will do, else between characters
    (a text that is one giant "word": a hash, base64, a list of URLs without spaces),
    never inside a character as users see it (see :func:`_whole`)."""
    ends = [m.end() for m in _WORD_END.finditer(text, 0, limit + 1)]
    end = _largest(ends, text, fits)
    if end is not None and enough(text[:end]):
        return text[:end]
    chars = [i for i in range(1, limit + 1) if _whole(text, i)] or range(1, limit + 1)
    end = _largest(chars, text, fits)
    if end is not None and enough(text[:end]):
        return text[:end]
    return None


def _whole(text: str, cut: int) -> bool:
    """Whether cutting ``text`` at ``cut`` (``0 < cut < len(text)``) keeps each character
    whole: not between the halves of a UTF-16 surrogate pair, not in front of a mark of
    any kind (an accent, an Indic vowel sign, a variation selector), an emoji skin tone
    modifier or a zero-width joiner, nor right after a joiner."""
    before, after = text[cut - 1], text[cut]
    if "\ud800" <= before <= "\udbff" and "\udc00" <= after <= "\udfff":
        return False
    return not (unicodedata.category(after)[0] == "M" or after == _ZWJ or before == _ZWJ
                or "\U0001f3fb" <= after <= "\U0001f3ff")


def _largest(positions: Sequence[int], text: str, fits: Callable[[str], bool]) -> int | None:
    """The largest position whose prefix fits, by galloping then bisecting (the counts of
    prefixes grow with their length, so fitting is monotone)."""
    if not positions or not fits(text[: positions[0]]):
        return None
    good, step = 0, 1
    while good + step < len(positions) and fits(text[: positions[good + step]]):
        good += step
        step *= 2
    bad = min(good + step, len(positions))
    while bad - good > 1:
        middle = (good + bad) // 2
        if fits(text[: positions[middle]]):
            good = middle
        else:
            bad = middle
    return positions[good]
