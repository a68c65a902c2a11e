"""Number ranges for the JSON automaton: which prefixes of a number can still end in range.

A bounded ``number`` or ``integer`` (``minimum``, ``maximum``, ``exclusiveMinimum``,
``exclusiveMaximum``, a ``multipleOf`` that is an integer or a fraction of a power of
two) is written in plain decimal (``-?(0|[1-9][0-9]*)(\\.[0-9]+)?``, no exponent) of at
most ``limit`` characters; a non-integer one with at most :data:`DIGITS` digits (a
leading ``0.`` aside), so that a reader parsing it into a float (Python's ``json``,
jsonschema) compares it with a bound as the exact decimal does: two decimals of at most
15 significant digits are distinct doubles in the same order. Every completion of a
prefix is a grid of values in an interval: ``12`` grows to ``12`` (one value),
``120``-``129`` (step 1), ``12.0``-``12.9`` (step 0.1), ``1200``-``1299``… ; ``12.3`` to
``12.30``-``12.39`` and so on; its multiples of ``multipleOf`` are a coarser grid.
:func:`extra_chars` walks those grids, shortest first, and returns the fewest characters
that reach a value in range (``None``: none does); :func:`completions` lists their
values. Exact arithmetic (:class:`fractions.Fraction`): no float rounding decides a
bound.

The grids and the answers per (prefix, bounds) are memoized process-wide in LRU caches of
:data:`MEMO_SIZES` entries (least recently used evicted): a server writing numbers under
thousands of distinct schemas (one per request or user, each its own bounds) holds at most
about 7 MB of them in all. They were 65,536 / 4,096 / 65,536 entries (about 53 MB once
filled, which distinct bounds did within a few thousand requests).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from fractions import Fraction
from typing import NamedTuple

__all__ = ["DIGITS", "MEMO_SIZES", "Range", "bound", "completions", "extra_chars", "in_range"]

#: The most digits of a bounded non-integer number (C's ``DBL_DIG``).
DIGITS = 15

_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")

#: Entries of each memo (LRU): :func:`extra_chars` (~220 B each), the sorted grids of a
#: prefix (~4 KB each), a grid's span within bounds (~340 B each), and whether bounds are
#: plain. One request's numbers ask a few hundred of each; the rest serves the requests
#: that repeat a schema.
MEMO_SIZES = {"extra_chars": 1 << 13, "sorted_grids": 1 << 9, "grid_span": 1 << 13,
              "plain": 1 << 10}


class Range(NamedTuple):
    """Bounds of a number: ``None`` for none; ``*_open`` for exclusive ones."""

    low: Fraction | None = None
    high: Fraction | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    #: ``multipleOf``: a positive integer, or for a ``number`` a fraction whose
    #: denominator is a power of two (``None``: any value).
    multiple: int | Fraction | None = None

    def admits(self, value: Fraction) -> bool:
        if self.multiple is not None and value % self.multiple:
            return False
        if self.low is not None and (value < self.low or self.low_open and value == self.low):
            return False
        return not (self.high is not None
                    and (value > self.high or self.high_open and value == self.high))


def bound(value: float) -> Fraction:
    """A schema's bound as the decimal its JSON text wrote (``0.01`` is 1/100, not the
    double nearest to it)."""
    return Fraction(value) if isinstance(value, int) else Fraction(repr(value))


def in_range(text: str, bounds: Range) -> bool:
    """Whether ``text`` is a whole number (plain decimal, an integer for an integer
    range) inside the bounds, read exactly and as a float alike."""
    grammar = r"-?(0|[1-9][0-9]*)" if bounds.integer else _DECIMAL.pattern
    if re.fullmatch(grammar, text) is None or not bounds.admits(Fraction(text)):
        return False
    if bounds.integer or "." not in text:
        return True
    value = float(text)  # a bound of more digits than DIGITS could still round alike
    if bounds.low is not None:
        low = float(bounds.low)
        if value < low or bounds.low_open and value == low:
            return False
    if bounds.high is not None:
        high = float(bounds.high)
        if value > high or bounds.high_open and value == high:
            return False
    return True


@functools.lru_cache(maxsize=MEMO_SIZES["extra_chars"])
def extra_chars(text: str, bounds: Range, limit: int) -> int | None:
    """The fewest characters to append to the prefix ``text`` (``""``, ``-``, ``12``,
    ``0.5``…) so that it is a whole number inside ``bounds`` of at most ``limit``
    characters; ``None`` when no completion is. Memoized: the automaton asks it for every
    character of a bounded number, and the same prefixes recur."""
    for extra, low, high, step, _ in _sorted_grids(text, bounds.integer, limit):
        if _grid_hit(bounds, low, high, step) is not None:
            return extra
    return None


def completions(text: str, bounds: Range, limit: int) -> Iterator[tuple[int, str]]:
    """The whole numbers inside ``bounds`` of at most ``limit`` characters that the
    prefix ``text`` grows into, as (characters added, the number's text), fewest added
    first (lazily: a grid may hold many). Spellings of one value at several lengths
    (``1``, ``1.0``) all come: callers compare values."""
    for extra, low, high, step, negative in _sorted_grids(text, bounds.integer, limit):
        span = _grid_span(bounds, low, high, step)
        if span is None:
            continue
        value, last, every = span
        places = len(str(step.denominator)) - 1  # the grid's decimals (its step: 10**-places)
        checked = not _plain(bounds)
        while value <= last:
            spelled = ("-" if negative else "") + _spell(abs(value), places)
            if not checked or in_range(spelled, bounds):
                yield extra, spelled
            value += every


@functools.lru_cache(maxsize=MEMO_SIZES["plain"])
def _plain(bounds: Range) -> bool:
    """Whether each bound has at most :data:`DIGITS` significant digits: then a number of
    at most that many compares with it as a float as it does exactly (distinct doubles in
    the same order), and :func:`in_range` need not check it again."""
    return all(b is None or _digits(b) <= DIGITS for b in (bounds.low, bounds.high))


def _digits(value: Fraction) -> int:
    """The significant digits of a decimal (a fraction that is not one: more than any)."""
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator != 1:
        return DIGITS + 1
    places = 0
    while (value * 10 ** places).denominator != 1:
        places += 1
    return len(str(abs(value.numerator * 10 ** places // value.denominator)).strip("0")) or 1


def _spell(value: Fraction, places: int) -> str:
    """A non-negative multiple of ``10 ** -places`` in plain decimal with that many
    decimals."""
    whole = value.numerator // value.denominator
    if not places:
        return str(whole)
    return f"{whole}.{int((value - whole) * 10 ** places):0{places}d}"


@functools.lru_cache(maxsize=MEMO_SIZES["sorted_grids"])
def _sorted_grids(text: str, integer: bool, limit: int
                  ) -> tuple[tuple[int, Fraction, Fraction, Fraction, bool], ...]:
    """:func:`_grids`, fewest characters added first (memoized: sets of numbers list the
    completions of the same prefixes again and again)."""
    return tuple(sorted(_grids(text, integer, limit), key=lambda grid: grid[0]))


def _grids(text: str, integer: bool, limit: int, *, signs: bool = True
           ) -> Iterator[tuple[int, Fraction, Fraction, Fraction, bool]]:
    """Every completion of ``text`` as (characters added, lowest, highest, step, whether
    it is written with a minus)."""
    if text == "" and signs:  # no sign written yet: a minus is one more character
        yield from _grids("", integer, limit, signs=False)
        for extra, low, high, step, negative in _grids("-", integer, limit):
            yield extra + 1, low, high, step, negative
        return
    negative = text.startswith("-")
    body = text[1:] if negative else text
    room = limit - len(text)
    whole, dot, fraction = body.partition(".")
    for extra, low, high, step in _positive(whole, dot, fraction, integer, room):
        if negative:
            low, high = -high, -low
        yield extra, low, high, step, negative


def _positive(whole: str, dot: str, fraction: str, integer: bool, room: int
              ) -> Iterator[tuple[int, Fraction, Fraction, Fraction]]:
    digits_left = DIGITS - (0 if whole in ("", "0") else len(whole))
    if dot:  # the integer part is written: only fraction digits may follow
        base = Fraction(f"{whole}.{fraction}" if fraction else whole)
        for more in range(0 if fraction else 1, min(room, digits_left - len(fraction)) + 1):
            step = Fraction(1, 10 ** (len(fraction) + more))
            yield more, base, base + Fraction(1, 10 ** len(fraction)) - step, step
        return
    # The integer part may still grow: by `more` digits (a leading 0 takes none).
    starts: list[tuple[int, Fraction, Fraction]] = []
    if whole == "":
        starts.append((1, Fraction(0), Fraction(0)))  # "0"
        for digits in range(1, room + 1):
            starts.append((digits, Fraction(10 ** (digits - 1)), Fraction(10 ** digits - 1)))
    elif whole == "0":
        starts.append((0, Fraction(0), Fraction(0)))
    else:
        p = int(whole)
        for more in range(room + 1):
            starts.append((more, Fraction(p * 10 ** more), Fraction((p + 1) * 10 ** more - 1)))
    for extra, low, high in starts:
        yield extra, low, high, Fraction(1)
        if integer:
            continue
        whole_digits = len(str(int(high))) if high >= 1 else 0
        for digits in range(1, min(room - extra, DIGITS - whole_digits + 1)):  # "." and 1+
            step = Fraction(1, 10 ** digits)
            yield extra + 1 + digits, low, high + 1 - step, step


def _lcm(a: Fraction, b: Fraction) -> Fraction:
    """The least positive rational both ``a`` and ``b`` divide (both positive)."""
    return Fraction(math.lcm(a.numerator, b.numerator), math.gcd(a.denominator, b.denominator))


def _grid_hit(bounds: Range, low: Fraction, high: Fraction, step: Fraction) -> Fraction | None:
    """A multiple of ``step`` in ``[low, high]`` that the bounds admit, or ``None``."""
    span = _grid_span(bounds, low, high, step)
    return None if span is None else span[0]


@functools.lru_cache(maxsize=MEMO_SIZES["grid_span"])
def _grid_span(bounds: Range, low: Fraction, high: Fraction,
               step: Fraction) -> tuple[Fraction, Fraction, Fraction] | None:
    """The multiples of ``step`` in ``[low, high]`` that the bounds admit, as (first,
    last, step between them: the multiples of ``multipleOf`` among them are a coarser
    grid), or ``None`` when there are none."""
    if bounds.multiple is not None:
        step = _lcm(step, Fraction(bounds.multiple))
    lo, hi = low, high
    if bounds.low is not None and bounds.low >= lo:
        lo = bounds.low
    if bounds.high is not None and bounds.high <= hi:
        hi = bounds.high
    first = math.ceil(lo / step)
    if bounds.low is not None and lo == bounds.low and bounds.low_open and first * step == lo:
        first += 1
    last = math.floor(hi / step)
    if bounds.high is not None and hi == bounds.high and bounds.high_open and last * step == hi:
        last -= 1
    return (first * step, last * step, step) if first <= last else None
