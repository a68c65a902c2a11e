"""An incremental JSON-schema prefix validator: a character-level pushdown automaton.

A state is an immutable tuple of frames (the parse stack), so one state can be extended by
many candidate tokens without copying, and equal states hash equal (a string's content is
not part of the state, so every step inside a free string repeats one state).

The supported subset (anything else is refused before generating, by :func:`compile_schema`)
covers what Pydantic's ``model_json_schema()`` writes for models of plain fields:

- ``type``: ``object``, ``array``, ``string``, ``number``, ``integer``, ``boolean``,
  ``null``, or a list of them; a schema without ``type`` but with ``properties`` (or
  ``additionalProperties``) is an object, with ``items`` an array, with ``enum`` /
  ``const`` those values.
- objects: ``properties``, ``required`` (a name the properties lack: a key of any value);
  ``additionalProperties: false`` (implied: no other key is written), or a schema /
  ``true`` beside them (other non-empty keys, with values of it). Keys come in any
  order, each at most once. Or, without ``properties``, ``additionalProperties`` a
  schema (or ``true``): a map of free string keys to values of it (``dict[str, X]``;
  keys non-empty and distinct, compared decoded), with ``minProperties`` /
  ``maxProperties``; its keys may have a string schema — ``propertyNames`` (an
  ``enum``, a ``pattern``, a ``format``, lengths), or the one pattern of a lone
  ``patternProperties`` (whose schema is the values') — written and kept distinct as
  the items of a set; a bare ``{"type": "object"}`` is a map of any values.
- ``{}`` / ``true`` (Pydantic's ``Any``): any JSON value.
- arrays: ``items`` (one schema for every item), ``prefixItems`` (one schema per
  leading item: tuples; ``items`` then covers the rest, ``false`` for none, absent for
  any value; drafts 4-2019's ``items`` list and ``additionalItems`` alike), ``minItems``,
  ``maxItems``, ``uniqueItems`` (items of the kinds
  :mod:`._jsonunique` lists). Without ``items`` or ``prefixItems``: items of any value.
- strings: ``minLength``, ``maxLength`` (in characters; such a string is written without
  ``\\u`` escapes), ``pattern`` (searched in the decoded string, the lengths folded into
  its automaton: the subset of :mod:`._regexfsm`), ``format`` (enforced for the formats
  :mod:`._jsonformats` lists, the whole string matching its pattern; others are
  annotations, as JSON Schema 2020-12 has it by default).
- numbers and integers: ``minimum``, ``maximum``, ``exclusiveMinimum``,
  ``exclusiveMaximum`` (or draft 4's boolean flags), a ``multipleOf`` that is an integer
  or a fraction of a power of two (``0.5``: its multiples are doubles exactly); a bounded
  number is written in plain decimal, no exponent.
- ``enum`` and ``const``: any JSON values (with a ``type``, each must be of it; one
  holding a lone surrogate is left out: it has no spelling the automaton writes).
- ``anyOf`` / ``oneOf`` and type lists: alternatives a document's first character tells
  apart (an object, an array, a string, a number, ``true``/``false``, ``null``, a set of
  ``enum``/``const`` values), e.g. ``Optional[...]``'s ``anyOf: [X, {"type": "null"}]``.
  ``enum`` / ``const`` values of several alternatives merge into one set; in ``anyOf`` a
  free (unbounded) alternative takes over the values and bounded alternatives of its
  kind (an ``integer`` beside a free ``number`` is the number), and ``{}`` takes over
  everything. Several objects need a discriminator (a key each requires, with string
  values no two share), which is written first and picks the object — or each a required
  key no other one has, written first. In ``anyOf``, strings with patterns or formats
  and the same lengths (and string values beside them, when those lengths are none) are
  one string of the alternation of their patterns. Other alternatives that start alike
  are, in ``anyOf``, followed side by side (a ``fork`` frame: one stack per alternative
  still possible) until the text tells them apart; in ``oneOf`` they are refused.
- ``$ref`` to ``#``, ``#/$defs/…`` or ``#/definitions/…``, recursive ones included (the
  fewest characters of a node are a fixed point over the recursion), and ``$defs`` /
  ``definitions`` anywhere.
- ``allOf`` of one schema, or of objects (their properties and required names merged).
- annotations ignored: ``title``, ``description``, ``$schema``, ``$id``, ``$comment``,
  ``default``, ``examples``, ``deprecated``, ``readOnly``, ``writeOnly``; ``x-``
  extensions and OpenAPI's ``example``, ``externalDocs``, ``xml``, ``nullable`` (no
  ``null`` is written for it) anywhere.

The text is compact JSON: no whitespace except at most one space after ``:`` and ``,``; a
``\\u`` escape of a surrogate only as a whole pair (strict readers refuse a lone one); a
number has at most :data:`MAX_NUMBER_CHARS` characters; enum values and property names are
written in their ``json.dumps`` spelling.
"""


from __future__ import annotations

import heapq
import itertools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from ._jsonbounds import extra_chars, in_range
from ._jsoncompile import (
    ANY_BRANCHES,
    MAX_NUMBER_CHARS,
    Node,
    SchemaError,
    compile_schema,
)
from ._jsonunique import NEVER, Candidate, identity, joint, numbers, plain_chars
from ._regexfsm import Pattern

__all__ = ["MAX_NUMBER_CHARS", "JsonMachine", "SchemaError", "compile_schema"]

_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
# Prefixes of a number: what may still grow into one.
_NUMBER_PREFIX = re.compile(r"-?((0|[1-9][0-9]*)(\.|(\.[0-9]+)?([eE][+-]?[0-9]*)?))?")
_DECIMAL_PREFIX = re.compile(r"-?((0|[1-9][0-9]*)(\.[0-9]*)?)?")
_INTEGER_PREFIX = re.compile(r"-?(0|[1-9][0-9]*)?")
_HEX = frozenset("0123456789abcdefABCDEF")
#: An escape's phase after a hex digit that the digit does not decide (see ``_escaped``).
_HEX_NEXT = {"u1": "u2", "u2": "u3", "u3": "", "u2h": "u3h", "u3h": "l", "l2": "l3", "l3": ""}
#: The characters an escape still needs from each phase at fewest (see ``_escaped``).
_ESCAPE_LEFT = {"": 0, "esc": 1, "u0": 4, "u1": 3, "u1d": 3, "u2": 2, "u3": 1,
                "u2h": 8, "u3h": 7, "l": 6, "lu": 5, "l0": 4, "l1": 3, "l2": 2, "l3": 1}
_MEMO_LIMIT = 100_000
_ESCAPES = frozenset('"\\/bfnrtu')
#: The character each one-letter escape stands for.
#: Characters a JSON string holds as themselves.
_PLAIN_RUN = re.compile(r'[^"\\\x00-\x1f]*')
_DECODED = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
            "t": "\t"}


class Frame(NamedTuple):
    """One level of the parse stack.

    ``kind``: ``root``, ``obj``, ``map`` (free keys), ``mkey`` (a map's key: its text
    kept, to refuse a key the map has), ``tagged`` (an object union's
    discriminator being written), ``arr``, ``str``, ``key``, ``num``, ``lit`` (``true``,
    ``false``, ``null``), ``lits`` (one of a set of ``enum`` / ``const`` values).
    ``phase`` says what comes next; ``text`` is what a number, literal, enum or key holds
    so far; ``seen`` the keys an object has; ``key`` the key whose value comes next (for
    a literal: the word being written); ``size`` the items of an array / characters of
    a string so far, kept only when the schema bounds them (so free ones repeat states);
    ``rx`` a ``pattern`` string's automaton state (its lengths folded in). A free string
    that is an item of an array of distinct items keeps its text too (the array's
    ``seen`` holds the identities of its items so far).

    ``fork``: a value of ``anyOf`` alternatives that start alike, followed in parallel —
    ``subs`` holds one stack per alternative still possible, each rooted at a ``root``
    frame of that alternative; the fork gives way to the stack itself once one is left.
    """

    kind: str
    node: Node | None
    phase: str = ""
    text: str = ""
    seen: frozenset[str] = frozenset()
    key: str = ""
    size: int = 0
    rx: int = 0
    subs: tuple[tuple[Frame, ...], ...] = ()


State = tuple[Frame, ...]


class JsonMachine:
    """The automaton of one compiled schema: a start state, one step per character, and
    what a state still needs."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.root = compile_schema(schema)
        #: :meth:`min_chars` per state (asked for every candidate token; an array of
        #: distinct items lists its cheapest values to answer).
        self._needed: dict[State, int] = {}

    def start(self) -> State:
        return (Frame("root", self.root, "value"),)

    # -- stepping ------------------------------------------------------------------------

    def feed(self, state: State, text: str) -> State | None:
        """The state after ``text``, or ``None`` when no valid document starts so."""
        top = state[-1]
        if top.kind == "str" and not top.phase and top.node is not None \
                and top.node.pattern is not None and _PLAIN_RUN.fullmatch(text):
            return self._pattern_run(state, text)
        current: State | None = state
        for char in text:
            current = self._step(current, char)  # type: ignore[arg-type]
            if current is None:
                return None
        return current

    def _step(self, stack: State, c: str) -> State | None:
        """The state after one character (``None``: refused)."""
        after = self._char(stack, c)
        if after is not None and len(after) > 1 and _distinct_items(after[-2]) and not _fresh(
                after[-1], after[-2].seen):
            return None  # an item of distinct items that can only repeat one
        return after

    def _char(self, stack: State, c: str) -> State | None:
        top = stack[-1]
        rest = stack[:-1]
        kind, node, phase = top.kind, top.node, top.phase
        if kind == "str" and node is not None and node.pattern is not None:
            return self._patterned(rest, top, c)
        if kind == "str" or kind == "key":
            counted = _counted(top)
            if phase:  # inside an escape
                escaped = _escaped(phase, c)
                if escaped is None or counted and escaped == "u0":  # counted: no \u escapes
                    return None
                kept = _tracks(top) or _distinct_items(rest[-1])
                text = top.text + _escape_text(phase, c) if kept else ""
                if _tracks(top) and not _offers(stack, text):
                    return None
                # an escape is one character of the string once its letter is written
                return (*rest, top._replace(phase=escaped, text=text,
                                            size=top.size + (counted and phase == "esc")))
            if c == '"':
                if _tracks(top) and not _is_choice(stack, top.text):
                    return None
                if counted and top.size < _lengths_of(top)[0]:
                    return None
                return self._done(rest, top.text if kind == "key" else "", item=top)
            if c < " ":
                return None
            if counted and (most := _lengths_of(top)[1]) is not None and top.size >= most:
                return None
            if c == "\\":
                if _tracks(top) and not _offers(stack, top.text + c):
                    return None
                return (*rest, top._replace(phase="esc"))
            if _tracks(top):
                text = top.text + c
                if not _offers(stack, text):
                    return None
                return (*rest, top._replace(text=text))
            if _distinct_items(rest[-1]):  # an item of distinct items: its text is kept
                return (*rest, top._replace(text=top.text + c))
            return (*rest, top._replace(size=top.size + 1)) if counted else stack
        if kind == "mkey":
            return self._map_key(rest, top, c)
        if kind == "fork":
            return self._forked(rest, top, c)
        if kind == "num":
            text = top.text + c
            if len(text) <= MAX_NUMBER_CHARS and _number_prefix(node, text):
                return (*rest, top._replace(text=text))
            if not _number_done(top):
                return None
            after = self._done(rest, item=top)
            return None if after is None else self._char(after, c)
        if kind == "lit":
            text = top.text + c
            word = top.key
            if not word.startswith(text):
                return None
            return self._done(rest, item=top._replace(text=text)) if text == word \
                else (*rest, top._replace(text=text))
        if kind == "tagged":  # the discriminator, first: its value picks the object
            assert node is not None
            text = top.text + c
            if text in node.tags:
                if not node.key:  # a key only this alternative has: its value comes next
                    return (*rest, Frame("obj", node.tags[text], "colon", key=text[1:-1]))
                return (*rest, Frame("obj", node.tags[text], "after",
                                     seen=frozenset({node.key})))
            if not any(t.startswith(text) for t in node.tags):
                return None
            return (*rest, top._replace(text=text))
        if kind == "lits":
            assert node is not None
            text = top.text + c
            values = node.prefixes()
            low, high = values.span(text)
            if high > low:
                if high - low == 1 and values.strings[low] == text:
                    # whole, and no other value goes on from here
                    return self._done(rest, item=top._replace(text=text))
                return (*rest, top._replace(text=text))
            if top.text in values:  # whole: the character is the parent's
                after = self._done(rest, item=top)
                return None if after is None else self._char(after, c)
            return None
        if kind == "root":
            if phase == "value":
                return self._begin((*rest, top._replace(phase="in")), node, c)
            return None
        if kind in ("obj", "map"):  # an object of named keys, or a map of free ones
            assert node is not None
            more, whole = _entries(top)
            if phase in ("open", "comma", "comma_sp"):
                if phase == "comma" and c == " ":
                    return (*rest, top._replace(phase="comma_sp"))
                if c == '"' and more:
                    if kind == "map" and node.names is not None:  # a string of the key schema
                        return self._begin(stack, node.names, c)
                    # a named key is tracked against the properties; a map's (or an open
                    # object's) is any new string
                    named = kind == "obj" and node.items is None
                    return (*stack, Frame("key" if named else "mkey", None))
                return self._done(rest) if c == "}" and phase == "open" and whole else None
            if phase == "colon":
                return (*rest, top._replace(phase="value")) if c == ":" else None
            if phase in ("value", "value_sp"):
                if phase == "value" and c == " ":
                    return (*rest, top._replace(phase="value_sp"))
                child = _value_of(node, top.key) if kind == "obj" else node.items
                return self._begin((*rest, top._replace(phase="in")), child, c)
            if phase == "after":
                if c == "," and more:
                    return (*rest, top._replace(phase="comma"))
                return self._done(rest) if c == "}" and whole else None
            return None
        if kind == "arr":
            assert node is not None and node.items is not None
            least, most = node.lengths
            if phase == "open" and c == "]":
                return self._done(rest) if least == 0 else None
            if phase in ("open", "comma", "comma_sp"):
                if phase == "comma" and c == " ":
                    return (*rest, top._replace(phase="comma_sp"))
                if most == 0:
                    return None
                return self._begin((*rest, top._replace(phase="in")), node.item(top.size), c)
            if phase == "after":
                if c == "," and (most is None or top.size < most) and (
                        not node.unique or node.items_cost(0, 1, top.seen) < NEVER):
                    return (*rest, top._replace(phase="comma"))
                if c == "]" and top.size >= least:
                    return self._done(rest)
            return None
        return None

    @staticmethod
    def _pattern_run(state: State, text: str) -> State | None:
        """:meth:`feed` of characters a ``pattern`` string holds as themselves (no quote,
        backslash or control character): the pattern's steps alone. One check of a set's
        items at the end is enough: a text that could only repeat an item after some of
        these characters can only repeat one after all of them."""
        top, rest = state[-1], state[:-1]
        assert top.node is not None and top.node.pattern is not None
        after = top.node.pattern.feed(top.rx, text)
        if after is None:
            return None
        kept = _distinct_items(rest[-1])
        frame = Frame("str", top.node, "", top.text + text if kept else "", top.seen, top.key,
                      top.size, after)
        if kept and not _fresh(frame, rest[-1].seen):
            return None
        return (*rest, frame)

    def _patterned(self, rest: State, top: Frame, c: str) -> State | None:
        """A string with a ``pattern``: its decoded characters step the pattern's
        automaton, which refuses any that leaves no match within the lengths to finish
        (no ``\\u`` escapes)."""
        assert top.node is not None and top.node.pattern is not None
        pattern = top.node.pattern
        kept = _distinct_items(rest[-1])  # an item of distinct items: its text is kept
        if top.phase == "esc":
            decoded = _DECODED.get(c)
            after = None if decoded is None else pattern.step(top.rx, decoded)
            return None if after is None else (*rest, top._replace(
                phase="", rx=after, text=top.text + "\\" + c if kept else ""))
        if c == '"':
            return self._done(rest, item=top) if pattern.accepting(top.rx) else None
        if c < " ":
            return None
        if c == "\\":
            return (*rest, top._replace(phase="esc")) if _escapes(pattern, top.rx) else None
        after = pattern.step(top.rx, c)
        if after is None:
            return None
        # (built whole rather than by ``_replace``: this is the hot path of a pattern)
        return (*rest, Frame("str", top.node, "", top.text + c if kept else "", top.seen,
                             top.key, top.size, after))

    @staticmethod
    def _map_key(rest: State, top: Frame, c: str) -> State | None:
        """A map's key: any non-empty string the map does not have yet (compared decoded,
        so an escape spells no second copy). An open object's: the same, or one of its
        named keys (then its value is that property's; kept in ``json.dumps`` spelling)."""
        phase = top.phase
        if phase:  # inside an escape
            escaped = _escaped(phase, c)
            return None if escaped is None else (
                *rest, top._replace(phase=escaped, text=top.text + _escape_text(phase, c)))
        if c == '"':
            key = _decoded(top.text)
            parent = rest[-1]
            if parent.kind == "obj":
                assert parent.node is not None
                key = json.dumps(key)[1:-1]
                named = key in parent.node.properties
                if key in parent.seen or not key and not named:
                    return None
            elif not key or key in parent.seen:
                return None
            return (*rest[:-1], parent._replace(phase="colon", key=key))
        if c < " ":
            return None
        return (*rest, top._replace(phase="esc" if c == "\\" else "",
                                    text=top.text if c == "\\" else top.text + c))

    def _begin(self, stack: State, node: Node | None, c: str) -> State | None:
        """Start a value of ``node`` with its first character (the parent already says
        ``in`` / ``value``)."""
        assert node is not None
        kind = node.kind
        if kind == "union":
            starting = [branch for branch in node.branches if c in branch.first]
            if len(starting) == 1:
                return self._begin(stack, starting[0], c)
            # alternatives that start alike (anyOf): each followed on a stack of its own
            return self._rejoin(stack, node, [
                sub for branch in starting
                if (sub := self._begin((Frame("root", branch, "in"),), branch, c)) is not None])
        if kind == "any":
            for branch in ANY_BRANCHES:
                if c in branch.first:
                    return self._begin(stack, branch, c)
            return None
        if kind == "map":
            return (*stack, Frame("map", node, "open")) if c == "{" else None
        if kind == "tagged":
            return (*stack, Frame("tagged", node)) if c == "{" else None
        if kind == "literal":
            return self._char((*stack, Frame("lits", node)), c) if c in node.first else None
        if kind == "object":
            return (*stack, Frame("obj", node, "open")) if c == "{" else None
        if kind == "array":
            return (*stack, Frame("arr", node, "open")) if c == "[" else None
        if kind == "string":
            if c != '"':
                return None
            if node.pattern is not None:
                return (*stack, Frame("str", node, rx=node.pattern.start()))
            return (*stack, Frame("str", node))
        if kind in ("number", "integer"):
            if (c == "-" or c.isdigit() and c.isascii()) and _number_prefix(node, c):
                return (*stack, Frame("num", node, text=c))
            return None
        if kind == "boolean" and c in "tf":
            return (*stack, Frame("lit", node, text=c, key="true" if c == "t" else "false"))
        if kind == "null" and c == "n":
            return (*stack, Frame("lit", node, text=c, key="null"))
        return None

    def _forked(self, rest: State, top: Frame, c: str) -> State | None:
        """A character for a fork: each alternative's stack takes it or drops out. When
        none takes it but one is a whole value (a number: ``1`` where another alternative
        wanted ``10``), the value closes and the character is its parent's — no character
        both goes on inside a JSON value and follows it."""
        assert top.node is not None
        live = [after for sub in top.subs if (after := self._step(sub, c)) is not None]
        if live:
            return self._rejoin(rest, top.node, live)
        if any(_whole(sub) for sub in top.subs):
            after = self._done(rest)
            return None if after is None else self._char(after, c)
        return None

    def _rejoin(self, stack: State, node: Node, subs: list[State]) -> State | None:
        """``stack`` (its top says ``in``) with the alternatives still possible: closed
        when each has closed its value (JSON values other than numbers end where they
        end: they all close together), the one left spliced back in place of its root,
        else a fork of them."""
        if not subs:
            return None
        alive = tuple(dict.fromkeys(subs))
        if all(sub[0].phase == "done" for sub in alive):
            return self._done(stack)
        if len(alive) == 1:
            return (*stack, *alive[0][1:])
        return (*stack, Frame("fork", node, subs=alive))

    def _done(self, stack: State, key: str = "", item: Frame | None = None) -> State | None:
        """Close the value (or key) on top of ``stack`` (``item``: its frame, for the
        identity of a scalar): its parent moves on."""
        parent = stack[-1]
        rest = stack[:-1]
        if parent.kind == "root":
            return (*rest, parent._replace(phase="done"))
        if parent.kind == "map" and parent.phase != "in":  # a key of the key schema closed
            assert item is not None
            name = _identity(item)  # (such a map's ``seen`` holds identities)
            return None if name in parent.seen else (
                *rest, parent._replace(phase="colon", key=name))
        if parent.kind == "map":  # a value closed (free keys close in _map_key)
            return (*rest, parent._replace(phase="after", seen=parent.seen | {parent.key},
                                           key=""))
        if parent.kind == "arr":
            assert parent.node is not None
            seen = parent.seen
            if parent.node.unique:  # a repeated item is refused as it closes
                assert item is not None
                name = _identity(item)
                if name in seen:
                    return None
                seen = seen | {name}
            return (*rest, parent._replace(phase="after", seen=seen,
                                           size=parent.size + parent.node.counts))
        # An object: a key just closed, or a value did.
        if parent.phase in ("open", "comma", "comma_sp"):
            return (*rest, parent._replace(phase="colon", key=key))
        return (*rest, parent._replace(phase="after", seen=parent.seen | {parent.key}, key=""))

    # -- what a state allows -------------------------------------------------------------

    def accepting(self, state: State) -> bool:
        """Whether the text so far is a whole valid document."""
        return _whole(state)

    def complete(self, state: State) -> bool:
        """Whether the document is whole and nothing may follow."""
        return len(state) == 1 and state[0].phase == "done"

    def min_chars(self, state: State) -> int:
        """The fewest characters that turn ``state`` into a whole document (each of them
        one token at worst, so it bounds the tokens still needed)."""
        found = self._needed.get(state)
        if found is None:
            if len(self._needed) > _MEMO_LIMIT:
                self._needed.clear()
            found = self._needed[state] = self._min_chars(state)
        return found

    def _min_chars(self, state: State) -> int:
        total = 0
        for depth in range(len(state) - 1, -1, -1):
            frame = state[depth]
            kind, node, phase = frame.kind, frame.node, frame.phase
            if depth and _distinct_items(state[depth - 1]):
                continue  # an item of distinct items: its array counts it with the rest
            if kind == "fork":
                total += min(self.min_chars(sub) for sub in frame.subs)
            elif kind == "num":
                if node is not None and node.bounds is not None:
                    total += extra_chars(frame.text, node.bounds, MAX_NUMBER_CHARS) or 0
                else:
                    total += 0 if _number_done(frame) else 1
            elif kind == "lits":
                assert node is not None
                total += min(len(v) - len(frame.text)
                             for v in node.prefixes().starting(frame.text))
            elif kind == "lit":
                total += len(frame.key) - len(frame.text)
            elif kind == "tagged":
                assert node is not None
                total += min(len(t) - len(frame.text) + _after_tag(node, t, o)
                             for t, o in node.tags.items() if t.startswith(frame.text))
            elif kind == "str" and node is not None and node.pattern is not None:
                total += 1 + min(_escapes(node.pattern, frame.rx) if frame.phase == "esc"
                                 else (int(node.pattern.left(frame.rx)),))
            elif kind == "str":
                # a tracked (enum) string's remainder already counts its escapes
                total += 1 if _tracks(frame) else 1 + _escape_left(phase)
                if _counted(frame):
                    total += max(_lengths_of(frame)[0] - frame.size - (phase == "esc"), 0)
                if node is not None and node.enum is not None:
                    total += min(len(e) - _typed(frame)
                                 for e in node.prefixes().starting(_prefix(frame)))
            elif kind == "key":
                obj = state[depth - 1]
                assert obj.node is not None
                missing = obj.node.required - obj.seen
                # the closing without key k: that of all missing keys, less k's if missing
                closing = _closing(obj.node, missing, after_value=True)
                total += min(
                    len(k) - _typed(frame) + 1 + 1 + obj.node.properties[k].min_chars
                    + closing - (obj.node.key_cost(k) + 1 if k in missing else 0)
                    for k in _offered(state[:depth + 1], _prefix(frame)))
                # the object frame below is accounted for here
                return total + self._below(state[:depth - 1])
            elif kind == "obj":
                assert node is not None
                missing = node.required - frame.seen
                if phase == "open":
                    total += _closing(node, missing, after_value=False)
                elif phase in ("comma", "comma_sp"):
                    if missing:
                        total += _closing(node, missing, after_value=False)
                    else:  # some key must follow the comma
                        costs = [node.key_cost(k) for k in node.properties
                                 if k not in frame.seen]
                        if node.items is not None:  # "k":value
                            costs.append(4 + node.items.min_chars)
                        total += 1 + min(costs)
                elif phase == "colon":
                    total += 1 + _value_of(node, frame.key).min_chars + _closing(
                        node, missing - {frame.key}, after_value=True)
                elif phase in ("value", "value_sp"):
                    total += _value_of(node, frame.key).min_chars + _closing(
                        node, missing - {frame.key}, after_value=True)
                elif phase == "in":
                    total += _closing(node, missing - {frame.key}, after_value=True)
                else:  # after
                    total += _closing(node, missing, after_value=True)
            elif kind == "mkey" and state[depth - 1].kind == "obj":  # an open object's key
                # the object frame below is accounted for here
                return total + _open_key(frame, state[depth - 1]) + self._below(
                    state[:depth - 1])
            elif kind == "mkey":  # the closing quote; one more character if the key
                # so far is empty or one the map has
                seen = state[depth - 1].seen
                whole = phase == "" and (not frame.text
                                         or bool(seen) and _decoded(frame.text) in seen)
                total += 1 + _escape_left(phase) + whole
            elif kind == "map" and node is not None and node.names is not None:
                total += _named_map_left(state, depth)
            elif kind == "map":
                assert node is not None and node.items is not None
                value, least, done = node.items.min_chars, node.lengths[0], len(frame.seen)
                entry = 3 + 1 + value  # "k":value (keys are non-empty)
                # entries still needed after the one in hand, then the brace
                after = max(least - done - 1, 0) * (1 + entry) + 1
                if phase in ("open", "comma", "comma_sp"):
                    if depth < len(state) - 1:  # its key is being written
                        total += 1 + value + after
                    elif phase == "open":
                        total += least * entry + max(least - 1, 0) + 1
                    else:
                        need = max(least - done, 1)
                        total += need * entry + need - 1 + 1
                elif phase == "colon":
                    total += 1 + value + after
                elif phase in ("value", "value_sp"):
                    total += value + after
                elif phase == "in":
                    total += after
                else:  # after
                    total += max(least - done, 0) * (1 + entry) + 1
            elif kind == "arr" and node is not None and node.unique:
                assert node.items is not None
                least, done = node.lengths[0], frame.size
                if phase == "in":  # the item on top and the ones still needed, distinct
                    left = max(least - done - 1, 0)
                    total += joint(_completions(state[depth + 1]), node.items, frame.seen,
                                   left) + left + 1
                elif phase == "open":
                    total += node.items_cost(0, least, frame.seen) + max(least - 1, 0) + 1
                elif phase in ("comma", "comma_sp"):
                    need = max(least - done, 1)
                    total += node.items_cost(0, need, frame.seen) + need - 1 + 1
                else:  # after
                    left = max(least - done, 0)
                    total += node.items_cost(0, left, frame.seen) + left + 1
            elif kind == "arr":
                assert node is not None and node.items is not None
                least, done = node.lengths[0], frame.size
                if phase == "open":
                    total += node.items_cost(0, least) + max(least - 1, 0) + 1
                elif phase in ("comma", "comma_sp"):
                    need = max(least - done, 1)
                    total += node.items_cost(done, need) + need - 1 + 1
                else:  # an item is being written ("in") or was ("after")
                    done += phase == "in"
                    left = max(least - done, 0)
                    total += node.items_cost(done, left) + left + 1
            elif kind == "root":
                total += node.min_chars if phase == "value" and node is not None else 0
        return total

    def _below(self, state: State) -> int:
        return self.min_chars(state) if state else 0


def _entries(frame: Frame) -> tuple[bool, bool]:
    """For an object or map frame: whether another key may come, and whether the keys so
    far make it whole (the required ones; at least ``minProperties``)."""
    node = frame.node
    assert node is not None
    if frame.kind == "obj":
        return (node.items is not None or not frame.seen.issuperset(node.properties),
                node.required <= frame.seen)
    least, most = node.lengths
    return most is None or len(frame.seen) < most, len(frame.seen) >= least


def _value_of(node: Node, key: str) -> Node:
    """The schema of an object's value under ``key``: its property's, else (an open
    object) the other keys'."""
    found = node.properties.get(key, node.items)
    assert found is not None
    return found


def _named_map_left(state: State, depth: int) -> int:
    """:meth:`JsonMachine._min_chars` of a map with a key schema (frame ``depth`` of
    ``state``): the key in hand if any, the entries still needed (their keys the cheapest
    distinct ones of the key schema), each a colon and the fewest characters of a value,
    the commas, the brace."""
    frame = state[depth]
    node = frame.node
    assert node is not None and node.names is not None and node.items is not None
    value, least, done, phase = node.items.min_chars, node.lengths[0], len(frame.seen), \
        frame.phase
    if phase in ("open", "comma", "comma_sp"):
        if depth < len(state) - 1:  # its key is being written: it and those still needed
            left = max(least - done - 1, 0)
            return joint(_completions(state[depth + 1]), node.names, frame.seen, left) \
                + (left + 1) * (1 + value) + left + 1
        need = max(least - done, 0 if phase == "open" else 1)
        return node.entries_cost(need, frame.seen) + max(need - 1, 0) + 1
    taken = frame.seen | {frame.key} if phase != "after" else frame.seen
    after = max(least - done - (phase != "after"), 0)  # entries after the one in hand
    rest = node.entries_cost(after, taken) + after + 1
    if phase == "colon":
        return 1 + value + rest
    if phase in ("value", "value_sp"):
        return value + rest
    return rest  # "in" (the value's own frame counts itself) or "after"


def _open_key(frame: Frame, obj: Frame) -> int:
    """The fewest characters that finish an open object from a key being written: close
    the key as it is, grow it into a named key not written yet, or into a new other key
    (one more character, or the escape in hand), then its value, then the rest."""
    node = obj.node
    assert node is not None and node.items is not None
    missing = node.required - obj.seen
    options = []  # each: the key's characters still to come, its colon, value and the rest
    if not frame.phase:  # as it is
        key = json.dumps(_decoded(frame.text))[1:-1]
        if key not in obj.seen and (key or key in node.properties):
            options.append(1 + _value_of(node, key).min_chars
                           + _closing(node, missing - {key}, after_value=True))
    options.extend(len(k) - _typed(frame) + 1 + node.properties[k].min_chars
                   + _closing(node, missing - {k}, after_value=True)
                   for k in node.properties
                   if k not in obj.seen and k.startswith(_prefix(frame)))
    grow = _escape_left(frame.phase) if frame.phase else 1  # to a key no one has
    options.append(grow + 1 + node.items.min_chars + _closing(node, missing, after_value=True))
    return 1 + min(options)  # and the closing quote


def _escaped(phase: str, c: str) -> str | None:
    """A string's phase after ``c`` inside an escape, or ``None`` when ``c`` cannot come
    there. ``esc``: just after the backslash; ``uN``: N hex digits of a ``\\uXXXX``
    written (``u1d``: the first is ``d``; ``u2h`` / ``u3h``: a high surrogate); ``l``:
    a high surrogate written, whose low one must follow (``\\``, then ``lu``: ``u``,
    then ``lN``: N of its digits). A lone surrogate is refused: RFC 8259 leaves it to
    the reader, and strict ones (Pydantic's) refuse it."""
    if phase == "esc":
        return None if c not in _ESCAPES else "u0" if c == "u" else ""
    if phase in ("l", "lu"):
        return None if c != ("\\" if phase == "l" else "u") else "lu" if phase == "l" else "l0"
    if c not in _HEX:
        return None
    if phase == "u0":
        return "u1d" if c in "dD" else "u1"
    if phase == "u1d":  # d8-db: a high surrogate; dc-df: a lone low one
        return "u2h" if c in "89abAB" else None if c in "cdefCDEF" else "u2"
    if phase == "l0":
        return "l1" if c in "dD" else None
    if phase == "l1":
        return "l2" if c in "cdefCDEF" else None
    return _HEX_NEXT[phase]


def _escape_text(phase: str, c: str) -> str:
    """What ``c`` adds to a kept string's source text inside an escape (the backslash is
    written with the escape's letter)."""
    return "\\" + c if phase == "esc" else c


def _escapes(pattern: Pattern, state: int) -> list[int]:
    """For a ``pattern`` string after a backslash: the characters each escape that the
    pattern allows there still needs (its letter, then the rest of the match)."""
    return [1 + int(pattern.left(after)) for decoded in _DECODED.values()
            if (after := pattern.step(state, decoded)) is not None]


def _decoded(text: str) -> str:
    """A JSON string's content as written (escapes included), decoded."""
    return text if "\\" not in text else str(json.loads(f'"{text}"'))


def _tracks(frame: Frame) -> bool:
    return frame.kind == "key" or (frame.node is not None and frame.node.enum is not None)


def _offered(stack: State, prefix: str) -> Iterator[str]:
    """The choices of a tracked string (an object's keys not written yet; an enum's
    values, not one an array of distinct items has) that start with ``prefix``."""
    top = stack[-1]
    if top.kind == "key":
        obj = stack[-2]
        assert obj.node is not None
        return (k for k in obj.node.prefixes().starting(prefix) if k not in obj.seen)
    assert top.node is not None and top.node.enum is not None
    values = top.node.prefixes().starting(prefix)
    if len(stack) > 1 and _distinct_items(stack[-2]):  # not one the array has
        seen = stack[-2].seen
        return (e for e in values if identity(f'"{e}"') not in seen)
    return values


def _offers(stack: State, prefix: str) -> bool:
    """Whether a choice of a tracked string (:func:`_offered`) starts with ``prefix``."""
    top = stack[-1]
    if top.kind == "key":
        obj = stack[-2]
        assert obj.node is not None
        return obj.node.prefixes().any_starting(prefix, obj.seen)
    return next(_offered(stack, prefix), None) is not None


def _is_choice(stack: State, text: str) -> bool:
    """Whether ``text`` is a choice of a tracked string (:func:`_offered`)."""
    top = stack[-1]
    if top.kind == "key":
        obj = stack[-2]
        assert obj.node is not None
        return text in obj.node.prefixes() and text not in obj.seen
    assert top.node is not None
    if text not in top.node.prefixes():
        return False
    return not (len(stack) > 1 and _distinct_items(stack[-2])
                and identity(f'"{text}"') in stack[-2].seen)


def _distinct_items(frame: Frame) -> bool:
    """Whether ``frame`` is an array of distinct items writing one, or a map writing a key
    of its key schema (distinct from its other keys the same way)."""
    node = frame.node
    if node is None:
        return False
    if frame.kind == "arr":
        return frame.phase == "in" and node.unique
    return frame.kind == "map" and node.names is not None \
        and frame.phase in ("open", "comma", "comma_sp")


def _fresh(frame: Frame, seen: frozenset[str]) -> bool:
    """Whether the item being written can still become one not in ``seen``: at once when
    no item in ``seen`` starts with the string written so far (any completion is new)."""
    if not seen:
        return True
    node = frame.node
    if frame.kind == "str" and not frame.phase and node is not None and node.enum is None:
        written = "s" + _decoded(frame.text)
        if not any(name.startswith(written) for name in seen):
            return True
    return any(name not in seen for _, name in _completions(frame))


def _identity(frame: Frame) -> str:
    """The identity of the scalar a closed frame wrote (see :func:`._jsonunique.identity`)."""
    if frame.kind == "str":
        return identity(f'"{frame.text}"')
    return identity(frame.key if frame.kind == "lit" else frame.text)


def _completions(frame: Frame) -> Iterator[Candidate]:
    """The values an item of distinct items being written can still become, each with the
    characters it still takes (its closing quote included), cheapest first."""
    node = frame.node
    assert node is not None
    if frame.kind == "num":
        return numbers(frame.text, node.bounds, integer=node.kind == "integer")
    if frame.kind == "lit":
        return iter([(len(frame.key) - len(frame.text), "l" + frame.key)])
    if frame.kind == "lits":
        return iter(sorted((len(v) - len(frame.text), identity(v))
                           for v in node.prefixes().starting(frame.text)))
    if node.enum is not None:  # a string enum
        return iter(sorted((len(e) - _typed(frame) + 1, identity(f'"{e}"'))
                           for e in node.prefixes().starting(_prefix(frame))))
    if node.pattern is not None:
        return _pattern_completions(node.pattern, frame)
    text, phase = frame.text, frame.phase
    if phase:  # inside an escape: its shortest ends first, surrogate pairs last
        pending, start = ("\\u", "u0") if phase == "esc" else ("", phase)
        plain = ((2, identity(f'"{text}\\{letter}"')) for letter in '"\\/bfnrt') \
            if phase == "esc" else iter(())
        letter = 1 if phase == "esc" else 0  # the "u" still to write
        single = ((letter + len(tail) + 1, identity(f'"{text}{pending}{tail}"'))
                  for tail, paired in _escape_tails(start) if not paired)
        pairs = ((letter + len(tail) + 1, identity(f'"{text}{pending}{tail}"'))
                 for tail, paired in _escape_tails(start) if paired)
        return itertools.chain(plain, single, pairs)
    return itertools.chain([(1, identity(f'"{text}"'))],
                           ((2, identity(f'"{text}{c}"')) for c in plain_chars()))


def _pattern_completions(pattern: Pattern, frame: Frame) -> Iterator[Candidate]:
    """:func:`_completions` of a ``pattern`` string: the pattern's own completions, after
    the escape being written if any (its letter costs one more character)."""
    written = "s" + _decoded(frame.text)
    if frame.phase != "esc":
        return ((cost + 1, written + rest) for cost, rest in pattern.completions(frame.rx))
    streams = [((1 + cost + 1, written + char + rest) for cost, rest in pattern.completions(after))
               for char in _DECODED.values() if (after := pattern.step(frame.rx, char)) is not None]
    return heapq.merge(*streams, key=lambda candidate: candidate[0])


def _number_done(frame: Frame) -> bool:
    node = frame.node
    if node is not None and node.bounds is not None:
        return in_range(frame.text, node.bounds)
    grammar = _INTEGER if node is not None and node.kind == "integer" else _NUMBER
    return grammar.fullmatch(frame.text) is not None


def _number_prefix(node: Node | None, text: str) -> bool:
    """Whether ``text`` may still grow into a number of ``node`` (in its bounds)."""
    if node is not None and node.bounds is not None:
        grammar = _INTEGER_PREFIX if node.kind == "integer" else _DECIMAL_PREFIX
        return grammar.fullmatch(text) is not None and extra_chars(
            text, node.bounds, MAX_NUMBER_CHARS) is not None
    grammar = _INTEGER_PREFIX if node is not None and node.kind == "integer" \
        else _NUMBER_PREFIX
    return grammar.fullmatch(text) is not None


def _whole(stack: State) -> bool:
    """Whether the stack (rooted at a ``root`` frame) holds a whole value."""
    if len(stack) == 1:
        return stack[0].phase == "done"
    return len(stack) == 2 and _value_done(stack[1])


def _value_done(frame: Frame) -> bool:
    """Whether a number, a set value or a fork on top of the stack could end here."""
    if frame.kind == "num":
        return _number_done(frame)
    if frame.kind == "fork":
        return any(_whole(sub) for sub in frame.subs)
    return frame.kind == "lits" and frame.node is not None and frame.text in frame.node.prefixes()


def _counted(frame: Frame) -> bool:
    """Whether a string frame counts its characters (its schema bounds its length)."""
    node = frame.node
    return (frame.kind == "str" and node is not None and node.enum is None
            and node.pattern is None and node.lengths != (0, None))


def _lengths_of(frame: Frame) -> tuple[int, int | None]:
    assert frame.node is not None
    return frame.node.lengths


def _prefix(frame: Frame) -> str:
    """What a tracked string has written, a pending backslash included: only choices that
    start so can still be finished (a pending escape rules out plain ones)."""
    return frame.text + ("\\" if frame.phase == "esc" else "")


def _typed(frame: Frame) -> int:
    """Characters a tracked string has written (a pending backslash is not in its text)."""
    return len(frame.text) + (1 if frame.phase == "esc" else 0)


def _escape_left(phase: str) -> int:
    return _ESCAPE_LEFT[phase]


def _escape_tails(phase: str) -> Iterator[tuple[str, bool]]:
    """The texts that finish an escape from ``phase`` (hex digits in lower case), in
    order, each with whether it goes through a surrogate pair's second half."""
    if not phase:
        yield "", False
        return
    for c in "\\" if phase == "l" else "u" if phase == "lu" else "0123456789abcdef":
        after = _escaped(phase, c)
        if after is not None:
            for tail, paired in _escape_tails(after):
                yield c + tail, paired or after == "l"


def _after_tag(node: Node, tag: str, chosen: Node) -> int:
    """Characters that finish the object ``tag`` opened: after a discriminator's value,
    the other required keys; after a key of its own, its value too."""
    if node.key:
        return _closing(chosen, chosen.required - {node.key}, after_value=True)
    key = tag[1:-1]
    return 1 + chosen.properties[key].min_chars + _closing(
        chosen, chosen.required - {key}, after_value=True)


def _closing(node: Node, missing: frozenset[str] | set[str], *, after_value: bool) -> int:
    """Characters that write the ``missing`` required keys and the closing brace."""
    cost = sum(node.key_cost(k) for k in missing)
    commas = len(missing) if after_value else max(0, len(missing) - 1)
    return cost + commas + 1
