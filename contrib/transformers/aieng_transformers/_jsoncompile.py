"""The JSON-schema compiler of constrained decoding: a schema of the supported subset
(listed in :mod:`aieng_transformers._jsonschema`) becomes a tree of :class:`Node` s —
kinds, children, bounds, alternatives told apart by their first character, and the
fewest characters of a valid value — which the automaton there walks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from ._jsonbounds import Range, bound, extra_chars
from ._jsonformats import FORMATS
from ._jsonunique import MAX_NUMBER_CHARS, NEVER, cheapest, supported
from ._prefixes import Prefixes
from ._regexfsm import JSON_COST, Pattern, RegexError

__all__ = ["ANY", "ANY_BRANCHES", "MAX_NUMBER_CHARS", "MAX_SCHEMA_DEPTH", "Node",
           "SchemaError", "compile_schema"]

#: The deepest a schema may nest subschemas (``properties``, ``items``, ``anyOf``…, and
#: ``$ref`` s to definitions that are not recursive, each a level): compiling walks them
#: recursively, and past this a schema is refused with a :class:`SchemaError` saying so
#: rather than failing with Python's ``RecursionError`` (recursive references are not
#: nesting: they compile to a loop, and documents nest as deep as they like).
MAX_SCHEMA_DEPTH = 128

_ANNOTATIONS = frozenset({"title", "description", "$schema", "$id", "$comment", "default",
                          "examples", "deprecated", "readOnly", "writeOnly", "$defs",
                          "definitions"})
_BOUNDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
#: What makes a number a bounded one (written by :mod:`._jsonbounds`).
_NUMERIC = _BOUNDS | {"multipleOf"}
_KEYWORDS = {
    "object": frozenset({"type", "properties", "required", "additionalProperties",
                         "minProperties", "maxProperties", "propertyNames",
                         "patternProperties"}),
    "array": frozenset({"type", "items", "prefixItems", "minItems", "maxItems",
                        "uniqueItems", "additionalItems"}),
    "string": frozenset({"type", "enum", "const", "minLength", "maxLength", "format",
                         "pattern"}),
    "number": frozenset({"type"}) | _NUMERIC,
    "integer": frozenset({"type"}) | _NUMERIC,
    "boolean": frozenset({"type"}),
    "null": frozenset({"type"}),
}
#: Numbers a double holds exactly, every integer up to it included (2 ** 53).
_EXACT = 1 << 53
_FIRST = {"object": frozenset("{"), "array": frozenset("["), "string": frozenset('"'),
          "number": frozenset("-0123456789"), "integer": frozenset("-0123456789"),
          "boolean": frozenset("tf"), "null": frozenset("n")}
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
        "index",
        "items",
        "key",
        "kind",
        "lengths",
        "literals",
        "min_chars",
        "names",
        "pattern",
        "prefix",
        "properties",
        "required",
        "shape",
        "tags",
        "unique",
    )

    def __init__(self, kind: str, *, properties: dict[str, Node] | None = None,
                 required: frozenset[str] = frozenset(), items: Node | None = None,
                 enum: tuple[str, ...] | None = None,
                 lengths: tuple[int, int | None] = (0, None), bounds: Range | None = None,
                 literals: tuple[str, ...] = (), branches: tuple[Node, ...] = (),
                 prefix: tuple[Node, ...] = (), tags: dict[str, Node] | None = None,
                 key: str = "", pattern: Pattern | None = None,
                 shape: frozenset[str] | None = None, unique: bool = False,
                 names: Node | None = None) -> None:
        self.kind = kind
        #: ``map``: the schema of its keys (``propertyNames``, or the one pattern of
        #: ``patternProperties``): a string node whose values :mod:`._jsonunique` lists;
        #: ``None``: any non-empty key.
        self.names = names
        #: An array of distinct items (``uniqueItems``; see :mod:`._jsonunique`).
        self.unique = unique
        #: ``ref`` (a recursive reference, while its target compiles): the characters its
        #: target can start with, read from the raw schema (``None``: not known).
        self.shape = shape
        #: A string's ``pattern`` (with its ``lengths`` folded in), searched as JSON Schema
        #: has it, over the string's decoded characters.
        self.pattern = pattern
        #: ``tagged``: the discriminating key (JSON-escaped); empty when each alternative
        #: is told apart by a key of its own instead.
        self.key = key
        #: ``tagged``: an object union's openings (``"tag":"value"``, with and without a
        #: space after the colon; or ``"key"``, a key only that alternative has) and the
        #: alternative each one picks.
        self.tags = tags or {}
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
        self.index: Prefixes | None = None
        self.min_chars = min(self._min_chars(), NEVER)

    def prefixes(self) -> Prefixes:
        """The strings a value of this node is chosen among, sorted for prefix search
        (built on first use, once the schema is compiled): a string ``enum``'s values, a
        ``literal``'s spellings, else an object's property names."""
        if self.index is None:
            self.index = Prefixes(self.enum if self.enum is not None
                                  else self.literals if self.kind == "literal"
                                  else self.properties)
        return self.index

    def become(self, other: Node) -> None:
        """Turn a ``ref`` placeholder into its compiled target (the nodes that already
        point at the placeholder then point at the target)."""
        for slot in self.__slots__:
            setattr(self, slot, getattr(other, slot))

    @property
    def first(self) -> frozenset[str]:
        """The characters a value of this node can start with."""
        if self.kind == "ref":
            if self.shape is None:
                raise SchemaError(f"{self.key}: a recursive reference inside 'anyOf' / "
                                  "'oneOf' / a type list needs a target whose first "
                                  "character its 'type' (or 'properties' / 'items') tells")
            return self.shape
        if self.kind == "any":
            return frozenset().union(*_FIRST.values())
        if self.kind in ("map", "tagged"):
            return _FIRST["object"]
        if self.kind == "union":
            return frozenset().union(*(b.first for b in self.branches))
        if self.kind == "literal":
            return self.prefixes().heads
        return _FIRST[self.kind]

    def item(self, index: int) -> Node:
        """An array's schema for its item at ``index``."""
        if index < len(self.prefix):
            return self.prefix[index]
        assert self.items is not None
        return self.items

    def items_cost(self, start: int, count: int,
                   taken: frozenset[str] = frozenset()) -> int:
        """The fewest characters of the array's items ``start`` … ``start + count - 1``
        (without the commas); in an array of distinct items, of ``count`` distinct values
        none of which is ``taken``."""
        if self.unique:
            assert self.items is not None
            found = cheapest(self.items, taken, count)
            return sum(c for c, _ in found) if len(found) == count else NEVER
        return sum(self.item(i).min_chars for i in range(start, start + count))

    def entries_cost(self, count: int, taken: frozenset[str] = frozenset()) -> int:
        """The fewest characters of ``count`` entries (``key:value``, without the commas)
        of a map with a key schema: the cheapest distinct keys not in ``taken``."""
        assert self.names is not None and self.items is not None
        found = cheapest(self.names, taken, count)
        if len(found) < count:
            return NEVER
        return sum(c for c, _ in found) + count * (1 + self.items.min_chars)

    @property
    def counts(self) -> bool:
        """Whether an array's frames count their items (bounds or a prefix need it)."""
        return self.lengths != (0, None) or bool(self.prefix) or self.unique

    def key_cost(self, key: str) -> int:
        """Characters of ``"key":`` and the smallest value of that property."""
        return len(key) + 3 + self.properties[key].min_chars

    def _min_chars(self) -> int:
        if self.kind == "ref":
            return NEVER
        if self.kind == "object":
            cost = sum(self.key_cost(k) for k in self.required)
            return 2 + cost + max(0, len(self.required) - 1)
        if self.kind == "string":
            if self.enum is not None:
                return 2 + min(len(e) for e in self.enum)
            if self.pattern is not None:
                return 2 + int(self.pattern.left(self.pattern.start()))
            return 2 + self.lengths[0]
        if self.kind == "array":
            least = self.lengths[0]
            return 2 + self.items_cost(0, least) + max(0, least - 1)
        if self.kind in ("number", "integer") and self.bounds is not None:
            shortest = extra_chars("", self.bounds, MAX_NUMBER_CHARS)
            assert shortest is not None  # an empty range is refused when compiling
            return shortest
        if self.kind in ("union", "tagged"):
            return min(b.min_chars for b in self.branches)
        if self.kind == "map":
            assert self.items is not None
            least = self.lengths[0]
            if self.names is not None:
                return 2 + self.entries_cost(least) + max(least - 1, 0)
            return 2 + least * (4 + self.items.min_chars) + max(least - 1, 0)  # "k":v
        if self.kind == "any":
            return 1
        if self.kind == "literal":
            return min(len(lit) for lit in self.literals)
        return {"number": 1, "integer": 1, "boolean": 4, "null": 4}[self.kind]


def compile_schema(schema: Mapping[str, Any], where: str = "#") -> Node:
    """Compile a JSON schema of the supported subset.

    :raises SchemaError: naming the JSON pointer and the keyword outside the subset, or
        when a recursive schema has no finite document.
    """
    try:
        schema = _without_extensions(schema)
        compiler = _Compiler(schema)
        root = compiler.node(schema, where)
    except RecursionError:  # nesting inside the values (an ``enum`` of deep lists)
        raise SchemaError(f"{where}: the schema nests too deep to compile") from None
    if compiler.recursive:
        _settle(root, where)
    return root


def _too_deep(where: str) -> SchemaError:
    return SchemaError(f"{where[:80]}{'…' if len(where) > 80 else ''}: the schema nests "
                       f"more than {MAX_SCHEMA_DEPTH} levels deep (each property, item, "
                       "alternative and $ref a level), the most supported "
                       "(MAX_SCHEMA_DEPTH)")


#: Words of other vocabularies that say nothing about which documents are valid: OpenAPI's
#: (``example``, ``externalDocs``, ``xml``; ``nullable`` too — ignored, so ``null`` is not
#: written, which both readings accept), anchors, and any ``x-`` extension.
_EXTENSIONS = frozenset({"example", "externalDocs", "xml", "nullable", "$anchor",
                         "$dynamicAnchor", "$vocabulary"})
#: Keywords whose value is a schema, a list of schemas, or names mapped to schemas.
_SCHEMA = frozenset({"items", "additionalProperties", "propertyNames", "not", "if", "then",
                     "else", "contains", "contentSchema", "unevaluatedItems",
                     "unevaluatedProperties"})
_SCHEMAS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_NAMED = frozenset({"properties", "$defs", "definitions", "patternProperties",
                    "dependentSchemas"})


def _without_extensions(schema: Any, depth: int = 0) -> Any:
    """The schema without :data:`_EXTENSIONS` and ``x-`` words, in it and in every
    subschema (the values of ``enum``, ``const``, ``default``… are data: kept as they
    are; so are property names).

    :raises SchemaError: past :data:`MAX_SCHEMA_DEPTH` levels of subschemas.
    """
    if not isinstance(schema, Mapping):
        return schema
    if depth > MAX_SCHEMA_DEPTH:
        raise _too_deep("#")
    depth += 1
    out: dict[str, Any] = {}
    for word, value in schema.items():
        if word in _EXTENSIONS or isinstance(word, str) and word.startswith("x-"):
            continue
        if word in _SCHEMA:
            value = _without_extensions(value, depth)
        elif word in _SCHEMAS and isinstance(value, list):
            value = [_without_extensions(v, depth) for v in value]
        elif word in _NAMED and isinstance(value, Mapping):
            value = {name: _without_extensions(v, depth) for name, v in value.items()}
        out[word] = value
    return out


def _settle(root: Node, where: str) -> None:
    """The fewest characters of every node of a recursive schema: a node's count is the
    cheapest of its finite documents, so from the counts compiled so far (each that of a
    real document, or :data:`NEVER`) recompute every node until none gets cheaper."""
    order: list[Node] = []
    seen: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        todo.extend(node.properties.values())
        todo.extend(node.prefix)
        todo.extend(node.branches)
        if node.items is not None:
            todo.append(node.items)
    order.reverse()  # children mostly first: most schemas settle in one or two rounds
    changed = True
    while changed:
        changed = False
        for node in order:
            cheaper = min(node._min_chars(), NEVER)
            if cheaper < node.min_chars:
                node.min_chars = cheaper
                changed = True
    if root.min_chars >= NEVER:
        raise SchemaError(f"{where}: the schema's recursion admits no finite document (a "
                          "recursive property every document requires?)")


class _Compiler:
    def __init__(self, root: Any) -> None:
        self.root = root
        #: Each ``$ref`` target compiled once (a definition used in many places, or by
        #: definitions used in many places, is one shared node).
        self.resolved: dict[str, Node] = {}
        #: The targets being compiled: a reference back to one of them (recursion) gets
        #: its placeholder, which becomes the compiled target when it is done.
        self.pending: dict[str, Node] = {}
        self.recursive = False
        #: Calls of :meth:`node` in progress (subschemas and ``$ref`` s being compiled).
        self.depth = 0

    def node(self, schema: Any, where: str) -> Node:
        if self.depth > MAX_SCHEMA_DEPTH:
            raise _too_deep(where)
        self.depth += 1
        try:
            return self._node(schema, where)
        finally:
            self.depth -= 1

    def _node(self, schema: Any, where: str) -> Node:
        if schema is True or isinstance(schema, Mapping) and set(schema) <= _ANNOTATIONS:
            return ANY
        if not isinstance(schema, Mapping):
            raise SchemaError(f"{where}: a schema must be an object, not "
                              f"{type(schema).__name__}")
        if "$ref" in schema:
            return self.ref(schema, where)
        if "allOf" in schema:
            return self.all_of(schema, where)
        for word in ("anyOf", "oneOf"):
            if word in schema:
                return self.alternatives(schema, word, where)
        if "enum" in schema or "const" in schema:  # with a type, or a list of them
            return self.values(schema, where)
        kind = schema.get("type")
        if isinstance(kind, list):
            return self.type_list(schema, kind, where)
        if kind is None:
            kind = ("object" if "properties" in schema or "additionalProperties" in schema
                    else "array" if "items" in schema else None)
        if kind is None:
            unknown = set(schema) - set().union(*_KEYWORDS.values()) - _ANNOTATIONS
            if unknown:  # ``not``, ``if``...: named, not taken for a missing ``type``
                raise SchemaError(f"{where}: unsupported keyword(s) {sorted(unknown)}")
        if not isinstance(kind, str) or kind not in _KEYWORDS:
            raise SchemaError(f"{where}: 'type' must be one of {sorted(_KEYWORDS)} or a "
                              f"list of them, got {kind!r}")
        extra = set(schema) - _KEYWORDS[kind] - _ANNOTATIONS
        if extra:
            raise SchemaError(f"{where}: unsupported keyword(s) {sorted(extra)} for type "
                              f"{kind!r}; supported: {sorted(_KEYWORDS[kind])}")
        if kind == "object":
            return self.object(schema, where)
        if kind == "array":
            return self.array(schema, where)
        if kind == "string":
            lengths = _lengths(schema, "minLength", "maxLength", where)
            return Node("string", lengths=lengths, pattern=_pattern(schema, lengths, where))
        if kind in ("number", "integer") and set(schema) & _NUMERIC:
            return Node(kind, bounds=_range(schema, kind == "integer", where))
        return Node(kind)

    def array(self, schema: Mapping[str, Any], where: str) -> Node:
        least, most = _lengths(schema, "minItems", "maxItems", where)
        raw = schema.get("prefixItems", [])
        rest = schema.get("items", True)  # without items (or a prefix): any values
        word = "prefixItems"
        if isinstance(rest, list):  # drafts 4 to 2019-09: a list of items is a tuple
            if "prefixItems" in schema:
                raise SchemaError(f"{where}/items: a list beside 'prefixItems'")
            raw, rest, word = rest, schema.get("additionalItems", True), "items"
        if not isinstance(raw, list):
            raise SchemaError(f"{where}/prefixItems: must be a list of schemas")
        prefix = tuple(self.node(v, f"{where}/{word}/{i}") for i, v in enumerate(raw))
        if rest is False:  # nothing after the prefix
            most = len(prefix) if most is None else min(most, len(prefix))
            if least > most:
                raise SchemaError(f"{where}: 'minItems' {least} needs more items than "
                                  f"'prefixItems' allows with 'items: false'")
            rest = True
        unique = schema.get("uniqueItems", False)
        if not isinstance(unique, bool):
            raise SchemaError(f"{where}/uniqueItems: must be true or false")
        items = self.node(rest, f"{where}/items")
        if unique:
            items = _listable(items, f"{where}/items")
            if prefix:
                raise SchemaError(f"{where}: 'uniqueItems' beside 'prefixItems' is not "
                                  "supported")
            if not supported(items):
                raise SchemaError(f"{where}: 'uniqueItems' is supported for items that are "
                                  "strings, numbers, booleans, null, enum / const "
                                  "scalars, or anyOf of those that the first character "
                                  "tells apart")
            if len(cheapest(items, frozenset(), least)) < least:
                raise SchemaError(f"{where}: 'minItems' {least} needs more distinct items "
                                  "than 'items' has")
        return Node("array", items=items, lengths=(least, most), prefix=prefix,
                    unique=unique)

    def names(self, schema: Mapping[str, Any], named: bool,
              where: str) -> tuple[Node | None, Any]:
        """A map's key schema and value schema from ``patternProperties`` (one pattern,
        alone: keys match it, values are its schema) or ``propertyNames`` (a string
        schema of the keys, beside ``additionalProperties``)."""
        if "patternProperties" in schema:
            raw = schema["patternProperties"]
            if named or "propertyNames" in schema or schema.get(
                    "additionalProperties", False) is not False:
                raise SchemaError(f"{where}: 'patternProperties' is supported alone (a map "
                                  "whose keys match its pattern), not beside 'properties', "
                                  "'additionalProperties' or 'propertyNames'")
            if not isinstance(raw, Mapping) or len(raw) != 1:
                raise SchemaError(f"{where}/patternProperties: one pattern is supported")
            ((source, values),) = raw.items()
            keys = Node("string", pattern=_pattern({"pattern": source}, (0, None),
                                                   f"{where}/patternProperties"))
            return keys, values
        if named:
            raise SchemaError(f"{where}: 'propertyNames' beside 'properties' is not supported")
        raw = schema["propertyNames"]
        if isinstance(raw, Mapping) and not {"type", "$ref", "enum", "const"} & set(raw):
            raw = {"type": "string", **raw}  # a key is a string: its schema may not say so
        keys = _listable(self.node(raw, f"{where}/propertyNames"), f"{where}/propertyNames")
        if keys.kind != "string":
            raise SchemaError(f"{where}/propertyNames: must be a schema of strings")
        free = keys.enum is None and keys.pattern is None
        return None if free else keys, schema.get("additionalProperties", True)

    def object(self, schema: Mapping[str, Any], where: str) -> Node:
        named = "properties" in schema or "required" in schema
        # beside named keys no other is written; a bare object is any object (a map)
        extra = schema.get("additionalProperties", not named)
        counts = _lengths(schema, "minProperties", "maxProperties", where)
        names = None
        if "patternProperties" in schema or "propertyNames" in schema:
            names, extra = self.names(schema, named, where)
        if extra is not False and not named:
            items = self.node(extra, f"{where}/additionalProperties")
            if names is not None and len(cheapest(names, frozenset(), counts[0])) < counts[0]:
                raise SchemaError(f"{where}: 'minProperties' {counts[0]} needs more distinct "
                                  "keys than the key schema has")
            return Node("map", items=items, lengths=counts, names=names)
        if counts != (0, None):
            raise SchemaError(f"{where}: 'minProperties' / 'maxProperties' are supported on "
                              "maps ('additionalProperties' a schema) only")
        raw = schema.get("properties", {})
        if not isinstance(raw, Mapping):
            raise SchemaError(f"{where}/properties: must be an object")
        properties = {json.dumps(k)[1:-1]: self.node(v, f"{where}/properties/{k}")
                      for k, v in raw.items()}
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaError(f"{where}/required: must be a list of names")
        for name in dict.fromkeys(r for r in required if r not in raw):
            # a required key 'properties' does not name: any value, or additionalProperties'
            if schema.get("additionalProperties") is False:
                raise SchemaError(f"{where}/required: {name!r} is required but neither in "
                                  "'properties' nor allowed by 'additionalProperties: "
                                  "false': no document is valid")
            loose = schema.get("additionalProperties", True)
            properties[json.dumps(name)[1:-1]] = self.node(
                loose, f"{where}/additionalProperties") if loose is not True else ANY
        # an open object: other keys than the named ones, with values of ``items``
        others = None if extra is False else self.node(extra, f"{where}/additionalProperties")
        return Node("object", properties=properties, items=others,
                    required=frozenset(json.dumps(r)[1:-1] for r in required))

    def ref(self, schema: Mapping[str, Any], where: str) -> Node:
        target = schema["$ref"]
        extra = set(schema) - {"$ref"} - _ANNOTATIONS
        if extra:
            raise SchemaError(f"{where}: keyword(s) {sorted(extra)} beside '$ref' are not "
                              "supported")
        if not isinstance(target, str) or not (
                target == "#" or re.fullmatch(r"#/(\$defs|definitions)/[^/]+", target)):
            raise SchemaError(f"{where}/$ref: only '#', '#/$defs/<name>' and "
                              f"'#/definitions/<name>' are supported, got {target!r}")
        if target in self.resolved:
            return self.resolved[target]
        if target in self.pending:  # recursion: the target is being compiled
            self.recursive = True
            return self.pending[target]
        resolved = self.resolve(target, where)
        placeholder = self.pending[target] = Node("ref", key=f"{where}/$ref",
                                                  shape=self.first_chars(resolved, set()))
        placeholder.become(self.node(resolved, target))
        del self.pending[target]
        self.resolved[target] = placeholder
        return placeholder

    def all_of(self, schema: Mapping[str, Any], where: str) -> Node:
        """``allOf``: one schema (Pydantic v1's ``allOf: [{"$ref": …}]`` beside a default),
        or objects, merged — their properties (a name in two must have one schema) and
        required names; the document has only those keys, so it is valid against each."""
        parts = schema["allOf"]
        if not isinstance(parts, list) or not parts:
            raise SchemaError(f"{where}/allOf: must be a non-empty list of schemas")
        rest = {k: v for k, v in schema.items() if k != "allOf" and k not in _ANNOTATIONS}
        named = [(f"{where}/allOf/{i}", p) for i, p in enumerate(parts)]
        if rest:
            named.append((where, rest))
        named = [(w, p) for w, p in named
                 if not (p is True or isinstance(p, Mapping) and set(p) <= _ANNOTATIONS)]
        if not named:
            return ANY
        if len(named) == 1:
            return self.node(named[0][1], named[0][0])
        properties: dict[str, Any] = {}
        required: list[str] = []
        closed: list[tuple[str, set[str]]] = []
        for place, part in named:
            raw = self.target(part, place)
            words = set(raw) - _ANNOTATIONS
            if raw.get("type", "object") != "object" or not words <= {
                    "type", "properties", "required", "additionalProperties"} or \
                    raw.get("additionalProperties", False) not in (False, True):
                raise SchemaError(f"{place}: 'allOf' is supported for one schema, or for "
                                  "objects of 'properties' / 'required' (merged)")
            for name, sub in raw.get("properties", {}).items():
                if name in properties and properties[name] != sub:
                    raise SchemaError(f"{place}/properties/{name}: 'allOf' parts give "
                                      "this property two different schemas")
                properties[name] = sub
            required.extend(r for r in raw.get("required", []) if r not in required)
            if raw.get("additionalProperties") is False:
                closed.append((place, set(raw.get("properties", {}))))
        for place, names in closed:
            if set(properties) - names:
                raise SchemaError(f"{place}: 'additionalProperties: false' forbids the "
                                  f"properties {sorted(set(properties) - names)} other "
                                  "'allOf' parts add")
        return self.object({"type": "object", "properties": properties,
                            "required": required}, where)

    def target(self, schema: Any, where: str) -> Mapping[str, Any]:
        """A raw schema with its ``$ref`` s followed (for merging: no recursion)."""
        following: set[str] = set()
        while isinstance(schema, Mapping) and "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str) or ref in following or ref in self.pending:
                raise SchemaError(f"{where}/$ref: {ref!r} cannot be merged by 'allOf' "
                                  "(recursive, or not a reference)")
            following.add(ref)
            schema = self.resolve(ref, where)
        if not isinstance(schema, Mapping):
            raise SchemaError(f"{where}: a schema must be an object")
        return schema

    def resolve(self, target: str, where: str) -> Any:
        resolved: Any = self.root
        for part in target[2:].split("/") if target != "#" else ():
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(resolved, Mapping) or part not in resolved:
                raise SchemaError(f"{where}/$ref: {target!r} points at nothing")
            resolved = resolved[part]
        return resolved

    def first_chars(self, schema: Any, following: set[str]) -> frozenset[str] | None:
        """The characters a value of a raw schema can start with, as far as its words
        tell without compiling it (``None``: not told)."""
        if schema is True or isinstance(schema, Mapping) and set(schema) <= _ANNOTATIONS:
            return ANY.first
        if not isinstance(schema, Mapping):
            return None
        target = schema.get("$ref")
        if isinstance(target, str):
            if target in following or not (target == "#" or target.startswith("#/")):
                return None
            try:
                return self.first_chars(self.resolve(target, "#"), following | {target})
            except SchemaError:
                return None
        if isinstance(schema.get("allOf"), list):  # one schema, or objects merged
            parts = [p for p in schema["allOf"]
                     if not (isinstance(p, Mapping) and set(p) <= _ANNOTATIONS)]
            return self.first_chars(parts[0], following) if len(parts) == 1 \
                else _FIRST["object"]
        for word in ("anyOf", "oneOf"):
            if isinstance(schema.get(word), list):
                parts = [self.first_chars(o, following) for o in schema[word]]
                known = [p for p in parts if p is not None]
                return frozenset().union(*known) if len(known) == len(parts) else None
        if "enum" in schema or "const" in schema:
            values = [schema["const"]] if "const" in schema else schema["enum"]
            return frozenset(json.dumps(v)[0] for v in values) if isinstance(values, list) \
                else None
        kind = schema.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else (
            ["object"] if "properties" in schema or "additionalProperties" in schema
            else ["array"] if "items" in schema or "prefixItems" in schema else [])
        if not kinds or not all(k in _FIRST for k in kinds):
            return None
        return frozenset().union(*(_FIRST[k] for k in kinds))

    def alternatives(self, schema: Mapping[str, Any], word: str, where: str) -> Node:
        extra = set(schema) - {word, "discriminator"} - _ANNOTATIONS
        options = schema[word]
        if extra:
            raise SchemaError(f"{where}: keyword(s) {sorted(extra)} beside {word!r} are not "
                              "supported")
        if not isinstance(options, list) or not options:
            raise SchemaError(f"{where}/{word}: must be a non-empty list of schemas")
        nodes = [self.node(o, f"{where}/{word}/{i}") for i, o in enumerate(options)]
        named = schema.get("discriminator", {})
        tag = named.get("propertyName") if isinstance(named, Mapping) else None
        return _union(nodes, exclusive=word == "oneOf", where=f"{where}/{word}",
                      tag=tag if isinstance(tag, str) else None)

    def type_list(self, schema: Mapping[str, Any], kinds: list[Any], where: str) -> Node:
        if not kinds or not all(isinstance(k, str) and k in _KEYWORDS for k in kinds):
            raise SchemaError(f"{where}/type: a list of types must name some of "
                              f"{sorted(_KEYWORDS)}, got {kinds!r}")
        allowed = frozenset().union(*(_KEYWORDS[k] for k in kinds))
        extra = set(schema) - allowed - _ANNOTATIONS
        if extra:
            raise SchemaError(f"{where}: unsupported keyword(s) {sorted(extra)} for types "
                              f"{kinds!r}")
        nodes = [self.node({k: v for k, v in schema.items()
                            if k in _KEYWORDS[kind] or k in _ANNOTATIONS} | {"type": kind},
                           where) for kind in dict.fromkeys(kinds)]
        return _union(nodes, exclusive=False, where=f"{where}/type")

    def values(self, schema: Mapping[str, Any], where: str) -> Node:
        if "const" in schema and "enum" in schema:
            raise SchemaError(f"{where}: 'enum' and 'const' together are not supported")
        values = [schema["const"]] if "const" in schema else schema["enum"]
        if not isinstance(values, list) or not values:
            raise SchemaError(f"{where}/enum: must be a non-empty list")
        for value in values:
            try:  # NaN or an infinity would be written as no JSON text (NaN, Infinity)
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise SchemaError(f"{where}: {value!r} is no JSON value (finite numbers, "
                                  "strings, booleans, null, lists and objects of them)"
                                  ) from None
        kind = schema.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if kind is not None else None
        extra = set(schema) - {"type", "enum", "const", "minLength", "maxLength",
                               "pattern", "format"} - _ANNOTATIONS
        if extra:
            raise SchemaError(f"{where}: keyword(s) {sorted(extra)} beside 'enum' / 'const' "
                              "are not supported")
        if kinds is not None:
            if not kinds or not all(isinstance(k, str) and k in _KEYWORDS for k in kinds):
                raise SchemaError(f"{where}/type: must name one or some of "
                                  f"{sorted(_KEYWORDS)}, got {kind!r}")
            wrong = [v for v in values if not any(_is_type(v, k) for k in kinds)]
            if wrong:
                raise SchemaError(f"{where}: value(s) {wrong!r} are not of type {kind!r}")
        values = [v for v in values if not _surrogates(v)]
        if not values:
            raise SchemaError(f"{where}: every value of 'enum' / 'const' holds a lone "
                              "surrogate (U+D800-U+DFFF), which is never written: strict "
                              "JSON readers refuse its \\u escape")
        low, high = _lengths(schema, "minLength", "maxLength", where)
        pattern = _pattern(schema, (low, high), where)
        kept = [v for v in values if not isinstance(v, str)
                or low <= len(v) and (high is None or len(v) <= high)
                and (pattern is None or pattern.matches(v))]
        if not kept:
            raise SchemaError(f"{where}: no value of 'enum' / 'const' has a length within "
                              "'minLength' / 'maxLength' and matches 'pattern' / 'format'")
        if all(isinstance(v, str) for v in kept):
            return Node("string", enum=tuple(dict.fromkeys(json.dumps(v)[1:-1] for v in kept)))
        return Node("literal", literals=tuple(dict.fromkeys(
            json.dumps(v, separators=(",", ":")) for v in kept)))


def _surrogates(value: Any) -> bool:
    # Whether a JSON value holds a surrogate code point in a string or key: JSON spells it
    # only as a lone \u escape, which the automaton never writes (see _escaped).
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, list):
        return any(_surrogates(v) for v in value)
    if isinstance(value, dict):
        return any(_surrogates(k) or _surrogates(v) for k, v in value.items())
    return False


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


def _listable(node: Node, where: str) -> Node:
    """A node whose values :mod:`._jsonunique` can list (the items of a set, the keys of a
    map): a string with lengths but no pattern as the automaton of any text within them,
    a free number as a number without bounds (so written in plain decimal, listed per
    grid of decimals), a union's alternatives likewise; any other node as it is."""
    if node.kind == "string" and node.enum is None and node.pattern is None \
            and node.lengths != (0, None):
        return Node("string", lengths=node.lengths,
                    pattern=_pattern({"pattern": ""}, node.lengths, where))
    if node.kind == "number" and node.bounds is None:  # plain decimal: listed per grid
        return Node("number", bounds=Range())
    if node.kind == "union":
        return Node("union", branches=tuple(_listable(b, where) for b in node.branches))
    return node


def _pattern(schema: Mapping[str, Any], lengths: tuple[int, int | None],
             where: str) -> Pattern | None:
    """A string's ``pattern`` as an automaton over its decoded characters (searched: the
    string contains a match), its lengths folded in; else its ``format`` where
    :data:`._jsonformats.FORMATS` has it (matched whole); ``None`` without either."""
    if "pattern" in schema:
        source, word, search = schema["pattern"], "pattern", True
    elif schema.get("format") in FORMATS:
        source, word, search = FORMATS[schema["format"]], "format", False
    else:
        if "format" in schema and not isinstance(schema["format"], str):
            raise SchemaError(f"{where}/format: must be a string")
        return None
    if not isinstance(source, str):
        raise SchemaError(f"{where}/pattern: must be a string")
    try:
        return Pattern(source, search=search, lengths=lengths, cost=JSON_COST)
    except RegexError as exc:
        if word == "format":
            raise SchemaError(f"{where}: no {schema['format']!r} string has a length within "
                              "'minLength' / 'maxLength'") from None
        raise SchemaError(f"{where}/pattern: {exc}") from None


def _range(schema: Mapping[str, Any], integer: bool, where: str) -> Range:
    values = {}
    flags = set()  # draft 4 and OpenAPI 3.0: a boolean exclusive bound makes its bound open
    for word in [word for word in schema if word in _BOUNDS]:  # as written: errors alike
        value = schema[word]
        if isinstance(value, bool) and word.startswith("exclusive"):
            if value:
                flags.add(word)
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value):
            raise SchemaError(f"{where}/{word}: must be a number (finite), got {value!r}")
        values[word] = bound(value)
    low, low_open = values.get("minimum"), "exclusiveMinimum" in flags
    if "exclusiveMinimum" in values and (low is None or values["exclusiveMinimum"] >= low):
        low, low_open = values["exclusiveMinimum"], True
    high, high_open = values.get("maximum"), "exclusiveMaximum" in flags
    if "exclusiveMaximum" in values and (high is None or values["exclusiveMaximum"] <= high):
        high, high_open = values["exclusiveMaximum"], True
    raw = schema.get("multipleOf")
    multiple: int | Fraction | None = None
    if raw is not None:
        exact = bound(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) \
            and math.isfinite(raw) else Fraction(0)
        if exact <= 0 or exact.denominator & (exact.denominator - 1):
            raise SchemaError(f"{where}/multipleOf: a positive integer or a fraction of a "
                              "power of two (0.5, 0.25, 2.5) is supported — a decimal one "
                              "such as 0.1 is checked differently by float and exact "
                              f"readers — got {raw!r}")
        if integer or exact.denominator == 1:  # the integer multiples of p/q: of p
            multiple = exact.numerator
        else:
            multiple = exact
            # each multiple written is then a double exactly, which float readers divide
            # (jsonschema) or take the remainder of (Pydantic) exactly
            if low is None or low < -_EXACT:
                low, low_open = Fraction(-_EXACT), False
            if high is None or high > _EXACT:
                high, high_open = Fraction(_EXACT), False
    bounds = Range(low, high, low_open, high_open, integer, multiple)
    if extra_chars("", bounds, MAX_NUMBER_CHARS) is None:  # no completion lies in range
        raise SchemaError(f"{where}: no {'integer' if integer else 'number'} of at most "
                          f"{MAX_NUMBER_CHARS} characters lies within the bounds"
                          + (" and is a multiple of 'multipleOf'" if raw else ""))
    return bounds


def _union(nodes: list[Node], *, exclusive: bool, where: str, tag: str | None = None) -> Node:
    """One node for alternatives, reached by their first character (objects: by a
    discriminating key written first, see :func:`_tagged`); in ``anyOf``, alternatives
    that start alike are followed side by side by the automaton (a fork) until the text
    tells them apart."""
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
                and n.pattern is None
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
            if n.kind in free and (any(k.kind == n.kind for k in kept) or n.pattern is not None
                                   or n.bounds is not None or n.lengths != (0, None)):
                continue
            kept.append(n)
        rest, values = _merge_patterns(kept, values, where)
    # Sets of values (string enums too) merge into one.
    if values and not (len(values) == 1 and values[0].kind == "string"):
        spelled: list[str] = []
        for n in values:
            spelled.extend(n.literals if n.kind == "literal"
                           else (f'"{e}"' for e in n.enum or ()))
        if exclusive and len(set(spelled)) < len(spelled):
            raise SchemaError(f"{where}: a value appears in two alternatives of 'oneOf'")
        values = [Node("literal", literals=tuple(dict.fromkeys(spelled)))]
    objects = [n for n in rest if n.kind == "object"]
    if len(objects) > 1:
        try:
            tagged: Node | None = _tagged(objects, tag, where)
        except SchemaError:
            if exclusive or tag is not None:
                raise
            tagged = None  # anyOf: the objects are followed side by side
        if tagged is not None:
            rest = [tagged if n is objects[0] else n for n in rest if n not in objects[1:]]
    branches = rest + values
    # (read now: a recursive reference that cannot tell how it starts fails here)
    firsts = [branch.first for branch in branches]
    if exclusive:  # oneOf: a document matching two alternatives would be invalid
        for i, a in enumerate(branches):
            for j, b in enumerate(branches[i + 1:], i + 1):
                if shared := firsts[i] & firsts[j]:
                    raise SchemaError(f"{where}: two alternatives ({_describe(a)}, "
                                      f"{_describe(b)}) can start with the same character "
                                      f"{min(shared)!r}: in 'oneOf' only "
                                      "alternatives the first character tells apart are "
                                      "supported ('anyOf' follows them side by side)")
    return branches[0] if len(branches) == 1 else Node("union", branches=tuple(branches))


def _merge_patterns(nodes: list[Node], values: list[Node],
                    where: str) -> tuple[list[Node], list[Node]]:
    """``anyOf`` of strings with patterns or formats and the same lengths (Pydantic's
    ``datetime | date``, ``UUID | EmailStr``), and string values beside them when those
    lengths are none (``Literal["auto"] | datetime``): one string of the alternation of
    their patterns (each searched as written, or anchored whole as a format and a value
    are). The alternatives and values left, as given otherwise."""
    strings = [n for n in nodes if n.kind == "string" and n.pattern is not None]
    words = [json.loads(f'"{e}"') for n in values if n.kind == "string" for e in n.enum or ()] \
        + [v for n in values if n.kind == "literal"
           for v in map(json.loads, n.literals) if isinstance(v, str)]
    if not strings or len({n.lengths for n in strings}) > 1 \
            or words and strings[0].lengths != (0, None) \
            or len(strings) + len(words) < 2 or any(c > "\uffff" for w in words for c in w):
        return nodes, values
    source = "|".join([f"(?:{p.source})" if p.search else f"^(?:{p.source})$"
                       for p in (n.pattern for n in strings) if p is not None]
                      + ["^" + "".join(c if c.isascii() and c.isalnum() else f"\\u{ord(c):04x}"
                                       for c in w) + "$" for w in words])
    merged = Node("string", lengths=strings[0].lengths,
                  pattern=_pattern({"pattern": source}, strings[0].lengths, where))
    others = [Node("literal", literals=kept) for n in values if n.kind == "literal"
              and (kept := tuple(v for v in n.literals if not v.startswith('"')))]
    return [merged if n is strings[0] else n for n in nodes
            if not any(n is s for s in strings[1:])], others


def _tagged(objects: list[Node], tag: str | None, where: str) -> Node:
    """Object alternatives told apart by a discriminator: a key every one of them
    requires, whose values are strings (``const`` / ``enum``) no two of them share —
    ``discriminator.propertyName`` when the schema names it, else the first such key. The
    automaton writes it first (``{"type":"cat",…``), and its value picks the object.
    Without one, when each alternative requires a key no other one has (``Success |
    Failure`` with ``value`` / ``error``), that key is written first and picks it."""
    names = [json.dumps(tag)[1:-1]] if tag is not None else list(objects[0].properties)
    for key in names:
        values = [o.properties.get(key) for o in objects]
        if not all(key in o.required and v is not None and v.kind == "string" and v.enum
                   for o, v in zip(objects, values, strict=True)):
            continue
        spelled = [set(v.enum or ()) for v in values if v is not None]
        if sum(len(e) for e in spelled) != len(set().union(*spelled)):
            continue
        tags = {}
        for o, v in zip(objects, values, strict=True):
            for e in v.enum or ():  # type: ignore[union-attr]
                for colon in (":", ": "):
                    tags[f'"{key}"{colon}"{e}"'] = o
        return Node("tagged", branches=tuple(objects), tags=tags, key=key)
    # a key each requires that no other alternative has, written first (closed objects
    # only: an open one could hold another's key and match both)
    if tag is None and all(o.items is None for o in objects):
        own = [[k for k in o.properties if k in o.required
                and not any(k in other.properties for other in objects if other is not o)]
               for o in objects]
        if all(own):
            return Node("tagged", branches=tuple(objects),
                        tags={f'"{keys[0]}"': o for o, keys in zip(objects, own, strict=True)})
    raise SchemaError(f"{where}: {len(objects)} object alternatives need a discriminator: "
                      + (f"{tag!r} is not " if tag is not None else "no key is ")
                      + "required by each with string const/enum values no two share "
                      "(e.g. Literal['cat'] / Literal['dog'])"
                      + ("" if tag is not None else ", nor does each require a key no "
                         "other alternative has"))


def _kind_of(value: Any) -> str:
    """The JSON kind of a value, as the free alternative that admits it would name it
    (an integral value: ``integer``, which a free ``number`` subsumes)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", type(None): "null"}.get(type(value), "other")


def _describe(node: Node) -> str:
    if node.kind == "ref":
        return f"the recursive reference at {node.key}"
    if node.kind == "tagged":
        return "objects told apart by a discriminator"
    if node.kind == "literal":
        return "values " + ", ".join(node.literals[:3]) + (" …" if len(node.literals) > 3
                                                            else "")
    return node.kind + (" enum" if node.enum else "")


#: Any JSON value (``{}``, ``true``): a map of any, an array of any, or a scalar.
ANY = Node("any")
ANY_BRANCHES = (Node("map", items=ANY), Node("array", items=ANY), Node("string"),
                Node("number"), Node("boolean"), Node("null"))
