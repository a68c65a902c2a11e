"""Sentence boundaries (private): where one sentence ends and the next begins."""

from __future__ import annotations

import re

from ._spans import Span, _joined, split_long, tile

__all__ = ["sentence_units"]

# A sentence ends at terminal punctuation (with any closing quotes or brackets) followed
# by whitespace; CJK full stops need no whitespace; a blank line ends a paragraph. The cut
# goes after the whitespace, which stays with the sentence before it. A run of stops is
# tried from its first character only (possessively), so a long one stays linear. A line
# ends at \n, \r\n or a lone \r (old Mac files), so a blank line is two line ends with
# only blanks between them.
_BLANK = r"(?:\r\n?+|\n)[^\S\r\n]*+(?:\r\n?+|\n)"
# . ! ? … ‼ ⁇ ⁈ ⁉, the danda and double danda (Devanagari and other Indic scripts), the
# Arabic question mark and full stop.
_STOPS = r".!?\u2026\u203c\u2047-\u2049\u0964\u0965\u061f\u06d4"
_BOUNDARY = re.compile(
    rf"(?P<stop>(?<![{_STOPS}])[{_STOPS}]++"
    r"[\"'\u201d\u2019\u00bb)\]]*+\s+)"
    r"|(?P<cjk>[\u3002\uff01\uff1f]+[\"'\u201d\u2019\u00bb\u300d\u300f)\]\uff09]*\s*)"
    rf"|(?P<para>{_BLANK}\s*)"
)
_BLANK_LINE = re.compile(_BLANK)


def sentence_cuts(text: str, start: int = 0, end: int | None = None) -> list[int]:
    """Offsets in ``text[start:end]`` where a new sentence begins.

    After ``.``, ``!``, ``?`` (or another stop but the CJK ones) a sentence only ends when
    the next word does not start in lower case, so ``e.g. this`` and ``3.5 m`` stay whole
    (a heuristic: no abbreviation list, no language model).
    """
    stop = len(text) if end is None else end
    cuts: list[int] = []
    for match in _BOUNDARY.finditer(text, start, stop):
        cut = match.end()
        if cut >= stop:
            continue
        if match.lastgroup == "stop" and text[cut].islower() \
                and not _BLANK_LINE.search(match.group()):
            continue
        if _joined(text, cut):  # a mark (or a joiner...) holds on to the space before it
            continue
        cuts.append(cut)
    return cuts


def sentence_units(text: str, span: Span, size: int) -> list[Span]:
    """The sentences tiling ``span``, each cut to at most ``size`` characters."""
    start, end = span
    units: list[Span] = []
    for sentence in tile([c - start for c in sentence_cuts(text, start, end)], end - start):
        units.extend(split_long(text, (sentence[0] + start, sentence[1] + start), size))
    return units
