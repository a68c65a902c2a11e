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
- objects: ``properties``, ``required`` (names among the properties);
  ``additionalProperties: false`` (implied: no other key is written). Keys come in any
  order, each at most once. Or, without ``properties``, ``additionalProperties`` a
  schema (or ``true``): a map of free string keys to values of it (``dict[str, X]``).
- ``{}`` / ``true`` (Pydantic's ``Any``): any JSON value.
- arrays: ``items`` (one schema for every item), ``prefixItems`` (one schema per
  leading item: tuples; ``items`` then covers the rest, ``false`` for none, absent for
  any value), ``minItems``, ``maxItems``. An array needs ``items`` or ``prefixItems``.
- strings: ``minLength``, ``maxLength`` (in characters; such a string is written without
  ``\\u`` escapes), ``format`` (an annotation, as JSON Schema 2020-12 has it by default:
  not enforced).
- numbers and integers: ``minimum``, ``maximum``, ``exclusiveMinimum``,
  ``exclusiveMaximum`` (numbers; a bounded number is written in plain decimal, no
  exponent).
- ``enum`` and ``const``: any JSON values (with a ``type``, each must be of it).
- ``anyOf`` / ``oneOf`` and type lists: alternatives a document's first character tells
  apart (an object, an array, a string, a number, ``true``/``false``, ``null``, a set of
  ``enum``/``const`` values), e.g. ``Optional[...]``'s ``anyOf: [X, {"type": "null"}]``.
  ``enum`` / ``const`` values of several alternatives merge into one set; in ``anyOf`` a
  free (unbounded) alternative takes over the values and bounded alternatives of its
  kind (an ``integer`` beside a free ``number`` is the number), and ``{}`` takes over
  everything. Two alternatives that start alike otherwise (two objects) are refused.
- ``$ref`` to ``#``, ``#/$defs/…`` or ``#/definitions/…`` (not recursive), and ``$defs`` /
  ``definitions`` anywhere.
- annotations ignored: ``title``, ``description``, ``$schema``, ``$id``, ``$comment``,
  ``default``, ``examples``, ``deprecated``, ``readOnly``, ``writeOnly``.

The text is compact JSON: no whitespace except at most one space after ``:`` and ``,``; a
number has at most :data:`MAX_NUMBER_CHARS` characters; enum values and property names are
written in their ``json.dumps`` spelling.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from ._jsonbounds import Range, bound, extra_chars, in_range

__all__ = ["MAX_NUMBER_CHARS", "JsonMachine", "SchemaError", "compile_schema"]

#: The longest number the automaton writes (sign, digits, fraction, exponent).
MAX_NUMBER_CHARS = 24
_ANNOTATIONS = frozenset({"title", "description", "$schema", "$id", "$comment", "default",
                          "examples", "deprecated", "readOnly", "writeOnly", "$defs",
                          "definitions"})
_BOUNDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
_KEYWORDS = {
    "object": frozenset({"type", "properties", "required", "additionalProperties"}),
    "array": frozenset({"type", "items", "prefixItems", "minItems", "maxItems"}),
    "string": frozenset({"type", "enum", "const", "minLength", "maxLength", "format"}),
    "number": frozenset({"type"}) | _BOUNDS,
    "integer": frozenset({"type"}) | _BOUNDS,
    "boolean": frozenset({"type"}),
    "null": frozenset({"type"}),
}
_FIRST = {"object": frozenset("{"), "array": frozenset("["), "string": frozenset('"'),
          "number": frozenset("-0123456789"), "integer": frozenset("-0123456789"),
          "boolean": frozenset("tf"), "null": frozenset("n")}
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
# Prefixes of a number: what may still grow into one.
_NUMBER_PREFIX = re.compile(r"-?((0|[1-9][0-9]*)(\.|(\.[0-9]+)?([eE][+-]?[0-9]*)?))?")
_DECIMAL_PREFIX = re.compile(r"-?((0|[1-9][0-9]*)(\.[0-9]*)?)?")
_INTEGER_PREFIX = re.compile(r"-?(0|[1-9][0-9]*)?")
_HEX = frozenset("0123456789abcdefABCDEF")
_ESCAPES = frozenset('"\\/bfnrtu')


class SchemaError(ValueError):
    """The schema uses a keyword or form outside the supported subset (see the module)."""


class Node:
    """A compiled schema: its kind, children, bounds and the fewest characters of a valid
    value. ``union``: ``branches`` told apart by their first character; ``literal``:
    ``literals``, the JSON spellings of ``enum`` / ``const`` values."""

    __slots__ = (
        "bounds",
        "branches",
        "enum",
        "items",
        "kind",
        "lengths",
        "literals",
        "min_chars",
        "prefix",
        "properties",
        "required",
    )

    def __init__(self, kind: str, *, properties: dict[str, Node] | None = None,
                 required: frozenset[str] = frozenset(), items: Node | None = None,
                 enum: tuple[str, ...] | None = None,
                 lengths: tuple[int, int | None] = (0, None), bounds: Range | None = None,
                 literals: tuple[str, ...] = (), branches: tuple[Node, ...] = (),
                 prefix: tuple[Node, ...] = ()) -> None:
        self.kind = kind
        #: An array's leading items' own schemas (``prefixItems``); ``items`` the rest's.
        self.prefix = prefix
        self.properties = properties or {}
        self.required = required
        self.items = items
        self.enum = enum  # spelled as JSON source, without the quotes
        #: Items of an array / characters of a string: at least, at most (None: any).
        self.lengths = lengths
        self.bounds = bounds
        self.literals = literals
        self.branches = branches
        self.min_chars = self._min_chars()

    @property
    def first(self) -> frozenset[str]:
        """The characters a value of this node can start with."""
        if self.kind == "any":
            return frozenset().union(*_FIRST.values())
        if self.kind == "map":
            return _FIRST["object"]
        if self.kind == "union":
            return frozenset().union(*(b.first for b in self.branches))
        if self.kind == "literal":
            return frozenset(lit[0] for lit in self.literals)
        return _FIRST[self.kind]

    def item(self, index: int) -> Node:
        """An array's schema for its item at ``index``."""
        if index < len(self.prefix):
            return self.prefix[index]
        assert self.items is not None
        return self.items

    def items_cost(self, start: int, count: int) -> int:
        """The fewest characters of the array's items ``start`` … ``start + count - 1``
        (without the commas)."""
        return sum(self.item(i).min_chars for i in range(start, start + count))

    @property
    def counts(self) -> bool:
        """Whether an array's frames count their items (bounds or a prefix need it)."""
        return self.lengths != (0, None) or bool(self.prefix)

    def key_cost(self, key: str) -> int:
        """Characters of ``"key":`` and the smallest value of that property."""
        return len(key) + 3 + self.properties[key].min_chars

    def _min_chars(self) -> int:
        if self.kind == "object":
            cost = sum(self.key_cost(k) for k in self.required)
            return 2 + cost + max(0, len(self.required) - 1)
        if self.kind == "string":
            if self.enum is not None:
                return 2 + min(len(e) for e in self.enum)
            return 2 + self.lengths[0]
        if self.kind == "array":
            least = self.lengths[0]
            return 2 + self.items_cost(0, least) + max(0, least - 1)
        if self.kind in ("number", "integer") and self.bounds is not None:
            shortest = extra_chars("", self.bounds, MAX_NUMBER_CHARS)
            assert shortest is not None  # an empty range is refused when compiling
            return shortest
        if self.kind == "union":
            return min(b.min_chars for b in self.branches)
        if self.kind == "map":
            return 2
        if self.kind == "any":
            return 1
        if self.kind == "literal":
            return min(len(lit) for lit in self.literals)
        return {"number": 1, "integer": 1, "boolean": 4, "null": 4}[self.kind]


def compile_schema(schema: Mapping[str, Any], where: str = "#") -> Node:
    """Compile a JSON schema of the supported subset.

    :raises SchemaError: naming the JSON pointer and the keyword outside the subset.
    """
    return _Compiler(schema).node(schema, where, ())


class _Compiler:
    def __init__(self, root: Any) -> None:
        self.root = root
        #: Each ``$ref`` target compiled once (a definition used in many places, or by
        #: definitions used in many places, is one shared node).
        self.resolved: dict[str, Node] = {}

    def node(self, schema: Any, where: str, refs: tuple[str, ...]) -> Node:
        if schema is True or isinstance(schema, Mapping) and set(schema) <= _ANNOTATIONS:
            return ANY
        if not isinstance(schema, Mapping):
            raise SchemaError(f"{where}: a schema must be an object, not "
                              f"{type(schema).__name__}")
        if "$ref" in schema:
            return self.ref(schema, where, refs)
        for word in ("anyOf", "oneOf"):
            if word in schema:
                return self.alternatives(schema, word, where, refs)
        kind = schema.get("type")
        if isinstance(kind, list):
            return self.type_list(schema, kind, where, refs)
        if "enum" in schema or "const" in schema:
            return self.values(schema, where)
        if kind is None:
            kind = ("object" if "properties" in schema or "additionalProperties" in schema
                    else "array" if "items" in schema else None)
        if not isinstance(kind, str) or kind not in _KEYWORDS:
            raise SchemaError(f"{where}: 'type' must be one of {sorted(_KEYWORDS)} or a "
                              f"list of them, got {kind!r}")
        extra = set(schema) - _KEYWORDS[kind] - _ANNOTATIONS
        if extra:
            raise SchemaError(f"{where}: unsupported keyword(s) {sorted(extra)} for type "
                              f"{kind!r}; supported: {sorted(_KEYWORDS[kind])}")
        if kind == "object":
            return self.object(schema, where, refs)
        if kind == "array":
            return self.array(schema, where, refs)
        if kind == "string":
            return Node("string", lengths=_lengths(schema, "minLength", "maxLength", where))
        if kind in ("number", "integer") and set(schema) & _BOUNDS:
            return Node(kind, bounds=_range(schema, kind == "integer", where))
        return Node(kind)

    def array(self, schema: Mapping[str, Any], where: str, refs: tuple[str, ...]) -> Node:
        least, most = _lengths(schema, "minItems", "maxItems", where)
        raw = schema.get("prefixItems", [])
        if not isinstance(raw, list):
            raise SchemaError(f"{where}/prefixItems: must be a list of schemas")
        prefix = tuple(self.node(v, f"{where}/prefixItems/{i}", refs) for i, v in enumerate(raw))
        if "items" not in schema and not prefix:
            raise SchemaError(f"{where}: an array needs 'items' or 'prefixItems'")
        rest = schema.get("items", True)
        if rest is False:  # nothing after the prefix
            most = len(prefix) if most is None else min(most, len(prefix))
            if least > most:
                raise SchemaError(f"{where}: 'minItems' {least} needs more items than "
                                  f"'prefixItems' allows with 'items: false'")
            rest = True
        return Node("array", items=self.node(rest, f"{where}/items", refs),
                    lengths=(least, most), prefix=prefix)

    def object(self, schema: Mapping[str, Any], where: str, refs: tuple[str, ...]) -> Node:
        extra = schema.get("additionalProperties", False)
        if extra is not False:
            if "properties" in schema or "required" in schema:
                raise SchemaError(f"{where}: 'additionalProperties' other than false is "
                                  "supported only without 'properties' (a map); beside "
                                  "them no other key is ever written")
            return Node("map", items=self.node(extra, f"{where}/additionalProperties", refs))
        raw = schema.get("properties", {})
        if not isinstance(raw, Mapping):
            raise SchemaError(f"{where}/properties: must be an object")
        properties = {json.dumps(k)[1:-1]: self.node(v, f"{where}/properties/{k}", refs)
                      for k, v in raw.items()}
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(r in raw for r in required):
            raise SchemaError(f"{where}/required: must list names among 'properties'")
        return Node("object", properties=properties,
                    required=frozenset(json.dumps(r)[1:-1] for r in required))

    def ref(self, schema: Mapping[str, Any], where: str, refs: tuple[str, ...]) -> Node:
        target = schema["$ref"]
        extra = set(schema) - {"$ref"} - _ANNOTATIONS
        if extra:
            raise SchemaError(f"{where}: keyword(s) {sorted(extra)} beside '$ref' are not "
                              "supported")
        if not isinstance(target, str) or not (
                target == "#" or re.fullmatch(r"#/(\$defs|definitions)/[^/]+", target)):
            raise SchemaError(f"{where}/$ref: only '#', '#/$defs/<name>' and "
                              f"'#/definitions/<name>' are supported, got {target!r}")
        if target in refs:
            raise SchemaError(f"{where}/$ref: {target!r} refers to itself (a recursive "
                              "schema has no finite automaton here)")
        if target in self.resolved:
            return self.resolved[target]
        resolved: Any = self.root
        for part in target[2:].split("/") if target != "#" else ():
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(resolved, Mapping) or part not in resolved:
                raise SchemaError(f"{where}/$ref: {target!r} points at nothing")
            resolved = resolved[part]
        node = self.resolved[target] = self.node(resolved, target, (*refs, target))
        return node

    def alternatives(self, schema: Mapping[str, Any], word: str, where: str,
                     refs: tuple[str, ...]) -> Node:
        extra = set(schema) - {word} - _ANNOTATIONS
        options = schema[word]
        if extra:
            raise SchemaError(f"{where}: keyword(s) {sorted(extra)} beside {word!r} are not "
                              "supported")
        if not isinstance(options, list) or not options:
            raise SchemaError(f"{where}/{word}: must be a non-empty list of schemas")
        nodes = [self.node(o, f"{where}/{word}/{i}", refs) for i, o in enumerate(options)]
        return _union(nodes, exclusive=word == "oneOf", where=f"{where}/{word}")

    def type_list(self, schema: Mapping[str, Any], kinds: list[Any], where: str,
                  refs: tuple[str, ...]) -> Node:
        if not kinds or not all(isinstance(k, str) and k in _KEYWORDS for k in kinds):
            raise SchemaError(f"{where}/type: a list of types must name some of "
                              f"{sorted(_KEYWORDS)}, got {kinds!r}")
        if "enum" in schema or "const" in schema:
            return self.values(schema, where)
        allowed = frozenset().union(*(_KEYWORDS[k] for k in kinds))
        extra = set(schema) - allowed - _ANNOTATIONS
        if extra:
            raise SchemaError(f"{where}: unsupported keyword(s) {sorted(extra)} for types "
                              f"{kinds!r}")
        nodes = [self.node({k: v for k, v in schema.items()
                            if k in _KEYWORDS[kind] or k in _ANNOTATIONS} | {"type": kind},
                           where, refs) for kind in dict.fromkeys(kinds)]
        return _union(nodes, exclusive=False, where=f"{where}/type")

    def values(self, schema: Mapping[str, Any], where: str) -> Node:
        if "const" in schema and "enum" in schema:
            raise SchemaError(f"{where}: 'enum' and 'const' together are not supported")
        values = [schema["const"]] if "const" in schema else schema["enum"]
        if not isinstance(values, list) or not values:
            raise SchemaError(f"{where}/enum: must be a non-empty list")
        kind = schema.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if kind is not None else None
        extra = set(schema) - {"type", "enum", "const", "minLength", "maxLength"} - _ANNOTATIONS
        if extra:
            raise SchemaError(f"{where}: keyword(s) {sorted(extra)} beside 'enum' / 'const' "
                              "are not supported")
        if kinds is not None:
            wrong = [v for v in values if not any(_is_type(v, k) for k in kinds)]
            if wrong:
                raise SchemaError(f"{where}: value(s) {wrong!r} are not of type {kind!r}")
        low, high = _lengths(schema, "minLength", "maxLength", where)
        kept = [v for v in values if not isinstance(v, str)
                or low <= len(v) and (high is None or len(v) <= high)]
        if not kept:
            raise SchemaError(f"{where}: no value of 'enum' / 'const' has a length within "
                              "'minLength' / 'maxLength'")
        if all(isinstance(v, str) for v in kept):
            return Node("string", enum=tuple(dict.fromkeys(json.dumps(v)[1:-1] for v in kept)))
        return Node("literal", literals=tuple(dict.fromkeys(
            json.dumps(v, separators=(",", ":")) for v in kept)))


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, {"string": str, "boolean": bool, "null": type(None),
                              "object": dict, "array": list}[kind])


def _lengths(schema: Mapping[str, Any], low_word: str, high_word: str,
             where: str) -> tuple[int, int | None]:
    low, high = schema.get(low_word, 0), schema.get(high_word)
    for word, value in ((low_word, low), (high_word, high)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 0):
            raise SchemaError(f"{where}/{word}: must be a non-negative integer")
    if high is not None and high < low:
        raise SchemaError(f"{where}: {high_word} {high} is below {low_word} {low}")
    return low, high


def _range(schema: Mapping[str, Any], integer: bool, where: str) -> Range:
    values = {}
    for word in _BOUNDS & set(schema):
        value = schema[word]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SchemaError(f"{where}/{word}: must be a number (draft-4 boolean "
                              "exclusive bounds are not supported)")
        values[word] = bound(value)
    low, low_open = values.get("minimum"), False
    if "exclusiveMinimum" in values and (low is None or values["exclusiveMinimum"] >= low):
        low, low_open = values["exclusiveMinimum"], True
    high, high_open = values.get("maximum"), False
    if "exclusiveMaximum" in values and (high is None or values["exclusiveMaximum"] <= high):
        high, high_open = values["exclusiveMaximum"], True
    bounds = Range(low, high, low_open, high_open, integer)
    if bounds.empty() or extra_chars("", bounds, MAX_NUMBER_CHARS) is None:
        raise SchemaError(f"{where}: no {'integer' if integer else 'number'} of at most "
                          f"{MAX_NUMBER_CHARS} characters lies within the bounds")
    return bounds


def _union(nodes: list[Node], *, exclusive: bool, where: str) -> Node:
    """One node for alternatives, each reached by its first character."""
    flat: list[Node] = []
    for node in nodes:
        flat.extend(node.branches if node.kind == "union" else (node,))
    if not exclusive and any(n.kind == "any" for n in flat):
        return ANY  # anyOf with any value (Optional[Any]) admits every value
    values = [n for n in flat if n.kind == "literal" or n.kind == "string" and n.enum]
    rest = [n for n in flat if n not in values]
    if not exclusive:
        # anyOf: what a free alternative admits is that alternative's — values of its kind,
        # an integer beside a number — and identical free alternatives are one.
        free = {n.kind for n in rest if n.bounds is None and n.lengths == (0, None)
                and n.kind in ("string", "number", "integer", "boolean", "null")}
        if "number" in free:
            free.add("integer")
            rest = [n for n in rest if n.kind != "integer"]
        values = [n for n in values if not (n.kind == "string" and "string" in free)]
        values = [Node("literal", literals=others) if n.kind == "literal" else n
                  for n in values if n.kind != "literal" or (others := tuple(
                      v for v in n.literals if _kind_of(json.loads(v)) not in free))]
        kept: list[Node] = []
        for n in rest:  # of a free kind: one free alternative, bounded ones subsumed
            if n.kind in free and (any(k.kind == n.kind for k in kept)
                                   or n.bounds is not None or n.lengths != (0, None)):
                continue
            kept.append(n)
        rest = kept
    # Sets of values (string enums too) merge into one.
    if values and not (len(values) == 1 and values[0].kind == "string"):
        spelled: list[str] = []
        for n in values:
            spelled.extend(n.literals if n.kind == "literal"
                           else (f'"{e}"' for e in n.enum or ()))
        if exclusive and len(set(spelled)) < len(spelled):
            raise SchemaError(f"{where}: a value appears in two alternatives of 'oneOf'")
        values = [Node("literal", literals=tuple(dict.fromkeys(spelled)))]
    branches = rest + values
    for i, a in enumerate(branches):
        for b in branches[i + 1:]:
            if a.first & b.first:
                raise SchemaError(f"{where}: two alternatives ({_describe(a)}, "
                                  f"{_describe(b)}) can start with the same character "
                                  f"{min(a.first & b.first)!r}: only alternatives "
                                  "the first character tells apart are supported")
    return branches[0] if len(branches) == 1 else Node("union", branches=tuple(branches))


def _kind_of(value: Any) -> str:
    """The JSON kind of a value, as the free alternative that admits it would name it
    (an integral value: ``integer``, which a free ``number`` subsumes)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", type(None): "null"}.get(type(value), "other")


def _describe(node: Node) -> str:
    if node.kind == "literal":
        return "values " + ", ".join(node.literals[:3]) + (" …" if len(node.literals) > 3
                                                            else "")
    return node.kind + (" enum" if node.enum else "")


#: Any JSON value (``{}``, ``true``): a map of any, an array of any, or a scalar.
ANY = Node("any")
FREE_STRING = Node("string")
_ANY_BRANCHES = (Node("map", items=ANY), Node("array", items=ANY), FREE_STRING,
                 Node("number"), Node("boolean"), Node("null"))


class Frame(NamedTuple):
    """One level of the parse stack.

    ``kind``: ``root``, ``obj``, ``map`` (free keys), ``arr``, ``str``, ``key``, ``num``,
    ``lit`` (``true``, ``false``, ``null``), ``lits`` (one of a set of ``enum`` /
    ``const`` values).
    ``phase`` says what comes next; ``text`` is what a number, literal, enum or key holds
    so far; ``seen`` the keys an object has; ``key`` the key whose value comes next (for
    a literal: the word being written); ``size`` the items of an array / characters of
    a string so far, kept only when the schema bounds them (so free ones repeat states).
    """

    kind: str
    node: Node | None
    phase: str = ""
    text: str = ""
    seen: frozenset[str] = frozenset()
    key: str = ""
    size: int = 0


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
            counted = _counted(top)
            if phase == "esc":
                if c not in _ESCAPES or counted and c == "u":
                    return None
                text = top.text + "\\" + c if _tracks(top) else ""
                if text and not any(e.startswith(text) for e in _choices(stack)):
                    return None
                return (*rest, top._replace(phase="u0" if c == "u" else "", text=text,
                                            size=top.size + counted))
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
                if counted and top.size < _lengths_of(top)[0]:
                    return None
                return self._done(rest, top.text if kind == "key" else "")
            if c < " ":
                return None
            if counted and (most := _lengths_of(top)[1]) is not None and top.size >= most:
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
            return (*rest, top._replace(size=top.size + 1)) if counted else stack
        if kind == "num":
            text = top.text + c
            if len(text) <= MAX_NUMBER_CHARS and _number_prefix(node, text):
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
        if kind == "lits":
            assert node is not None
            text = top.text + c
            longer = [v for v in node.literals if v.startswith(text)]
            if longer:
                if longer == [text]:  # whole, and no other value goes on from here
                    return self._done(rest)
                return (*rest, top._replace(text=text))
            if top.text in node.literals:  # whole: the character is the parent's
                after = self._done(rest)
                return None if after is None else self._char(after, c)
            return None
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
        if kind == "map":
            assert node is not None and node.items is not None
            if phase in ("open", "comma", "comma_sp"):
                if phase == "comma" and c == " ":
                    return (*rest, top._replace(phase="comma_sp"))
                if c == '"':
                    return (*stack, Frame("str", FREE_STRING))  # a key: any string
                return self._done(rest) if c == "}" and phase == "open" else None
            if phase == "colon":
                return (*rest, top._replace(phase="value")) if c == ":" else None
            if phase in ("value", "value_sp"):
                if phase == "value" and c == " ":
                    return (*rest, top._replace(phase="value_sp"))
                return self._begin((*rest, top._replace(phase="in")), node.items, c)
            if phase == "after":
                if c == ",":
                    return (*rest, top._replace(phase="comma"))
                return self._done(rest) if c == "}" else None
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
                if c == "," and (most is None or top.size < most):
                    return (*rest, top._replace(phase="comma"))
                if c == "]" and top.size >= least:
                    return self._done(rest)
            return None
        return None

    def _begin(self, stack: State, node: Node | None, c: str) -> State | None:
        """Start a value of ``node`` with its first character (the parent already says
        ``in`` / ``value``)."""
        assert node is not None
        kind = node.kind
        if kind == "union":
            for branch in node.branches:
                if c in branch.first:
                    return self._begin(stack, branch, c)
            return None
        if kind == "any":
            for branch in _ANY_BRANCHES:
                if c in branch.first:
                    return self._begin(stack, branch, c)
            return None
        if kind == "map":
            return (*stack, Frame("map", node, "open")) if c == "{" else None
        if kind == "literal":
            return self._char((*stack, Frame("lits", node)), c) if c in node.first else None
        if kind == "object":
            return (*stack, Frame("obj", node, "open")) if c == "{" else None
        if kind == "array":
            return (*stack, Frame("arr", node, "open")) if c == "[" else None
        if kind == "string":
            return (*stack, Frame("str", node)) if c == '"' else None
        if kind in ("number", "integer"):
            if (c == "-" or c.isdigit() and c.isascii()) and _number_prefix(node, c):
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
        if parent.kind == "map":
            opening = parent.phase in ("open", "comma", "comma_sp")
            return (*rest, parent._replace(phase="colon" if opening else "after"))
        if parent.kind == "arr":
            assert parent.node is not None
            return (*rest, parent._replace(phase="after",
                                           size=parent.size + parent.node.counts))
        # An object: a key just closed, or a value did.
        if parent.phase in ("open", "comma", "comma_sp"):
            return (*rest, parent._replace(phase="colon", key=key))
        return (*rest, parent._replace(phase="after", seen=parent.seen | {parent.key}, key=""))

    # -- what a state allows -------------------------------------------------------------

    def accepting(self, state: State) -> bool:
        """Whether the text so far is a whole valid document."""
        if len(state) == 1:
            return state[0].phase == "done"
        return len(state) == 2 and _value_done(state[1])

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
                if node is not None and node.bounds is not None:
                    total += extra_chars(frame.text, node.bounds, MAX_NUMBER_CHARS) or 0
                else:
                    total += 0 if _number_done(frame) else 1
            elif kind == "lits":
                assert node is not None
                total += min(len(v) - len(frame.text) for v in node.literals
                             if v.startswith(frame.text))
            elif kind == "lit":
                total += len(frame.key) - len(frame.text)
            elif kind == "str":
                # a tracked (enum) string's remainder already counts its escapes
                total += 1 if _tracks(frame) else 1 + _escape_left(phase)
                if _counted(frame):
                    total += max(_lengths_of(frame)[0] - frame.size - (phase == "esc"), 0)
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
            elif kind == "map":
                assert node is not None and node.items is not None
                value = node.items.min_chars
                if phase in ("open", "comma", "comma_sp"):
                    if depth < len(state) - 1:  # its key is being written
                        total += 1 + value + 1
                    else:
                        total += 1 if phase == "open" else 1 + 2 + 1 + value + 1
                elif phase == "colon":
                    total += 1 + value + 1
                elif phase in ("value", "value_sp"):
                    total += value + 1
                else:
                    total += 1
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


def _value_done(frame: Frame) -> bool:
    """Whether a number or a set value on top of the stack could end here."""
    if frame.kind == "num":
        return _number_done(frame)
    return frame.kind == "lits" and frame.node is not None and frame.text in frame.node.literals


def _counted(frame: Frame) -> bool:
    """Whether a string frame counts its characters (its schema bounds its length)."""
    node = frame.node
    return (frame.kind == "str" and node is not None and node.enum is None
            and node.lengths != (0, None))


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
    if phase == "esc":
        return 1
    return 4 - int(phase[1]) if phase.startswith("u") else 0


def _closing(node: Node, missing: frozenset[str] | set[str], *, after_value: bool) -> int:
    """Characters that write the ``missing`` required keys and the closing brace."""
    cost = sum(node.key_cost(k) for k in missing)
    commas = len(missing) if after_value else max(0, len(missing) - 1)
    return cost + commas + 1
