"""Fencing retrieved text as untrusted data, with a fence the text cannot close."""

from __future__ import annotations

from string import Template

from aieng_hookspecs import neutralize_citations, neutralize_fences

__all__ = ["FENCE_CLOSE", "FENCE_OPEN", "fence", "neutralize", "neutralize_citations",
           "one_line", "shown"]

#: Every passage starts with a line beginning with this marker (``<<<UNTRUSTED [n]``) ...
FENCE_OPEN = "<<<"
#: ... and ends with a line holding only this one.
FENCE_CLOSE = ">>>"

_PASSAGE = Template("<<<UNTRUSTED [$n]$cut\n$title_line$text\n>>>")
_TITLE_LINE = Template("Title: $title\n")
_CUT_NOTE = " (excerpt, cut to fit)"
_MAX_TITLE_CHARS = 200


#: The text with fence markers rewritten (:func:`aieng_hookspecs.neutralize_fences`).
neutralize = neutralize_fences


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
