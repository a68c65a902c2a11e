"""Text every UTF-8 sink takes (SQLite, tantivy, JSON for other languages, HTTP bodies), and
the closest known name to a misspelt one, for error messages."""

from __future__ import annotations

import difflib
import functools
import re
import unicodedata
from collections.abc import Iterable

__all__ = ["HIDDEN", "closest", "did_you_mean", "valid_utf8", "word_chars"]

#: Characters that are not shown but split a word: zero-width ones, the word joiner and
#: its invisible operators, the byte order mark, the soft hyphen, the combining grapheme
#: joiner, the Mongolian vowel separator and the bidi controls. A guard or a routing rule
#: reading untrusted text drops them first (``pass\u200bword`` is ``password``).
HIDDEN = re.compile("[\u00ad\u034f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
                    "\u2066-\u2069\ufeff]")


@functools.cache
def word_chars() -> str:
    """A regular-expression class of the characters of a word: ``\\w`` and the combining
    marks (Unicode category M) that ``\\w`` leaves out (Indic vowel signs and viramas, a
    decomposed accent, the dot of a lower-cased İ), from the running Python's Unicode
    tables. ``word_chars() + "+"`` matches a word (हिन्दी, a decomposed "café", whole);
    ``(?<!...)`` / ``(?!...)`` of it, a word's edge. Built once (a few tens of ms)."""
    ranges: list[list[int]] = []
    for block in (range(0x300, 0x20000), range(0xE0100, 0xE01F0)):
        for code in block:
            if unicodedata.category(chr(code))[0] != "M":
                continue
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "[\\w" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges) + "]"


def valid_utf8(text: str) -> str:
    """``text`` with each lone surrogate as U+FFFD, so that it encodes as UTF-8.

    A Python ``str`` may hold surrogates: bytes that were not UTF-8, decoded with
    ``surrogateescape`` (a file, a process's output), or a JSON ``"\\ud800"`` escape. A
    high and a low surrogate side by side are joined into the character they spell. Text
    that encodes already is returned as it is (the common case costs one encode).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def closest(word: object, choices: Iterable[str]) -> str | None:
    """The choice closest to a misspelt ``word`` (case ignored; ``difflib``'s ratio at least
    0.75), or ``None`` when none is close or ``word`` is no string."""
    if not isinstance(word, str):
        return None
    by_case = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(by_case), n=1, cutoff=0.75)
    return by_case[close[0]] if close else None


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to a misspelt ``word`` (see
    :func:`closest`), else ``""``: to follow the word in an error message."""
    found = closest(word, choices)
    return f" (did you mean {found!r}?)" if found is not None else ""

