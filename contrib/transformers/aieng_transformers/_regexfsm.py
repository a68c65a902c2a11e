"""Regular expressions as automata for constrained decoding, with the exact number of
characters still needed.

A pattern of the subset below is parsed here (not by :mod:`re`, whose parser is private
and whose syntax is Python's), built into a Thompson NFA, and walked one character at a
time: a state is an interned id of (the set of NFA nodes the text may be in, the
characters written so far, capped where lengths stop mattering). Each state knows the
fewest *characters of output* that finish a match from it — one backward shortest-path
pass over the NFA when the pattern is compiled — so a decoder can keep a token budget, and
a character that leads nowhere finishable is refused at once.

The subset is the one JSON Schema recommends for ``pattern`` (ECMA-262), which is also
valid Python and Rust syntax with the same meaning on what this module writes:

- characters, ``.``, classes ``[abc]``, ``[a-z]``, ``[^…]``; escapes ``\\d \\w \\s
  \\D \\W \\S``, ``\\n \\t \\r \\f \\v \\0``, ``\\xHH``, ``\\uHHHH``, an escaped
  punctuation character;
- groups ``(…)``, ``(?:…)``, ``(?<name>…)`` / ``(?P<name>…)``; alternation ``|``;
- quantifiers ``* + ? {n} {n,} {n,m}``, greedy or lazy (the same language);
- anchors ``^`` and ``$``.

Refused with :class:`RegexError` (before anything is generated): lookarounds,
backreferences, word boundaries ``\\b \\B``, Unicode properties ``\\p{…}``, inline
flags, ``{,m}`` (a quantifier in Python, text in ECMA-262), ``[]`` / ``[^]``.

Where the engines disagree, the automaton writes only what all of them match: ``\\d``,
``\\w`` and ``\\s`` stand for their ASCII members (``[0-9]``, ``[A-Za-z0-9_]``,
``[\\t\\n\\v\\f\\r ]``), and their complements (``\\D``, ``[^\\d]`` …) for ASCII
characters outside them; ``.`` is any character but ``\\n``, ``\\r``, U+2028 and U+2029;
``$`` is the end of the text. So a text it accepts matches under Python's :mod:`re`
(the ``jsonschema`` package), Rust's ``regex`` (Pydantic) and ECMA-262 alike; some texts
those accept (a Unicode digit for ``\\d``) are never written.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["JSON_COST", "PLAIN_COST", "Pattern", "RegexError"]

MAX_CODE = 0x10FFFF
#: Sorted, disjoint, inclusive code-point ranges.
Ranges = tuple[tuple[int, int], ...]
_INF = float("inf")
#: NFA nodes at most (a counted repeat copies its body), and (node, count) pairs at most
#: for a pattern with length bounds.
MAX_NODES = 20_000
MAX_CONFIGURATIONS = 400_000


class RegexError(ValueError):
    """The pattern is malformed or outside the supported subset (see the module)."""


def _ranges(pairs: Iterable[tuple[int, int]]) -> Ranges:
    """``pairs`` merged into sorted, disjoint ranges."""
    out: list[list[int]] = []
    for low, high in sorted(pairs):
        if out and low <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], high)
        else:
            out.append([low, high])
    return tuple((low, high) for low, high in out)


def _complement(ranges: Ranges, within: Ranges = ((0, MAX_CODE),)) -> Ranges:
    out: list[tuple[int, int]] = []
    for low, high in within:
        start = low
        for a, b in ranges:
            if b < start or a > high:
                continue
            if a > start:
                out.append((start, a - 1))
            start = max(start, b + 1)
        if start <= high:
            out.append((start, high))
    return _ranges(out)


def _intersects(a: Ranges, b: Ranges) -> bool:
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][1] < b[j][0]:
            i += 1
        elif b[j][1] < a[i][0]:
            j += 1
        else:
            return True
    return False


def _chars(text: str) -> Ranges:
    return _ranges((ord(c), ord(c)) for c in text)


# An escape class: what every engine matches (written), and what some engine may match
# (complemented, for \D and [^\d]: everything outside it is outside it everywhere).
_CLASSES: dict[str, tuple[Ranges, Ranges]] = {
    "d": (_chars("0123456789"), _ranges([(0x30, 0x39), (0x80, MAX_CODE)])),
    "w": (_ranges([(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A), (0x5F, 0x5F)]),
          _ranges([(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A), (0x5F, 0x5F), (0x80, MAX_CODE)])),
    # Python's \s also matches \x1c-\x1f; ECMA-262's and Rust's do not.
    "s": (_chars("\t\n\v\f\r "), _ranges([(0x09, 0x0D), (0x1C, 0x20), (0x80, MAX_CODE)])),
}
_DOT: Ranges = _complement(_chars("\n\r\u2028\u2029"))
_ANY: Ranges = ((0, MAX_CODE),)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}
_HEX = frozenset("0123456789abcdefABCDEF")

#: Output characters per pattern character: ``(ranges, cost)`` in increasing cost; a
#: character in none of them cannot be written. Plain text: every character but a lone
#: surrogate is one.
PLAIN_COST: tuple[tuple[Ranges, int], ...] = ((((0, 0xD7FF), (0xE000, MAX_CODE)), 1),)
#: Inside a JSON string: printable characters but ``"`` and ``\\`` are one, those two and
#: ``\\b \\f \\n \\r \\t`` two (an escape); other control characters would need ``\\u``
#: escapes, which the JSON automaton does not write in a pattern string.
JSON_COST: tuple[tuple[Ranges, int], ...] = (
    (_ranges([(0x20, 0x21), (0x23, 0x5B), (0x5D, 0xD7FF), (0xE000, MAX_CODE)]), 1),
    (_chars('"\\\b\f\n\r\t'), 2),
)


# -- parsing: source → tree ------------------------------------------------------------------
# A tree is ("chars", Ranges) | ("cat", [tree]) | ("alt", [tree]) |
# ("repeat", tree, least, most | None) | ("bol",) | ("eol",).

class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.at = 0

    def fail(self, message: str) -> RegexError:
        return RegexError(f"{message} at position {self.at} of {self.source!r}")

    def peek(self) -> str:
        return self.source[self.at] if self.at < len(self.source) else ""

    def take(self) -> str:
        char = self.peek()
        if not char:
            raise self.fail("unexpected end of pattern")
        self.at += 1
        return char

    def parse(self) -> Any:
        tree = self.alternation()
        if self.at < len(self.source):
            raise self.fail("unbalanced ')'")
        return tree

    def alternation(self) -> Any:
        branches = [self.concatenation()]
        while self.peek() == "|":
            self.at += 1
            branches.append(self.concatenation())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def concatenation(self) -> Any:
        items: list[Any] = []
        while self.peek() not in ("", "|", ")"):
            items.append(self.quantified())
        return items[0] if len(items) == 1 else ("cat", items)

    def quantified(self) -> Any:
        atom = self.atom()
        bounds = self.quantifier()
        if bounds is None:
            return atom
        if atom[0] in ("bol", "eol"):
            raise self.fail("a quantifier after an anchor")
        if self.peek() == "?":  # lazy: the same language
            self.at += 1
        if self.quantifier(probe=True) is not None:
            raise self.fail("multiple repeat")
        return ("repeat", atom, *bounds)

    def quantifier(self, probe: bool = False) -> tuple[int, int | None] | None:
        char = self.peek()
        simple = {"*": (0, None), "+": (1, None), "?": (0, 1)}
        if char in simple:
            if not probe:
                self.at += 1
            return simple[char]
        if char != "{":
            return None
        end = self.source.find("}", self.at)
        body = self.source[self.at + 1:end] if end > 0 else ""
        if body.startswith(","):
            raise self.fail("'{,m}' (a quantifier in Python, text in ECMA-262) is "
                            "ambiguous: write '{0,m}'")
        low, comma, high = body.partition(",")
        if not low.isdigit() or not (high == "" or high.isdigit()) or not low.isascii() \
                or not high.isascii():
            return None  # a literal '{'
        least = int(low)
        most = least if not comma else None if high == "" else int(high)
        if most is not None and most < least:
            raise self.fail(f"quantifier {{{body}}}: the maximum is below the minimum")
        if not probe:
            self.at = end + 1
        return least, most

    def atom(self) -> Any:
        char = self.take()
        if char == "(":
            return self.group()
        if char == "[":
            return ("chars", self.char_class())
        if char == ".":
            return ("chars", _DOT)
        if char == "^":
            return ("bol",)
        if char == "$":
            return ("eol",)
        if char == "\\":
            narrow, _ = self.escape(in_class=False)
            return ("chars", narrow)
        if char in "*+?":
            raise self.fail("nothing to repeat")
        if char == "{" and self.quantifier_at(self.at - 1):
            raise self.fail("nothing to repeat")
        return ("chars", _chars(char))

    def quantifier_at(self, position: int) -> bool:
        saved = self.at
        self.at = position
        try:
            return self.quantifier(probe=True) is not None
        finally:
            self.at = saved

    def group(self) -> Any:
        if self.peek() == "?":
            self.at += 1
            kind = self.take()
            if kind == ":":
                pass
            elif kind == "P" and self.peek() == "<" or kind == "<" and self.peek() not in "=!":
                if kind == "P":
                    self.at += 1
                end = self.source.find(">", self.at)
                name = self.source[self.at:end] if end > 0 else ""
                if not name.isidentifier():
                    raise self.fail("a group name must be an identifier")
                self.at = end + 1
            elif kind in "=!" or kind == "<":
                raise self.fail("lookarounds are not supported")
            else:
                raise self.fail(f"'(?{kind}' (inline flags, conditionals…) is not supported")
        tree = self.alternation()
        if self.peek() != ")":
            raise self.fail("missing ')'")
        self.at += 1
        return tree

    def char_class(self) -> Ranges:
        negated = self.peek() == "^"
        if negated:
            self.at += 1
        if self.peek() == "]":
            raise self.fail("'[]' and '[^]' mean different things in Python and "
                            "ECMA-262; write '\\]' for the character")
        narrow: list[tuple[int, int]] = []
        broad: list[tuple[int, int]] = []
        while True:
            char = self.take()
            if char == "]":
                break
            if char == "\\":
                low_narrow, low_broad = self.escape(in_class=True)
            elif char == "[" and self.peek() in ":=.":
                raise self.fail("POSIX classes ('[:alpha:]') are not supported")
            else:
                low_narrow = low_broad = _chars(char)
            single = len(low_narrow) == 1 and low_narrow[0][0] == low_narrow[0][1] \
                and low_narrow == low_broad
            ranged = self.peek() == "-" and self.source[self.at + 1:self.at + 2] not in ("]", "")
            if ranged and not single:
                raise self.fail("a range cannot start with a class escape")
            if ranged:
                self.at += 1
                end = self.take()
                if end == "\\":
                    high, high_broad = self.escape(in_class=True)
                    if len(high) != 1 or high[0][0] != high[0][1] or high != high_broad:
                        raise self.fail("a range must end with a single character")
                    top = high[0][0]
                else:
                    top = ord(end)
                bottom = low_narrow[0][0]
                if top < bottom:
                    raise self.fail(f"bad character range {chr(bottom)!r}-{chr(top)!r}")
                narrow.append((bottom, top))
                broad.append((bottom, top))
                continue
            narrow.extend(low_narrow)
            broad.extend(low_broad)
        if negated:  # outside what any engine might match
            return _complement(_ranges(broad))
        return _ranges(narrow)

    def escape(self, *, in_class: bool) -> tuple[Ranges, Ranges]:
        """The escape after a backslash: (what every engine matches, what some might)."""
        char = self.take()
        lower = char.lower()
        if lower in _CLASSES:
            narrow, broad = _CLASSES[lower]
            if char.isupper():  # the complement
                return _complement(broad), _complement(narrow)
            return narrow, broad
        if char in _SIMPLE_ESCAPES:
            return _same(_SIMPLE_ESCAPES[char])
        if char == "b" and in_class:
            return _same("\b")
        if char == "0":
            if self.peek().isdigit():
                raise self.fail("octal escapes are not supported")
            return _same("\0")
        if char in "xu":
            width = 2 if char == "x" else 4
            digits = self.source[self.at:self.at + width]
            if len(digits) != width or not set(digits) <= _HEX:
                raise self.fail(f"'\\{char}' needs {width} hex digits")
            self.at += width
            return _same(chr(int(digits, 16)))
        if char.isdigit():
            raise self.fail("backreferences are not supported")
        if char in "bB":
            raise self.fail("word boundaries ('\\b', '\\B') are not supported")
        if char.isalnum() or char == "_":
            raise self.fail(f"unknown or unsupported escape '\\{char}'")
        return _same(char)


def _same(char: str) -> tuple[Ranges, Ranges]:
    ranges = _chars(char)
    return ranges, ranges


# -- the automaton ---------------------------------------------------------------------------

class Pattern:
    """A compiled pattern: its states, one step per character, and the output characters a
    state still needs.

    :param source: the regular expression (the subset of the module).
    :param search: JSON Schema's ``pattern`` semantics — the text *contains* a match
        (anchors as written); otherwise the whole text must match.
    :param lengths: the text's length in characters: at least, at most (``None``: any).
    :param cost: output characters per pattern character (:data:`PLAIN_COST`, or
        :data:`JSON_COST` inside a JSON string).
    :raises RegexError: malformed, outside the subset, too large, or matching no text
        within ``lengths`` of writable characters.
    """

    def __init__(self, source: str, *, search: bool = False,
                 lengths: tuple[int, int | None] = (0, None),
                 cost: tuple[tuple[Ranges, int], ...] = PLAIN_COST) -> None:
        self.source = source
        #: Whether the text need only contain a match (JSON Schema's ``pattern``).
        self.search = search
        self._cost_table = cost
        tree = _Parser(source).parse()
        self._eps: list[list[int]] = []
        self._bol: list[list[int]] = []
        self._eol: list[list[int]] = []
        self._moves: list[list[tuple[Ranges, int]]] = []
        begin = self._node()
        if search:  # anything before and after the match
            self._moves[begin].append((_ANY, begin))
        start = self._node()
        self._eps[begin].append(start)
        end = self._build(tree, start)
        if search:
            self._moves[end].append((_ANY, end))
        self._final = end
        # Bounds the pattern keeps by itself are not counted (a smaller automaton).
        shortest, longest = _span(tree)
        least, most = lengths
        if least <= shortest:
            least = 0
        if most is not None and not search and longest is not None and longest <= most:
            most = None
        self.lengths = least, most
        #: Counts kept: exact up to the maximum, else up to the minimum (then saturated).
        self._cap = most if most is not None else least
        if len(self._eps) * (self._cap + 1) > MAX_CONFIGURATIONS:
            raise RegexError(f"{source!r} with lengths {lengths} is too large an automaton "
                             f"({len(self._eps)} nodes x {self._cap + 1} lengths)")
        self._weights = [[(self._cost(r), v) for r, v in moves] for moves in self._moves]
        self._tail = self._tails()
        self._left = self._distances()
        self._states: list[tuple[frozenset[int], int]] = []
        self._ids: dict[tuple[frozenset[int], int], int] = {}
        self._steps: dict[tuple[int, str], int | None] = {}
        self._lefts: dict[int, float] = {}
        self._cells: dict[int, list[tuple[int, int, Ranges]]] = {}
        self._listed: dict[int, tuple[list[tuple[int, str]], Iterator[tuple[int, str]]]] = {}
        self._accepting: dict[int, bool] = {}
        self._start = self._intern(self._closure({begin}, at_start=True), 0)
        if self.left(self._start) == _INF:
            raise RegexError(f"no text of writable characters within lengths {lengths} "
                             f"matches {source!r}")

    # -- construction ----------------------------------------------------------------

    def _node(self) -> int:
        if len(self._eps) >= MAX_NODES:
            raise RegexError(f"{self.source!r} is too large an automaton (more than "
                             f"{MAX_NODES} nodes; a large counted repeat?)")
        for table in (self._eps, self._bol, self._eol, self._moves):
            table.append([])
        return len(self._eps) - 1

    def _build(self, tree: Any, start: int) -> int:
        """Add ``tree`` from node ``start``; its end node."""
        kind = tree[0]
        if kind == "chars":
            end = self._node()
            self._moves[start].append((tree[1], end))
            return end
        if kind == "cat":
            for item in tree[1]:
                start = self._build(item, start)
            return start
        if kind == "alt":
            end = self._node()
            for branch in tree[1]:
                self._eps[self._build(branch, start)].append(end)
            return end
        if kind in ("bol", "eol"):
            end = self._node()
            (self._bol if kind == "bol" else self._eol)[start].append(end)
            return end
        _, body, least, most = tree
        for _ in range(least):
            start = self._build(body, start)
        if most is None:  # a loop: body again and again, or nothing
            loop = self._node()
            self._eps[start].append(loop)
            self._eps[self._build(body, loop)].append(loop)
            return loop
        end = self._node()
        for _ in range(most - least):
            self._eps[start].append(end)
            start = self._build(body, start)
        self._eps[start].append(end)
        return end

    def _cost(self, ranges: Ranges) -> float:
        for table, cost in self._cost_table:
            if _intersects(ranges, table):
                return cost
        return _INF

    def _tails(self) -> list[bool]:
        """Per node: whether the match can end there without another character (through
        empty moves and ``$``)."""
        reverse: list[list[int]] = [[] for _ in self._eps]
        for node, targets in enumerate(self._eps):
            for target in targets:
                reverse[target].append(node)
        for node, targets in enumerate(self._eol):
            for target in targets:
                reverse[target].append(node)
        tail = [False] * len(self._eps)
        tail[self._final] = True
        todo = [self._final]
        while todo:
            for node in reverse[todo.pop()]:
                if not tail[node]:
                    tail[node] = True
                    todo.append(node)
        return tail

    def _next_count(self, count: int) -> int | None:
        least, most = self.lengths
        if most is not None:
            return count + 1 if count < most else None
        return min(count + 1, least)

    def _distances(self) -> dict[tuple[int, int], float]:
        """The fewest output characters that end a match from each (node, count): one
        backward Dijkstra from every (node, count) where the match may end."""
        least = self.lengths[0]
        back_eps: list[list[int]] = [[] for _ in self._eps]
        for node, targets in enumerate(self._eps):
            for target in targets:
                back_eps[target].append(node)
        back_moves: list[list[tuple[float, int]]] = [[] for _ in self._eps]
        for node, moves in enumerate(self._weights):
            for weight, target in moves:
                if weight < _INF:
                    back_moves[target].append((weight, node))
        counts = range(self._cap + 1)
        before: dict[int, list[int]] = {c: [] for c in counts}  # count -> counts stepping to it
        for count in counts:
            after = self._next_count(count)
            if after is not None:
                before[after].append(count)
        best: dict[tuple[int, int], float] = {}
        heap: list[tuple[float, int, int]] = [
            (0, node, count) for node, ok in enumerate(self._tail) if ok
            for count in counts if count >= least]
        heapq.heapify(heap)
        while heap:
            distance, node, count = heapq.heappop(heap)
            if (node, count) in best:
                continue
            best[node, count] = distance
            for prior in back_eps[node]:
                if (prior, count) not in best:
                    heapq.heappush(heap, (distance, prior, count))
            for weight, prior in back_moves[node]:
                for earlier in before[count]:
                    if (prior, earlier) not in best:
                        heapq.heappush(heap, (distance + weight, prior, earlier))
        return best

    def _closure(self, nodes: Iterable[int], *, at_start: bool) -> frozenset[int]:
        seen = set(nodes)
        todo = list(seen)
        while todo:
            node = todo.pop()
            more = self._eps[node] + self._bol[node] if at_start else self._eps[node]
            for target in more:
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return frozenset(seen)

    def _intern(self, nodes: frozenset[int], count: int) -> int:
        key = (nodes, count)
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self._states)
            self._states.append(key)
        return found

    # -- walking -------------------------------------------------------------------------

    def start(self) -> int:
        """The state before any character."""
        return self._start

    def step(self, state: int, char: str) -> int | None:
        """The state after ``char``, or ``None`` when it cannot be written (its cost is
        none) or no match within the lengths can be finished from there."""
        key = (state, char)
        if key in self._steps:
            return self._steps[key]
        code = ord(char)
        result = next((target for _, target, chars in self._steps_from(state)
                       if _contains(chars, code)), None)
        self._steps[key] = result
        return result

    def feed(self, state: int | None, text: str) -> int | None:
        """The state after ``text`` (``None`` as soon as a character is refused)."""
        for char in text:
            if state is None:
                return None
            state = self.step(state, char)
        return state

    def accepting(self, state: int) -> bool:
        """Whether the text so far matches."""
        found = self._accepting.get(state)
        if found is None:
            nodes, count = self._states[state]
            found = self._accepting[state] = count >= self.lengths[0] and any(
                self._tail[node] for node in nodes)
        return found

    def left(self, state: int) -> float:
        """The fewest output characters that finish a match (``inf``: none can)."""
        found = self._lefts.get(state)
        if found is None:
            nodes, count = self._states[state]
            found = self._lefts[state] = min(
                (self._left.get((node, count), _INF) for node in nodes), default=_INF)
        return found

    def closed(self, state: int) -> bool:
        """Whether the text matches and no character may follow it."""
        if not self.accepting(state):
            return False
        nodes, count = self._states[state]
        after = self._next_count(count)
        if after is None:
            return True
        return not any(weight < _INF and self._left.get((target, after), _INF) < _INF
                       for node in nodes for weight, target in self._weights[node])

    def completions(self, state: int) -> Iterator[tuple[int, str]]:
        """The texts that finish a match from ``state``, each with the output characters
        it costs, cheapest first, each once (lazily; without end for an unbounded
        pattern). Those listed once are kept per state, for the next caller."""
        listed = self._listed.get(state)
        if listed is None:
            listed = self._listed[state] = ([], self._search(state))
        found, search = listed
        for index in itertools.count():
            if index == len(found):
                following = next(search, None)
                if following is None:
                    return
                found.append(following)
            yield found[index]

    def _search(self, state: int) -> Iterator[tuple[int, str]]:
        """:meth:`completions` by a best-first search whose estimate, :meth:`left`, is
        exact, going depth first among equal estimates, so it walks straight down to the
        next cheapest text; the characters of one step that lead to the same state at the
        same cost are taken one at a time (texts of equal cost come in no promised
        order)."""
        order = itertools.count(0, -1)  # among equal estimates the latest first: depth first
        # (estimate, tie, cost so far, text, state, characters still to try or None)
        heap: list[tuple[float, int, int, str, int, Iterator[str] | None]] = [
            (self.left(state), next(order), 0, "", state, None)]
        while heap:
            estimate, _, spent, text, at, chars = heapq.heappop(heap)
            if chars is not None:  # a step: its next character, and the step again
                char = next(chars, None)
                if char is not None:
                    heapq.heappush(heap, (estimate, next(order), spent, text, at, chars))
                    heapq.heappush(heap, (estimate, next(order), spent, text + char, at, None))
                continue
            if at < 0:  # a finished text
                yield spent, text
                continue
            if self.accepting(at):
                heapq.heappush(heap, (spent, next(order), spent, text, -1, None))
            for cost, target, ranges in self._steps_from(at):
                heapq.heappush(heap, (spent + cost + self.left(target), next(order),
                                      spent + cost, text, target, _each(ranges)))

    def _steps_from(self, state: int) -> list[tuple[int, int, Ranges]]:
        """Where ``state`` steps: per (cost, next state), the writable characters that go
        there (to a state from which a match within the lengths can still be finished)."""
        found = self._cells.get(state)
        if found is not None:
            return found
        nodes, count = self._states[state]
        after = self._next_count(count)
        moves = [] if after is None else [
            move for node in nodes for move in self._moves[node]]
        cuts = {0, MAX_CODE + 1}
        for ranges in [r for r, _ in moves] + [r for r, _ in self._cost_table]:
            for low, high in ranges:
                cuts.update((low, high + 1))
        edges = sorted(cuts)
        groups: dict[tuple[frozenset[int], float], list[tuple[int, int]]] = {}
        for low, high in itertools.pairwise(edges):
            targets = frozenset(t for ranges, t in moves if _contains(ranges, low))
            cost = self._cost(((low, low),))
            if targets and cost < _INF:
                groups.setdefault((targets, cost), []).append((low, high - 1))
        found = []
        for (targets, cost), chars in groups.items():
            assert after is not None
            target = self._intern(self._closure(targets, at_start=False), after)
            if self.left(target) < _INF:
                found.append((int(cost), target, tuple(chars)))
        self._cells[state] = found
        return found

    def matches(self, text: str) -> bool:
        """Whether the automaton writes ``text`` (and it matches)."""
        state = self.feed(self._start, text)
        return state is not None and self.accepting(state)


def _span(tree: Any) -> tuple[int, int | None]:
    """The fewest and the most characters a match of ``tree`` has (``None``: no most)."""
    kind = tree[0]
    if kind == "chars":
        return 1, 1
    if kind in ("bol", "eol"):
        return 0, 0
    if kind in ("cat", "alt"):
        spans = [_span(item) for item in tree[1]]
        lows = [low for low, _ in spans]
        highs = [high for _, high in spans]
        if kind == "cat":
            return sum(lows), None if None in highs else sum(h for h in highs if h is not None)
        return min(lows), None if None in highs else max(h for h in highs if h is not None)
    _, body, least, most = tree
    low, high = _span(body)
    if high == 0:
        return 0, 0
    return least * low, None if most is None or high is None else most * high


def _each(ranges: Ranges) -> Iterator[str]:
    return (chr(code) for low, high in ranges for code in range(low, high + 1))


def _contains(ranges: Ranges, code: int) -> bool:
    index = bisect_right(ranges, (code, MAX_CODE + 1)) - 1
    return index >= 0 and ranges[index][0] <= code <= ranges[index][1]

