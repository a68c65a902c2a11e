"""Text every UTF-8 sink takes: SQLite, tantivy, JSON for other languages, HTTP bodies."""

from __future__ import annotations

__all__ = ["valid_utf8"]


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
