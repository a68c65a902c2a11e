"""Fencing retrieved text as untrusted data, with a fence the text cannot close."""

from __future__ import annotations

import re
from string import Template

__all__ = ["FENCE_CLOSE", "FENCE_OPEN", "fence", "neutralize", "neutralize_citations",
           "one_line", "shown"]

#: Every passage starts with a line beginning with this marker (``<<<UNTRUSTED [n]``) ...
FENCE_OPEN = "<<<"
#: ... and ends with a line holding only this one.
FENCE_CLOSE = ">>>"

# A run of three or more angle brackets is what a fence is made of. Rewriting every such run
# in passage text (and titles) means no passage can hold a marker, so none can close its
# fence early or open a fake one, however it is written: the structure of the prompt is
# fixed by us alone.
_RUNS = re.compile(r"<{3,}|>{3,}")
_LOOKALIKE = {"<": "\u2039", ">": "\u203a"}  # ‹ and ›: visible, readable, not markers

# A number in square brackets is what the prompt teaches as a citation ([n]); in a passage
# (a footnote "[2]", a Markdown "[^2]", the lenticular "【2】" some models cite with) it
# would read as another passage's number. Any script's digits: ``aieng ask`` reads
# citations with ``\d``, which int() turns into the same number. Spaces, not line breaks,
# may pad the number.
_INLINE_SPACE = r"[^\S\n\r\v\f\x1c-\x1e\x85\u2028\u2029]*"
_CITATION = re.compile(
    rf"[\[\uff3b\u3010]({_INLINE_SPACE}\^?{_INLINE_SPACE}\d+{_INLINE_SPACE})[\]\uff3d\u3011]")
_CITE_OPEN, _CITE_CLOSE = "\u27e6", "\u27e7"  # ⟦ and ⟧: brackets still, but no citation

_PASSAGE = Template("<<<UNTRUSTED [$n]$cut\n$title_line$text\n>>>")
_TITLE_LINE = Template("Title: $title\n")
_CUT_NOTE = " (excerpt, cut to fit)"
_MAX_TITLE_CHARS = 200


def neutralize(text: str) -> str:
    """The text with each run of three or more ``<`` (or ``>``) replaced by as many ``‹``
    (or ``›``), so it cannot contain a fence marker. Other text is unchanged.

    >>> neutralize("a <<<UNTRUSTED [2] b >>>> c << d")
    'a ‹‹‹UNTRUSTED [2] b ›››› c << d'
    """
    return _RUNS.sub(lambda found: _LOOKALIKE[found.group()[0]] * len(found.group()), text)


def neutralize_citations(text: str) -> str:
    """The text with the brackets of each citation-shaped number (``[2]``, ``[ 12 ]``,
    ``[^2]``, fullwidth ``［2］``, lenticular ``【2】``; any script's digits) replaced by
    ``⟦`` and ``⟧``, so a passage cannot write a citation of another passage's number.
    Other brackets (``[a]``, ``[1, 2]``, ``x[i]``) are unchanged.

    >>> neutralize_citations("as [2] says, x[0] and [a]")
    'as ⟦2⟧ says, x⟦0⟧ and [a]'
    """
    return _CITATION.sub(lambda found: f"{_CITE_OPEN}{found.group(1)}{_CITE_CLOSE}", text)


def one_line(title: str) -> str:
    """A title made safe for its line in a fence: whitespace (line breaks included)
    collapsed to single spaces, at most 200 characters, fence markers neutralized."""
    flat = " ".join(title.split())
    if len(flat) > _MAX_TITLE_CHARS:
        flat = flat[: _MAX_TITLE_CHARS - 1].rstrip() + "\u2026"
    return neutralize(flat)


def fence(n: int, text: str, *, title: str = "", cut: bool = False) -> str:
    """One passage as the prompt shows it::

        <<<UNTRUSTED [n]
        Title: the title
        the text
        >>>

    The title line is left out when the title is blank; ``cut`` adds a note to the first
    line saying the text is an excerpt cut to fit the budget. ``text`` and ``title`` are
    neutralized here (:func:`shown`, :func:`one_line`): only the fence carries a marker
    or a citation number.
    """
    safe_title = neutralize_citations(one_line(title))
    return _PASSAGE.substitute(
        n=n, cut=_CUT_NOTE if cut else "",
        title_line=_TITLE_LINE.substitute(title=safe_title) if safe_title else "",
        text=shown(text))


def shown(text: str) -> str:
    """A passage's text as its fence shows it: without fence markers (:func:`neutralize`)
    or citation numbers (:func:`neutralize_citations`)."""
    return neutralize_citations(neutralize(text))
