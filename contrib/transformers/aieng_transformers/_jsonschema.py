"""An incremental JSON-schema prefix validator: a character-level pushdown automaton.

A state is an immutable tuple of frames (the parse stack), so one state can be extended by
many candidate tokens without copying, and equal states hash equal (a string's content is
not part of the state, so every step inside a free string repeats one state).

The supported subset (anything else is refused before generating, by :func:`compile_schema`):

- ``type``: ``object``, ``array``, ``string``, ``number``, ``integer``, ``boolean``, ``null``
  (one type; a list of types is refused); a schema without ``type`` but with ``properties``
  is an object, with ``items`` an array, with ``enum`` a string.
- objects: ``properties``, ``required`` (names among the properties);
  ``additionalProperties`` may only be ``false`` (it is implied: no other key is written).
  Keys come in any order, each at most once.
- arrays: ``items`` (one schema for every item; none means an array of strings is refused:
  ``items`` is required).
- strings: ``enum`` (strings only).
- annotations ignored: ``title``, ``description``, ``$schema``, ``$id``, ``default``,
  ``examples``.

The text is compact JSON: no whitespace except at most one space after ``:`` and ``,``; a
number has at most :data:`MAX_NUMBER_CHARS` characters; enum values and property names are
written in their ``json.dumps`` spelling.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = ["MAX_NUMBER_CHARS", "JsonMachine", "SchemaError", "compile_schema"]

#: The longest number the automaton writes (sign, digits, fraction, exponent).
MAX_NUMBER_CHARS = 24
_ANNOTATIONS = frozenset({"title", "description", "$schema", "$id", "default", "examples"})
_KEYWORDS = {
    "object": frozenset({"type", "properties", "required", "additionalProperties"}),
    "array": frozenset({"type", "items"}),
    "string": frozenset({"type", "enum"}),
    "number": frozenset({"type"}),
    "integer": frozenset({"type"}),
    "boolean": frozenset({"type"}),
    "null": frozenset({"type"}),
}
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
# Prefixes of a number: what may still grow into one.
_NUMBER_PREFIX = re.compile(r"-?((0|[1-9][0-9]*)(\.|(\.[0-9]+)?([eE][+-]?[0-9]*)?))?")
_INTEGER_PREFIX = re.compile(r"-?(0|[1-9][0-9]*)?")
_HEX = frozenset("0123456789abcdefABCDEF")
_ESCAPES = frozenset('"\\/bfnrtu')


class SchemaError(ValueError):
    """The schema uses a keyword or form outside the supported subset (see the module)."""


class Node:
    """A compiled schema: its kind, children and the fewest characters of a valid value."""

    __slots__ = ("enum", "items", "kind", "min_chars", "properties", "required")

    def __init__(self, kind: str, *, properties: dict[str, Node] | None = None,
                 required: frozenset[str] = frozenset(), items: Node | None = None,
                 enum: tuple[str, ...] | None = None) -> None:
        self.kind = kind
        self.properties = properties or {}
        self.required = required
        self.items = items
        self.enum = enum  # spelled as JSON source, without the quotes
        self.min_chars = self._min_chars()

    def key_cost(self, key: str) -> int:
        """Characters of ``"key":`` and the smallest value of that property."""
        return len(key) + 3 + self.properties[key].min_chars

    def _min_chars(self) -> int:
        if self.kind == "object":
            cost = sum(self.key_cost(k) for k in self.required)
            return 2 + cost + max(0, len(self.required) - 1)
        if self.kind == "string":
            return 2 + (min(len(e) for e in self.enum) if self.enum is not None else 0)
        return {"array": 2, "number": 1, "integer": 1, "boolean": 4, "null": 4}[self.kind]


def compile_schema(schema: Mapping[str, Any], where: str = "#") -> Node:
    """Compile a JSON schema of the supported subset.

    :raises SchemaError: naming the JSON pointer and the keyword outside the subset.
    """
    if not isinstance(schema, Mapping):
        raise SchemaError(f"{where}: a schema must be an object, not {type(schema).__name__}")
    kind = schema.get("type")
    if kind is None:
        kind = ("object" if "properties" in schema else "array" if "items" in schema
                else "string" if "enum" in schema else None)
    if not isinstance(kind, str) or kind not in _KEYWORDS:
        raise SchemaError(f"{where}: 'type' must be one of {sorted(_KEYWORDS)} "
                          f"(one type, not a list), got {kind!r}")
    extra = set(schema) - _KEYWORDS[kind] - _ANNOTATIONS
    if extra:
        raise SchemaError(f"{where}: unsupported keyword(s) {sorted(extra)} for type "
                          f"{kind!r}; supported: {sorted(_KEYWORDS[kind])}")
    if kind == "object":
        if schema.get("additionalProperties", False) is not False:
            raise SchemaError(f"{where}: only 'additionalProperties: false' is supported "
                              "(no key outside 'properties' is ever written)")
        raw = schema.get("properties", {})
        if not isinstance(raw, Mapping):
            raise SchemaError(f"{where}/properties: must be an object")
        properties = {json.dumps(k)[1:-1]: compile_schema(v, f"{where}/properties/{k}")
                      for k, v in raw.items()}
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(r in raw for r in required):
            raise SchemaError(f"{where}/required: must list names among 'properties'")
        return Node("object", properties=properties,
                    required=frozenset(json.dumps(r)[1:-1] for r in required))
    if kind == "array":
        if "items" not in schema:
            raise SchemaError(f"{where}: an array needs 'items'")
        return Node("array", items=compile_schema(schema["items"], f"{where}/items"))
    if kind == "string" and "enum" in schema:
        enum = schema["enum"]
        if not isinstance(enum, list) or not enum or not all(isinstance(e, str) for e in enum):
            raise SchemaError(f"{where}/enum: must be a non-empty list of strings")
        return Node("string", enum=tuple(json.dumps(e)[1:-1] for e in enum))
    return Node(kind)


class Frame(NamedTuple):
    """One level of the parse stack.

    ``kind``: ``root``, ``obj``, ``arr``, ``str``, ``key``, ``num``, ``lit``. ``phase``
    says what comes next; ``text`` is what a number, literal, enum or key holds so far;
    ``seen`` the keys an object has; ``key`` the key whose value comes next (for a
    literal: the word being written).
    """

    kind: str
    node: Node | None
    phase: str = ""
    text: str = ""
    seen: frozenset[str] = frozenset()
    key: str = ""


State = tuple[Frame, ...]


class JsonMachine:
    """The automaton of one compiled schema: a start state, one step per character, and
    what a state still needs."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.root = compile_schema(schema)

    def start(self) -> State:
        return (Frame("root", self.root, "value"),)

    # -- stepping ------------------------------------------------------------------------

    def feed(self, state: State, text: str) -> State | None:
        """The state after ``text``, or ``None`` when no valid document starts so."""
        current: State | None = state
        for char in text:
            current = self._char(current, char)  # type: ignore[arg-type]
            if current is None:
                return None
        return current

    def _char(self, stack: State, c: str) -> State | None:
        top = stack[-1]
        rest = stack[:-1]
        kind, node, phase = top.kind, top.node, top.phase
        if kind == "str" or kind == "key":
            if phase == "esc":
                if c not in _ESCAPES:
                    return None
                text = top.text + "\\" + c if _tracks(top) else ""
                if text and not any(e.startswith(text) for e in _choices(stack)):
                    return None
                return (*rest, top._replace(phase="u0" if c == "u" else "", text=text))
            if phase.startswith("u"):
                if c not in _HEX:
                    return None
                count = int(phase[1]) + 1
                text = top.text + c if _tracks(top) else ""
                if text and not any(e.startswith(text) for e in _choices(stack)):
                    return None
                return (*rest, top._replace(phase="" if count == 4 else f"u{count}", text=text))
            if c == '"':
                if _tracks(top) and top.text not in _choices(stack):
                    return None
                return self._done(rest, top.text if kind == "key" else "")
            if c < " ":
                return None
            if c == "\\":
                if _tracks(top) and not any(e.startswith(top.text + c) for e in _choices(stack)):
                    return None
                return (*rest, top._replace(phase="esc"))
            if _tracks(top):
                text = top.text + c
                if not any(e.startswith(text) for e in _choices(stack)):
                    return None
                return (*rest, top._replace(text=text))
            return stack
        if kind == "num":
            text = top.text + c
            grammar = _INTEGER_PREFIX if node is not None and node.kind == "integer" \
                else _NUMBER_PREFIX
            if len(text) <= MAX_NUMBER_CHARS and grammar.fullmatch(text):
                return (*rest, top._replace(text=text))
            if not _number_done(top):
                return None
            after = self._done(rest)
            return None if after is None else self._char(after, c)
        if kind == "lit":
            text = top.text + c
            word = top.key
            if not word.startswith(text):
                return None
            return self._done(rest) if text == word else (*rest, top._replace(text=text))
        if kind == "root":
            if phase == "value":
                return self._begin((*rest, top._replace(phase="in")), node, c)
            return None
        if kind == "obj":
            assert node is not None
            unseen = [k for k in node.properties if k not in top.seen]
            missing = node.required - top.seen
            if phase in ("open", "comma", "comma_sp"):
                if phase == "comma" and c == " ":
                    return (*rest, top._replace(phase="comma_sp"))
                if c == '"' and unseen:
                    return (*stack, Frame("key", None))
                if c == "}" and phase == "open" and not missing:
                    return self._done(rest)
                return None
            if phase == "colon":
                return (*rest, top._replace(phase="value")) if c == ":" else None
            if phase in ("value", "value_sp"):
                if phase == "value" and c == " ":
                    return (*rest, top._replace(phase="value_sp"))
                child = node.properties[top.key]
                return self._begin((*rest, top._replace(phase="in")), child, c)
            if phase == "after":
                if c == "," and unseen:
                    return (*rest, top._replace(phase="comma"))
                if c == "}" and not missing:
                    return self._done(rest)
                return None
            return None
        if kind == "arr":
            assert node is not None and node.items is not None
            if phase == "open" and c == "]":
                return self._done(rest)
            if phase in ("open", "comma", "comma_sp"):
                if phase == "comma" and c == " ":
                    return (*rest, top._replace(phase="comma_sp"))
                return self._begin((*rest, top._replace(phase="in")), node.items, c)
            if phase == "after":
                if c == ",":
                    return (*rest, top._replace(phase="comma"))
                if c == "]":
                    return self._done(rest)
            return None
        return None

    def _begin(self, stack: State, node: Node | None, c: str) -> State | None:
        """Start a value of ``node`` with its first character (the parent already says
        ``in`` / ``value``)."""
        assert node is not None
        kind = node.kind
        if kind == "object":
            return (*stack, Frame("obj", node, "open")) if c == "{" else None
        if kind == "array":
            return (*stack, Frame("arr", node, "open")) if c == "[" else None
        if kind == "string":
            return (*stack, Frame("str", node)) if c == '"' else None
        if kind in ("number", "integer"):
            if c == "-" or c.isdigit() and c.isascii():
                return (*stack, Frame("num", node, text=c))
            return None
        if kind == "boolean" and c in "tf":
            return (*stack, Frame("lit", node, text=c, key="true" if c == "t" else "false"))
        if kind == "null" and c == "n":
            return (*stack, Frame("lit", node, text=c, key="null"))
        return None

    def _done(self, stack: State, key: str = "") -> State | None:
        """Close the value (or key) on top of ``stack``: its parent moves on."""
        parent = stack[-1]
        rest = stack[:-1]
        if parent.kind == "root":
            return (*rest, parent._replace(phase="done"))
        if parent.kind == "arr":
            return (*rest, parent._replace(phase="after"))
        # An object: a key just closed, or a value did.
        if parent.phase in ("open", "comma", "comma_sp"):
            return (*rest, parent._replace(phase="colon", key=key))
        return (*rest, parent._replace(phase="after", seen=parent.seen | {parent.key}, key=""))

    # -- what a state allows -------------------------------------------------------------

    def accepting(self, state: State) -> bool:
        """Whether the text so far is a whole valid document."""
        if len(state) == 1:
            return state[0].phase == "done"
        return len(state) == 2 and state[1].kind == "num" and _number_done(state[1])

    def complete(self, state: State) -> bool:
        """Whether the document is whole and nothing may follow."""
        return len(state) == 1 and state[0].phase == "done"

    def min_chars(self, state: State) -> int:
        """The fewest characters that turn ``state`` into a whole document (each of them
        one token at worst, so it bounds the tokens still needed)."""
        total = 0
        for depth in range(len(state) - 1, -1, -1):
            frame = state[depth]
            kind, node, phase = frame.kind, frame.node, frame.phase
            if kind == "num":
                total += 0 if _number_done(frame) else 1
            elif kind == "lit":
                total += len(frame.key) - len(frame.text)
            elif kind == "str":
                # a tracked (enum) string's remainder already counts its escapes
                total += 1 if _tracks(frame) else 1 + _escape_left(phase)
                if node is not None and node.enum is not None:
                    total += min(len(e) - _typed(frame) for e in node.enum
                                 if e.startswith(_prefix(frame)))
            elif kind == "key":
                obj = state[depth - 1]
                assert obj.node is not None
                missing = obj.node.required - obj.seen
                total += min(
                    len(k) - _typed(frame) + 1 + 1 + obj.node.properties[k].min_chars
                    + _closing(obj.node, missing - {k}, after_value=True)
                    for k in _choices(state[:depth + 1]) if k.startswith(_prefix(frame)))
                # the object frame below is accounted for here
                return total + self._below(state[:depth - 1])
            elif kind == "obj":
                assert node is not None
                missing = node.required - frame.seen
                if phase == "open":
                    total += _closing(node, missing, after_value=False)
                elif phase in ("comma", "comma_sp"):
                    unseen = [k for k in node.properties if k not in frame.seen]
                    if missing:
                        total += _closing(node, missing, after_value=False)
                    else:
                        total += 1 + min(node.key_cost(k) for k in unseen)
                elif phase == "colon":
                    total += 1 + node.properties[frame.key].min_chars + _closing(
                        node, missing - {frame.key}, after_value=True)
                elif phase in ("value", "value_sp"):
                    total += node.properties[frame.key].min_chars + _closing(
                        node, missing - {frame.key}, after_value=True)
                elif phase == "in":
                    total += _closing(node, missing - {frame.key}, after_value=True)
                else:  # after
                    total += _closing(node, missing, after_value=True)
            elif kind == "arr":
                assert node is not None and node.items is not None
                total += node.items.min_chars + 1 if phase in ("comma", "comma_sp") else 1
            elif kind == "root":
                total += node.min_chars if phase == "value" and node is not None else 0
        return total

    def _below(self, state: State) -> int:
        return self.min_chars(state) if state else 0


def _tracks(frame: Frame) -> bool:
    return frame.kind == "key" or (frame.node is not None and frame.node.enum is not None)


def _choices(stack: State) -> tuple[str, ...]:
    top = stack[-1]
    if top.kind == "key":
        obj = stack[-2]
        assert obj.node is not None
        return tuple(k for k in obj.node.properties if k not in obj.seen)
    assert top.node is not None and top.node.enum is not None
    return top.node.enum


def _number_done(frame: Frame) -> bool:
    grammar = _INTEGER if frame.node is not None and frame.node.kind == "integer" else _NUMBER
    return grammar.fullmatch(frame.text) is not None


def _prefix(frame: Frame) -> str:
    """What a tracked string has written, a pending backslash included: only choices that
    start so can still be finished (a pending escape rules out plain ones)."""
    return frame.text + ("\\" if frame.phase == "esc" else "")


def _typed(frame: Frame) -> int:
    """Characters a tracked string has written (a pending backslash is not in its text)."""
    return len(frame.text) + (1 if frame.phase == "esc" else 0)


def _escape_left(phase: str) -> int:
    if phase == "esc":
        return 1
    return 4 - int(phase[1]) if phase.startswith("u") else 0


def _closing(node: Node, missing: frozenset[str] | set[str], *, after_value: bool) -> int:
    """Characters that write the ``missing`` required keys and the closing brace."""
    cost = sum(node.key_cost(k) for k in missing)
    commas = len(missing) if after_value else max(0, len(missing) - 1)
    return cost + commas + 1
