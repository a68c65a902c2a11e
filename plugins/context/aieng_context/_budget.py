"""Choosing the passages that fit a token budget: best first, the last one cut to fit."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

import attrs
from aieng_hookspecs.types import Hit

from ._fence import fence, shown
from ._tokens import TokenCounter

__all__ = ["Passage", "select"]

# A passage longer than this many characters per token of room left is cut without being
# counted whole: counting megabytes on every request would cost more than it could gain
# (only text that is nearly all whitespace fits in fewer tokens than this).
_CHARS_PER_TOKEN_CAP = 32
_MIN_CLIP = 4096
_WORD_END = re.compile(r"\S(?=\s)")
_ZWJ = "\u200d"
# Regional indicators: two make a flag (🇫🇷); Unicode's grapheme rules pair them from the
# start of a run (UAX #29, GB12-13).
_RI_FIRST, _RI_LAST = "\U0001f1e6", "\U0001f1ff"
# Tag characters: they spell a subdivision flag after 🏴 (🏴󠁧󠁢󠁥󠁮󠁧󠁿), and extend it.
_TAG_FIRST, _TAG_LAST = "\U000e0020", "\U000e007f"
# The viramas that link an Indic conjunct (क्ष is one character as users see it: a
# letter, a virama, a letter), in Devanagari, Bengali, Gujarati, Oriya, Telugu and
# Malayalam (Indic_Conjunct_Break=Linker, UAX #29 GB9c).
_LINKERS = frozenset("\u094d\u09cd\u0acd\u0b4d\u0c4d\u0d4d")
# Hangul conjoining jamo, leading (L), vowels (V) and trailing (T): a syllable written
# with them is one character (UAX #29, GB6-8), like a precomposed syllable (LV, LVT).
_JAMO_L = (("\u1100", "\u115f"), ("\ua960", "\ua97c"))
_JAMO_V = (("\u1160", "\u11a7"), ("\ud7b0", "\ud7c6"))
_JAMO_T = (("\u11a8", "\u11ff"), ("\ud7cb", "\ud7fb"))


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
            return count(shown(prefix)) >= min_passage_tokens

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
    chars = _character_ends(text, limit) or range(1, limit + 1)
    end = _largest(chars, text, fits)
    if end is not None and enough(text[:end]):
        return text[:end]
    return None


def _character_ends(text: str, limit: int) -> list[int]:
    """The positions ``1..limit`` (``limit < len(text)``) where a cut keeps each character
    whole (see :func:`_whole`), and not between the two regional indicators of a flag."""
    ends: list[int] = []
    indicators = 0  # regional indicators in a row just before the position
    for cut in range(1, limit + 1):
        before = text[cut - 1]
        indicators = indicators + 1 if _RI_FIRST <= before <= _RI_LAST else 0
        if indicators % 2 and _RI_FIRST <= text[cut] <= _RI_LAST:
            continue  # inside a flag
        if _whole(text, cut):
            ends.append(cut)
    return ends


def _in(char: str, ranges: tuple[tuple[str, str], ...]) -> bool:
    return any(low <= char <= high for low, high in ranges)


def _hangul(char: str) -> str:
    """The Hangul syllable part ``char`` is: ``L``, ``V``, ``T``, ``LV``, ``LVT``, or
    ``""`` for any other character."""
    if "\uac00" <= char <= "\ud7a3":
        return "LVT" if (ord(char) - 0xAC00) % 28 else "LV"
    if char < "\u1100" or "\u11ff" < char < "\ua960" or char > "\ud7fb":
        return ""
    return ("L" if _in(char, _JAMO_L) else "V" if _in(char, _JAMO_V)
            else "T" if _in(char, _JAMO_T) else "")


def _joined_jamo(before: str, after: str) -> bool:
    """Whether ``before`` and ``after`` belong to one Hangul syllable (UAX #29, GB6-8)."""
    first = _hangul(before)
    if not first:
        return False
    second = _hangul(after)
    return (first == "L" and second in ("L", "V", "LV", "LVT")
            or first in ("LV", "V") and second in ("V", "T")
            or first in ("LVT", "T") and second == "T")


def _whole(text: str, cut: int) -> bool:
    """Whether cutting ``text`` at ``cut`` (``0 < cut < len(text)``) keeps each character
    whole: not between the halves of a UTF-16 surrogate pair, not in front of a mark of
    any kind (an accent, an Indic vowel sign, a variation selector), an emoji skin tone
    modifier, a tag character or a zero-width joiner, nor right after a joiner, nor
    inside a Hangul syllable written in conjoining jamo or an Indic conjunct (a virama
    followed by a letter of its script). (Flags need the run of regional indicators
    before the cut: :func:`_character_ends`.)"""
    before, after = text[cut - 1], text[cut]
    if "\ud800" <= before <= "\udbff" and "\udc00" <= after <= "\udfff":
        return False
    if before in _LINKERS and unicodedata.category(after) == "Lo" \
            and ord(after) >> 7 == ord(before) >> 7:  # the same 128-point script block
        return False
    return not (unicodedata.category(after)[0] == "M" or after == _ZWJ or before == _ZWJ
                or "\U0001f3fb" <= after <= "\U0001f3ff"
                or _TAG_FIRST <= after <= _TAG_LAST or _joined_jamo(before, after))


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
