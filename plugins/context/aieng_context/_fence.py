"""Fencing retrieved text as untrusted data, with a fence the text cannot close."""

from __future__ import annotations

import re
from string import Template

__all__ = ["FENCE_CLOSE", "FENCE_OPEN", "fence", "neutralize", "one_line"]

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
    neutralized here (:func:`neutralize`, :func:`one_line`).
    """
    safe_title = one_line(title)
    return _PASSAGE.substitute(
        n=n, cut=_CUT_NOTE if cut else "",
        title_line=_TITLE_LINE.substitute(title=safe_title) if safe_title else "",
        text=neutralize(text))
