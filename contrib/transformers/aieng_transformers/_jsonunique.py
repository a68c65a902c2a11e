"""Arrays of distinct items (``uniqueItems``, Pydantic's ``set[X]``): which item schemas
are supported, the identity of an item's value, and the fewest characters of items
distinct from those an array already has.

Supported items are scalars whose cheapest distinct values can be listed in order of
length: free strings, strings of a ``pattern`` or ``format`` or with lengths (their
automaton lists its texts cheapest first, :meth:`._regexfsm.Pattern.completions`),
integers and numbers (free, or within bounds and ``multipleOf``; written in plain
decimal, so the values of a length are grids of decimals, or of integers), booleans, ``null``, ``enum`` / ``const`` sets of scalars, and ``anyOf`` of
those that the first character tells apart. Values are equal as JSON Schema has it: ``1`` and
``1.0`` are one number, a string is its decoded characters.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING

from ._jsonbounds import Range, completions
from ._regexfsm import JSON_COST

if TYPE_CHECKING:
    from ._jsoncompile import Node

#: The longest number the automaton writes (sign, digits, fraction, exponent).
MAX_NUMBER_CHARS = 24

__all__ = ["MAX_NUMBER_CHARS", "NEVER", "cheapest", "identity", "joint", "numbers",
           "plain_chars", "supported", "values"]

#: The cost of what cannot be written (a large integer, so sums stay integers).
NEVER = 1 << 40
#: A candidate item: the characters it costs and its identity.
Candidate = tuple[int, str]


def identity(text: str) -> str:
    """The identity of a JSON scalar written as ``text``: ``s`` and the decoded string,
    ``n`` and the normalized number, ``l`` and ``true`` / ``false`` / ``null``."""
    value = json.loads(text)
    if isinstance(value, str):
        return "s" + value
    if value is None or isinstance(value, bool):
        return "l" + json.dumps(value)
    number = Decimal(text)
    return "n" + ("0" if number == 0 else str(number.normalize()))


def supported(node: Node) -> bool:
    """Whether :func:`values` can list the node's values cheapest first."""
    kind = node.kind
    if kind == "string":
        return node.enum is not None or node.pattern is not None or node.lengths == (0, None)
    if kind == "literal":
        return all(not isinstance(json.loads(v), (list, dict)) for v in node.literals)
    if kind == "integer":
        return True
    if kind == "number":  # written in plain decimal, listed per grid (``_listable``)
        return node.bounds is not None
    if kind == "union":  # alternatives told apart by their first character
        return all(supported(b) for b in node.branches) and all(
            not a.first & b.first for i, a in enumerate(node.branches)
            for b in node.branches[i + 1:])
    return kind in ("boolean", "null")


def plain_chars() -> Iterator[str]:
    """Characters a JSON string holds as themselves (one output character each, as
    :data:`._regexfsm.JSON_COST` lists them), in code-point order."""
    ranges, cost = JSON_COST[0]
    assert cost == 1
    for low, high in ranges:
        yield from map(chr, range(low, high + 1))


def numbers(prefix: str, bounds: Range | None, *, integer: bool = False) -> Iterator[Candidate]:
    """Numbers (integers when ``integer`` or the bounds say so) written as ``prefix`` (a
    prefix of one) and more characters — plain decimal, at most :data:`MAX_NUMBER_CHARS`
    in all, within ``bounds`` and on the grid of their ``multipleOf`` — by the characters
    added (:func:`._jsonbounds.completions`). One value may come at several lengths or
    spellings (``1``, ``1.0``, ``-0``): callers skip what they have seen."""
    within = bounds if bounds is not None else Range(integer=integer)
    return ((added, identity(text)) for added, text in completions(prefix, within,
                                                                   MAX_NUMBER_CHARS))


def values(node: Node) -> Iterator[Candidate]:
    """The node's values cheapest first (possibly without end), each once."""
    kind = node.kind
    if kind == "string" and node.enum is not None:
        stream: Iterable[Candidate] = sorted((len(e) + 2, identity(f'"{e}"')) for e in node.enum)
    elif kind == "string" and node.pattern is not None:
        pattern = node.pattern
        stream = ((cost + 2, "s" + text) for cost, text in pattern.completions(pattern.start()))
    elif kind == "string":
        stream = itertools.chain([(2, "s")], ((3, "s" + c) for c in plain_chars()))
    elif kind == "literal":
        stream = sorted((len(v), identity(v)) for v in node.literals)
    elif kind in ("integer", "number"):
        stream = numbers("", node.bounds, integer=kind == "integer")
    elif kind == "boolean":
        stream = [(4, "ltrue"), (5, "lfalse")]
    elif kind == "null":
        stream = [(4, "lnull")]
    else:  # a union
        stream = heapq.merge(*(values(b) for b in node.branches))
    seen: set[str] = set()
    for cost, name in stream:
        if name not in seen:
            seen.add(name)
            yield cost, name


def cheapest(node: Node, taken: frozenset[str], count: int) -> list[Candidate]:
    """The ``count`` cheapest values of the node not in ``taken`` (fewer when it has no
    more)."""
    fresh = (c for c in values(node) if c[1] not in taken)
    return list(itertools.islice(fresh, count))


def joint(current: Iterable[Candidate], node: Node, taken: frozenset[str], need: int) -> int:
    """The fewest characters that finish the item being written (``current``: its
    completions, cheapest first, each with the characters it still takes) and ``need``
    more items, all distinct and none in ``taken`` (separators not counted)."""
    pool = cheapest(node, taken, need + 1)
    if len(pool) < need:
        return NEVER
    others = sum(cost for cost, _ in pool[:need])
    chosen = {name for _, name in pool[:need]}
    best = NEVER
    for finish, name in current:
        if finish + others >= best:
            break
        if name in taken:
            continue
        if name in chosen:  # it takes one of the cheapest: the next one replaces it
            if len(pool) <= need:
                continue
            cost = finish + others - _cost_of(pool, name) + pool[need][0]
        else:
            cost = finish + others
        best = min(best, cost)
    return best


def _cost_of(pool: list[Candidate], name: str) -> int:
    return next(cost for cost, n in pool if n == name)
