"""Inferring a column's type from its cells."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable

__all__ = ["COLUMN_TYPES", "cell_type", "column_type"]

#: The types a column can have, narrowest first; ``empty`` when every cell is.
COLUMN_TYPES = ("empty", "integer", "number", "boolean", "date", "datetime", "text")

_INTEGER = re.compile(r"[+-]?[0-9]+")
# Possessive: ``[0-9]+\.?[0-9]*`` retried a run of digits split between its two parts,
# quadratic in a long cell of digits ending in a letter (a 30,000-digit cell took 17 s).
_NUMBER = re.compile(r"[+-]?(?:[0-9]++(?:\.[0-9]*+)?|\.[0-9]++)(?:[eE][+-]?[0-9]++)?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}.*")
_BOOLEANS = frozenset({"true", "false"})


def cell_type(value: str) -> str:
    """The narrowest type of one non-empty cell (surrounding whitespace ignored):
    ``integer``, ``number`` (decimal or exponent notation; not ``nan`` or ``inf``),
    ``boolean`` (``true`` / ``false`` in any case), ``date`` (ISO ``YYYY-MM-DD``),
    ``datetime`` (ISO date and time) or ``text``."""
    cell = value.strip()
    if _INTEGER.fullmatch(cell):
        return "integer"
    if _NUMBER.fullmatch(cell):
        return "number"
    if cell.lower() in _BOOLEANS:
        return "boolean"
    if _DATE.fullmatch(cell) and _valid(dt.date.fromisoformat, cell):
        return "date"
    if _DATETIME.fullmatch(cell) and _valid(dt.datetime.fromisoformat, cell):
        return "datetime"
    return "text"


def _valid(parse: Callable[[str], object], cell: str) -> bool:
    try:
        parse(cell)
    except ValueError:
        return False
    return True


def column_type(cells: Iterable[str]) -> str:
    """The narrowest type all of a column's non-blank cells have: ``integer`` columns
    are also ``number`` ones and ``date`` columns ``datetime`` ones; mixed kinds are
    ``text``; a column of blank cells is ``empty``."""
    kinds = {cell_type(cell) for cell in cells if cell.strip()}
    if not kinds:
        return "empty"
    if len(kinds) == 1:
        return kinds.pop()
    if kinds <= {"integer", "number"}:
        return "number"
    if kinds <= {"date", "datetime"}:
        return "datetime"
    return "text"
