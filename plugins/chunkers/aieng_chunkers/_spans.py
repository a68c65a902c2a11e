"""Spans of text and how chunks are packed from them (private).

Every chunker here cuts a text into *units* (token cells, sentences, markdown blocks) that
tile it: each unit is a ``(start, end)`` span, the first starts at 0, each starts where the
previous ended, the last ends at ``len(text)``. Chunks are runs of consecutive units, so
their spans tile the text too, save the units two chunks share as overlap. That is what
makes ``text[chunk.start:chunk.end] == chunk.text`` and exact reassembly hold by
construction.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aieng_hookspecs.types import Chunk, Document

__all__ = ["Span", "chunks_of", "pack", "split_long", "tile"]

Span = tuple[int, int]


def tile(cuts: Iterable[int], length: int) -> list[Span]:
    """The units between cut positions: ``[0, c1), [c1, c2), ..., [cn, length)``.

    Cuts outside ``(0, length)`` and repeated cuts are ignored.
    """
    spans: list[Span] = []
    start = 0
    for cut in sorted(set(cuts)):
        if start < cut < length:
            spans.append((start, cut))
            start = cut
    if start < length:
        spans.append((start, length))
    return spans


def split_long(text: str, span: Span, size: int) -> list[Span]:
    """``span`` cut into pieces of at most ``size`` characters.

    A piece ends after the last whitespace that fits, so words stay whole when they can;
    a word longer than ``size`` is cut, but not inside a character as users see it (see
    :func:`_joined`), unless that one character is longer than ``size`` (a letter under
    a hundred accents): it is then cut at ``size``.
    """
    start, end = span
    pieces: list[Span] = []
    while end - start > size:
        limit = start + size
        cut = limit
        while cut > start + 1 and not _space_cut(text, cut):
            cut -= 1
        if not _space_cut(text, cut):  # no whitespace in reach: cut the word
            cut = limit
            while cut > start + 1 and _joined(text, cut, start):
                cut -= 1
            if _joined(text, cut, start):  # one character longer than size: cut at size
                cut = limit
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


_ZWJ = "\u200d"
_RI = ("\U0001f1e6", "\U0001f1ff")  # regional indicators: two make a flag
# Grapheme_Extend characters outside the mark categories: ZWNJ, halfwidth katakana voiced
# sound marks, emoji tags (a subdivision flag's letters). Spacing marks of category Lo.
_EXTEND = frozenset("\u200c\uff9e\uff9f\u0e33\u0eb3")
_TAGS = ("\U000e0020", "\U000e007f")
# Prepended concatenation marks (Arabic number signs...): they join what follows.
_PREPEND = frozenset("\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891"
                     "\u08e2\u0d4e\U000110bd\U000110cd\U000111c2\U000111c3\U0001193f"
                     "\U00011941\U00011a84\U00011a85\U00011a86\U00011a87\U00011a88"
                     "\U00011a89\U00011d46")
# The viramas that link a conjunct (Devanagari, Bengali, Gujarati, Oriya, Telugu,
# Malayalam: Indic_Conjunct_Break=Linker).
_LINKERS = frozenset("\u094d\u09cd\u0acd\u0b4d\u0c4d\u0d4d")


def _after_space(text: str, cut: int) -> bool:
    """Whether ``cut`` follows whitespace, other than the ``\r`` of a ``\r\n``."""
    return text[cut - 1].isspace() and text[cut - 1:cut + 1] != "\r\n"


def _space_cut(text: str, cut: int) -> bool:
    """Whether ``cut`` follows whitespace and splits no character: a space followed by a
    combining mark or a skin tone modifier is one character as users see it."""
    return _after_space(text, cut) and not _joined(text, cut)


def _joined(text: str, cut: int, floor: int = 0) -> bool:
    """Whether cutting ``text`` at ``cut`` would split what is seen as one character: in
    front of a mark of any kind (an accent, an Indic vowel sign, a variation selector, an
    enclosing keycap: Unicode categories Mn, Mc, Me, whatever their combining class) or
    another extending character (an emoji tag, ZWNJ), an emoji skin tone modifier or a
    zero-width joiner, or right after a joiner or a prepended mark, inside a flag (a pair
    of regional indicators, paired from the start of their run, looked for no further
    back than ``floor``, a known boundary), a Hangul syllable written in jamo, an Indic
    conjunct (a virama between two letters), or between the halves of a UTF-16 surrogate
    pair (text decoded with ``surrogatepass``) or of a ``\r\n`` line ending. Right after
    a line break or another control character (what Unicode's grapheme rules always
    break after, GB4), only the ``\r\n`` is whole."""
    before, after = text[cut - 1], text[cut]
    if unicodedata.category(before) in ("Cc", "Zl", "Zp"):
        return before == "\r" and after == "\n"
    if (unicodedata.category(after)[0] == "M" or after == _ZWJ or before == _ZWJ
            or after in _EXTEND or _TAGS[0] <= after <= _TAGS[1]
            or (before == "\r" and after == "\n")
            or "\U0001f3fb" <= after <= "\U0001f3ff"
            or ("\ud800" <= before <= "\udbff" and "\udc00" <= after <= "\udfff")):
        return True
    if before in _PREPEND:
        return unicodedata.category(after) not in ("Cc", "Zl", "Zp")
    if before in _LINKERS:  # a conjunct: a letter of the virama's own script follows
        return unicodedata.category(after) == "Lo" and ord(after) >> 7 == ord(before) >> 7
    if _RI[0] <= before <= _RI[1] and _RI[0] <= after <= _RI[1]:
        run = cut - 1
        while run > floor and _RI[0] <= text[run - 1] <= _RI[1]:
            run -= 1
        return (cut - run) % 2 == 1
    return _hangul_joined(before, after)


def _hangul_joined(before: str, after: str) -> bool:
    """Whether two Hangul jamo (or a syllable and a jamo) make one syllable (GB6 to GB8)."""
    kind, following = _jamo(before), _jamo(after)
    if kind == "L":
        return following in ("L", "V", "LV", "LVT")
    if kind in ("LV", "V"):
        return following in ("V", "T")
    return kind in ("LVT", "T") and following == "T"


def _jamo(char: str) -> str:
    """The Hangul syllable type of ``char`` (``L``, ``V``, ``T``, ``LV``, ``LVT``), or ``""``."""
    if "\u1100" <= char <= "\u115f" or "\ua960" <= char <= "\ua97c":
        return "L"
    if "\u1160" <= char <= "\u11a7" or "\ud7b0" <= char <= "\ud7c6":
        return "V"
    if "\u11a8" <= char <= "\u11ff" or "\ud7cb" <= char <= "\ud7fb":
        return "T"
    if "\uac00" <= char <= "\ud7a3":
        return "LV" if (ord(char) - 0xAC00) % 28 == 0 else "LVT"
    return ""


def pack(units: Sequence[Span], size: int, overlap: int = 0,
         measure: Callable[[Span], int] | None = None, *,
         overlap_measured: bool = False) -> list[Span]:
    """Group consecutive units into chunks whose total measure is at most ``size``.

    :param units: spans tiling a text, each of measure at most ``size`` (a unit measuring
        more, such as one character a tokenizer split into more tokens than ``size``, is a
        chunk of its own).
    :param size: the most a chunk may measure.
    :param overlap: the most units a chunk repeats from the end of the previous one; fewer
        when they would not fit with at least one new unit.
    :param measure: a unit's measure; its length in characters by default.
    :param overlap_measured: count ``overlap`` in the units' measure instead of in units.
    :returns: the chunks' spans, in order.
    """
    if not units:
        return []
    weight = measure if measure is not None else (lambda unit: unit[1] - unit[0])
    weights = [weight(unit) for unit in units]
    chunks: list[Span] = []
    first = 0
    while True:
        total, last = weights[first], first + 1
        while last < len(units) and total + weights[last] <= size:
            total += weights[last]
            last += 1
        chunks.append((units[first][0], units[last - 1][1]))
        if last == len(units):
            return chunks
        # Carry up to ``overlap`` units over, always moving forward, always fitting the
        # next new unit.
        if overlap_measured:
            carried, room = last, overlap
            while carried > first + 1 and weights[carried - 1] <= room:
                carried -= 1
                room -= weights[carried]
            first = carried
        else:
            first = max(first + 1, last - overlap)
        while first < last and sum(weights[first:last + 1]) > size:
            first += 1


def chunks_of(document: Document, spans: Sequence[Span],
              metadata: Sequence[Mapping[str, Any]] | None = None) -> list[Chunk]:
    """The chunks of ``document`` at these spans, with ids ``<document id>#<n>``."""
    text = document.text
    return [
        Chunk(id=f"{document.id}#{index}", document_id=document.id, text=text[start:end],
              start=start, end=end, metadata=dict(metadata[index]) if metadata else {})
        for index, (start, end) in enumerate(spans)
    ]
