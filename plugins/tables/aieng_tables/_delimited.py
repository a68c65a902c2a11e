"""Reading delimited text (CSV, TSV) into records, with no limit on a field's size.

The standard library's ``csv`` module refuses fields over ``csv.field_size_limit()``
(128 KiB by default), a process-wide setting that a library must not change behind its
caller's back; this reader has no such limit. It follows RFC 4180 and reads what
spreadsheets write: fields quoted with ``"`` (doubled inside to escape it) may hold the
delimiter and line breaks; records end with ``\\r\\n``, ``\\n`` or ``\\r``; text after a
closing quote is kept, as the ``csv`` module keeps it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["TableError", "read_records", "sniff_delimiter"]

_QUOTED = re.compile(r'"([^"]*+(?:""[^"]*+)*+)"')  # possessive: never backtracks
_DELIMITERS = (",", ";", "\t", "|")
_LINE_END = re.compile(r"\r\n?|\n")  # what ends a record: \r\n, \r or \n
# Text up to the next quote or line end, after the quotes inside a field it starts with.
_PLAIN = re.compile(r'"*[^"\r\n]*')


class TableError(ValueError):
    """A table that cannot be read: the message says where and why."""


def read_records(text: str, delimiter: str = ",", *, quoting: bool = True) -> Iterator[list[str]]:
    """The records of delimited text, each a list of its fields (a blank line is ``[""]``).

    :param delimiter: the one character between fields.
    :param quoting: whether ``"`` quotes fields (TSV files usually do not quote).
    :raises TableError: for a quoted field that is never closed, naming its line.
    """
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise ValueError(f"the delimiter must be one character other than a quote or a line "
                         f"break, got {delimiter!r}")
    unquoted = re.compile(f"[^{re.escape(delimiter)}\r\n]*")
    position, end = 0, len(text)
    while position < end:
        record: list[str] = []
        while True:
            if quoting and text.startswith('"', position):
                found = _QUOTED.match(text, position)
                if found is None:
                    line = sum(1 for _ in _LINE_END.finditer(text, 0, position)) + 1
                    raise TableError(f"line {line}: a quoted field is never closed (a stray "
                                     '\'"\'? quote the field and double the quotes in it)')
                value = found.group(1).replace('""', '"')
                rest = unquoted.match(text, found.end())
                assert rest is not None  # it matches the empty string
                value += rest.group()
                position = rest.end()
            else:
                field = unquoted.match(text, position)
                assert field is not None
                value = field.group()
                position = field.end()
            record.append(value)
            if position < end and text[position] == delimiter:
                position += 1
                continue
            break
        position += 2 if text.startswith("\r\n", position) else 1
        yield record


def sniff_delimiter(text: str) -> str:
    """The delimiter of delimited text: of ``,`` ``;`` tab and ``|``, the one found most
    often in its header (its first non-blank record) outside quoted fields (``,`` when
    none is). A quoted field may span lines, as the reader reads it."""
    outside = _header_outside_quotes(text)
    counts = {d: outside.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _header_outside_quotes(text: str) -> str:
    """The text of the first non-blank record without its quoted fields. A quote opens a
    field at the start of a line or after one of the candidate delimiters (elsewhere it is
    an ordinary character), and the field may hold line breaks; one never closed ends the
    record."""
    pieces: list[str] = []  # the line's text outside quoted fields
    quoted = False  # whether the line had a quoted field
    position, end = 0, len(text)
    while position < end:
        at_field_start = not pieces or pieces[-1][-1:] in _DELIMITERS
        if at_field_start and text.startswith('"', position):
            found = _QUOTED.match(text, position)
            if found is None:
                break
            position, quoted = found.end(), True
            continue
        brk = _LINE_END.match(text, position)
        if brk is not None:
            if quoted or "".join(pieces).strip():
                break
            pieces, position = [], brk.end()  # a blank line: the header comes later
            continue
        plain = _PLAIN.match(text, position)
        assert plain is not None  # it matches the empty string
        pieces.append(plain.group())
        position = plain.end()
    return "".join(pieces)
