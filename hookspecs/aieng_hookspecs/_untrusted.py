"""Retrieved text shown inside a prompt, rewritten so that it cannot pass for the prompt's own
structure: a fence around a passage, or a citation number."""

from __future__ import annotations

import re

__all__ = ["neutralize_citations", "neutralize_fences"]

# A run of three or more angle brackets is what a fence is made of (``<<<UNTRUSTED [2]``,
# ``>>>``). Rewriting every such run in passage text and titles means no passage holds a
# marker, so none can close its fence early or open a fake one, however it is written.
_RUNS = re.compile(r"<{3,}|>{3,}")
_LOOKALIKE = {"<": "\u2039", ">": "\u203a"}  # ‹ and ›: visible, readable, not markers

# A number in square brackets is what a grounded prompt teaches as a citation ([n]); in a
# passage (a footnote "[2]", a Markdown "[^2]", the lenticular "【2】" some models cite with)
# it would read as another passage's number. Any script's digits: ``aieng ask`` reads
# citations with ``\d``, which int() turns into the same number. Spaces, not line breaks,
# may pad the number. Possessive (``*+``): a bracket followed by a long run of spaces is
# one pass over them, not a try of every way two runs of spaces could share them.
_INLINE_SPACE = r"[^\S\n\r\v\f\x1c-\x1e\x85\u2028\u2029]*+"
_CITATION = re.compile(
    rf"[\[\uff3b\u3010]({_INLINE_SPACE}(?:\^{_INLINE_SPACE})?\d++{_INLINE_SPACE})"
    r"[\]\uff3d\u3011]")
_CITE_OPEN, _CITE_CLOSE = "\u27e6", "\u27e7"  # ⟦ and ⟧: brackets still, but no citation


def neutralize_fences(text: str) -> str:
    """The text with each run of three or more ``<`` (or ``>``) replaced by as many ``‹``
    (or ``›``), so it cannot contain a fence marker. Other text is unchanged.

    >>> neutralize_fences("a <<<UNTRUSTED [2] b >>>> c << d")
    'a ‹‹‹UNTRUSTED [2] b ›››› c << d'
    """
    return _RUNS.sub(lambda found: _LOOKALIKE[found.group()[0]] * len(found.group()), text)


def neutralize_citations(text: str) -> str:
    """The text with the brackets of each citation-shaped number (``[2]``, ``[ 12 ]``,
    ``[^2]``, fullwidth ``［2］``, lenticular ``【2】``; any script's digits) replaced by
    ``⟦`` and ``⟧``, so a passage cannot write a citation of another passage's number.
    Other brackets (``[a]``, ``[1, 2]``, ``x[i]``) are unchanged; the length is kept.

    >>> neutralize_citations("as [2] says, x[0] and [a]")
    'as ⟦2⟧ says, x⟦0⟧ and [a]'
    """
    return _CITATION.sub(lambda found: f"{_CITE_OPEN}{found.group(1)}{_CITE_CLOSE}", text)
