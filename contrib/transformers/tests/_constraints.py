"""What the constrained-decoding tests share: the automaton walk, random schemas of the
supported subset, valid documents drawn from a raw schema, and the schema as jsonschema
reads our semantics."""

from __future__ import annotations

import ipaddress
import json
import math
import random
import uuid
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

import jsonschema
from aieng_transformers import SchemaError
from aieng_transformers._constrain import Constraint
from aieng_transformers._jsonformats import FORMATS as FORMAT_PATTERNS
from aieng_transformers._jsonschema import JsonMachine
from hypothesis import strategies as st

PERSON = {"type": "object",
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                         "ok": {"type": "boolean"}, "pet": {"type": "null"},
                         "tags": {"type": "array", "items": {"type": "string",
                                                             "enum": ["a", 'b"c']}},
                         "where": {"type": "object", "properties": {"x": {"type": "number"}},
                                   "required": ["x"]}},
          "required": ["name", "where"]}


#: The shapes ``model_json_schema()`` writes for plain fields, as a raw schema.
PYDANTIC_LIKE = {
    "$defs": {
        "Pet": {"properties": {"kind": {"enum": ["cat", "dog"], "title": "Kind",
                                        "type": "string"},
                               "age": {"anyOf": [{"type": "integer", "minimum": 0},
                                                 {"type": "null"}], "default": None}},
                "required": ["kind"], "title": "Pet", "type": "object"}},
    "properties": {
        "name": {"maxLength": 8, "minLength": 1, "title": "Name", "type": "string"},
        "rating": {"maximum": 5, "minimum": 1, "title": "Rating", "type": "integer"},
        "score": {"exclusiveMaximum": 1, "exclusiveMinimum": 0, "type": "number"},
        "pets": {"items": {"$ref": "#/$defs/Pet"}, "maxItems": 2, "type": "array"},
        "status": {"const": "ok"},
        "when": {"format": "date-time", "type": "string"},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "code": {"enum": [1, 2, "x", None]},
        "tags": {"additionalProperties": {"type": "integer"}, "type": "object"},
        "extra": {"title": "Extra"},
    },
    "required": ["name", "rating", "score", "pets", "status", "code"],
    "title": "Review", "type": "object"}


#: jsonschema's checks of ``format`` (with the ``format-nongpl`` packages: date-time, time,
#: duration, hostname, uri need them), which the constrained JSON also enforces, and of
#: the formats only Pydantic writes: ``uuid1`` … ``uuid8`` (jsonschema's ``uuid`` of that
#: version, as Pydantic's ``UUID1``… check it) and ``ipvanyaddress`` (Python's parser).
FORMATS = jsonschema.FormatChecker()
FORMATS.checkers = dict(jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers)


def _uuid_of(version: int) -> Any:
    def check(value: object) -> bool:
        return not isinstance(value, str) or (
            jsonschema.Draft202012Validator.FORMAT_CHECKER.conforms(value, "uuid")
            and uuid.UUID(value).version == version)
    return check


for _version in range(1, 9):
    FORMATS.checks(f"uuid{_version}", raises=ValueError)(_uuid_of(_version))
FORMATS.checks("ipvanyaddress", raises=ValueError)(
    lambda value: not isinstance(value, str) or bool(ipaddress.ip_address(value)))


def validate(document: Any, schema: Any) -> None:
    """Fail unless ``document`` is valid against ``schema`` as the automaton reads it
    (:func:`strict`), formats checked."""
    jsonschema.validate(document, strict(schema), format_checker=FORMATS)


def strict(schema: Any) -> Any:
    """The schema as jsonschema reads our semantics (no additional properties), through
    ``properties``, ``items``, ``anyOf`` / ``oneOf`` and ``$defs``."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: strict(v) for k, v in out["properties"].items()}
    if "patternProperties" in out:  # a map of keys matching the pattern, and no other
        out["patternProperties"] = {k: strict(v) for k, v in out["patternProperties"].items()}
        out["additionalProperties"] = False
    elif "additionalProperties" in out:  # a map, or an open object
        out["additionalProperties"] = strict(out["additionalProperties"])
    elif "properties" in out:
        out["additionalProperties"] = False
    if "items" in out:
        out["items"] = strict(out["items"])
    if "prefixItems" in out:
        out["prefixItems"] = [strict(v) for v in out["prefixItems"]]
    for word in ("anyOf", "oneOf", "allOf"):
        if word in out:
            out[word] = [strict(v) for v in out[word]]
    if "$defs" in out:
        out["$defs"] = {k: strict(v) for k, v in out["$defs"].items()}
    return out


#: ``pattern`` s: anchored or searched, classes, escapes the JSON text must escape.
PATTERNS = [r"^\d{3}-\d{4}$", r"^[a-c]+$", "b", '^"', r"^(yes|no)$", r"\\", r"^[^,]*$",
            r"a.c", r"^\s?\w+$", r"x|^y", r"^(ab)*$"]
#: enum / const values: every JSON type, ASCII (the tiny models' vocabulary spells them).
VALUES = [1, -2, 2.5, 0, True, False, None, "a", 'b"', "", [1, "x"], {"k": None}]


def _bounded() -> st.SearchStrategy[dict[str, Any]]:
    integers = st.tuples(st.integers(-120, 120), st.integers(0, 130)).flatmap(
        lambda lw: st.sampled_from([
            {"type": "integer", "minimum": lw[0], "maximum": lw[0] + lw[1]},
            {"type": "integer", "exclusiveMinimum": lw[0], "maximum": lw[0] + lw[1] + 1},
            {"type": "integer", "minimum": lw[0]},
            {"type": "integer", "maximum": lw[0]}]))
    numbers = st.tuples(st.sampled_from([-3, -0.5, 0, 0.25, 1, 99.5]),
                        st.sampled_from([0.01, 0.5, 1, 250])).flatmap(
        lambda lw: st.sampled_from([
            {"type": "number", "minimum": lw[0], "maximum": lw[0] + lw[1]},
            {"type": "number", "exclusiveMinimum": lw[0], "exclusiveMaximum": lw[0] + lw[1]},
            {"type": "number", "minimum": lw[0]}]))
    strings = st.tuples(st.integers(0, 4), st.integers(0, 5)).map(
        lambda mn: {"type": "string", "minLength": mn[0], "maxLength": mn[0] + mn[1]})
    patterned = st.tuples(st.sampled_from(PATTERNS), st.sampled_from(
        [{}, {"minLength": 2}, {"maxLength": 6}, {"minLength": 1, "maxLength": 4}])).map(
        lambda pl: {"type": "string", "pattern": pl[0], **pl[1]})
    formatted = st.sampled_from(sorted(FORMAT_PATTERNS)).map(
        lambda f: {"type": "string", "format": f})
    values = st.one_of(
        st.sampled_from(VALUES).map(lambda v: {"const": v}),
        st.lists(st.sampled_from(VALUES), min_size=1, max_size=4).map(lambda e: {"enum": e}))
    multiples = st.tuples(st.sampled_from(["integer", "number"]),
                          st.sampled_from([2, 5, 7, 100, 0.5, 0.25, 2.5]),
                          st.sampled_from([{}, {"minimum": -50}, {"minimum": 3, "maximum": 40},
                                           {"exclusiveMaximum": 0}])).map(
        lambda t: {"type": t[0], "multipleOf": t[1], **t[2]})
    either = st.lists(formatted | patterned | st.sampled_from(
        [{"const": "auto"}, {"enum": ["x", 'q"', 3, None]}]), min_size=2, max_size=3).map(
        lambda alternatives: {"anyOf": alternatives})  # merged when their lengths agree
    return st.one_of(integers, numbers, strings, patterned, formatted, multiples, either,
                     values)


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.sampled_from([{"type": t} for t in ("string", "number", "integer", "boolean",
                                                "null")]),
        st.lists(st.text("ab\"\\", min_size=1, max_size=3), min_size=1, max_size=3,
                 unique=True).map(lambda e: {"type": "string", "enum": e}),
        _bounded(), st.just({}))


def _extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    objects = st.dictionaries(st.sampled_from(["a", "b", "k\"", "long"]), children,
                              max_size=3).flatmap(lambda props: st.builds(
                                  lambda req: {"type": "object", "properties": props,
                                               "required": sorted(req)},
                                  st.sets(st.sampled_from(sorted(props) or ["_"]))
                                  .map(lambda r: r & set(props))))
    arrays = children.map(lambda items: {"type": "array", "items": items})
    bounded_arrays = st.tuples(children, st.integers(0, 2), st.integers(0, 2)).map(
        lambda t: {"type": "array", "items": t[0], "minItems": t[1], "maxItems": t[1] + t[2]})
    optional = children.map(lambda x: {"anyOf": [x, {"type": "null"}]})
    wrapped = children.map(lambda x: {"allOf": [x], "description": "one schema"})
    open_objects = st.tuples(st.dictionaries(st.sampled_from(["a", "b"]), children,
                                             max_size=2), children, st.booleans()).map(
        lambda t: {"type": "object", "properties": t[0], "additionalProperties": t[1],
                   "required": sorted(t[0])[:1] if t[2] else []})
    typed = st.one_of(
        st.integers(0, 4).map(lambda n: {"type": ["string", "null"], "maxLength": n}),
        st.just({"type": ["integer", "boolean"]}),
        st.just({"type": ["number", "null"], "minimum": 0}),
        children.map(lambda x: {"type": ["array", "null"], "items": x}))
    counts = st.sampled_from([{}, {"minProperties": 1}, {"minProperties": 1, "maxProperties": 2},
                              {"minProperties": 2}, {"maxProperties": 0}])
    names = st.sampled_from([{}, {"propertyNames": {"format": "date"}},
                             {"propertyNames": {"enum": ["a", "b", 'c"']}},
                             {"propertyNames": {"maxLength": 2}},
                             {"propertyNames": {"pattern": "^[ab]+$", "maxLength": 3}}])
    maps = st.tuples(children, counts, names).map(
        lambda t: {"type": "object", "additionalProperties": t[0], **t[1], **t[2]})
    patterned_maps = st.tuples(children, counts, st.sampled_from(["^[a-c]{1,3}$", "x", "^k"])
                               ).map(lambda t: {"type": "object",
                                                "patternProperties": {t[2]: t[0]}, **t[1]})
    tuples = st.tuples(st.lists(children, min_size=1, max_size=3),
                       st.sampled_from(["pydantic", "closed", "open", "more"])).map(
        lambda t: {"type": "array", "prefixItems": t[0],
                   **{"pydantic": {"minItems": len(t[0]), "maxItems": len(t[0])},
                      "closed": {"items": False}, "open": {},
                      "more": {"items": {"type": "boolean"}, "maxItems": len(t[0]) + 2}}[t[1]]})
    tagged = st.tuples(st.lists(children, min_size=2, max_size=3),
                       st.sampled_from(["anyOf", "oneOf"])).map(lambda t: {t[1]: [
        {"type": "object", "properties": {"kind": {"const": f"k{i}"}, "v": child},
         "required": ["kind"]} for i, child in enumerate(t[0])]})
    keyed = st.tuples(st.lists(children, min_size=2, max_size=3),
                      st.sampled_from(["anyOf", "oneOf"])).map(lambda t: {t[1]: [
        {"type": "object", "properties": {f"own{i}": child, "shared": {"type": "integer"}},
         "required": [f"own{i}"]} for i, child in enumerate(t[0])]})
    # anyOf whose alternatives may start alike (followed side by side), objects sharing keys
    overlapping = st.lists(children, min_size=2, max_size=3).map(lambda a: {"anyOf": a})
    sharing = st.lists(children, min_size=2, max_size=3).map(lambda cs: {"anyOf": [
        {"type": "object", "properties": {"name": {"type": "string"}, f"v{i}": child},
         "required": ["name", f"v{i}"][:1 + i % 2]} for i, child in enumerate(cs)]})
    distinct = st.tuples(children, st.integers(0, 3), st.integers(0, 2)).map(
        lambda t: {"type": "array", "items": t[0], "uniqueItems": True, "minItems": t[1],
                   "maxItems": t[1] + t[2]})
    return st.one_of(objects, arrays, bounded_arrays, optional, typed, maps, patterned_maps,
                     tuples, tagged, keyed, distinct, wrapped, open_objects, overlapping,
                     sharing)


def _compiles(schema: dict[str, Any]) -> bool:
    """Whether the schema is in the subset (random alternatives may start alike)."""
    try:
        JsonMachine(schema)
    except SchemaError:
        return False
    return True


def _with_defs(body: dict[str, Any]) -> dict[str, Any]:
    """The schema moved under ``$defs`` and used twice through ``$ref``."""
    return {"$defs": {"Body": body}, "type": "object",
            "properties": {"a": {"$ref": "#/$defs/Body"},
                           "b": {"anyOf": [{"$ref": "#/$defs/Body"}, {"type": "null"}]}},
            "required": ["a"]}


def _recursive(body: dict[str, Any]) -> dict[str, Any]:
    """A recursive schema around ``body``: a tree (children in an array) whose next
    sibling is optional (``anyOf`` with null), as Pydantic writes self-referencing
    models."""
    return {"$defs": {"T": {"type": "object", "properties": {
        "v": body, "kids": {"type": "array", "items": {"$ref": "#/$defs/T"}, "maxItems": 2},
        "next": {"anyOf": [{"$ref": "#/$defs/T"}, {"type": "null"}]}},
        "required": ["v"]}}, "$ref": "#/$defs/T"}


SCHEMAS = st.recursive(_leaf(), _extend, max_leaves=5).flatmap(
    lambda schema: st.sampled_from([schema, _with_defs(schema), _recursive(schema)])
).filter(_compiles)


def accepts(machine: Constraint, text: str) -> bool:
    """Whether ``text`` is a whole text the automaton accepts."""
    state = machine.feed(machine.start(), text)
    return state is not None and machine.accepting(state)


#: Every character a walk may try: printable ASCII (the schemas' values and keys use no more).
ALPHABET = [chr(c) for c in range(32, 127)]


def walk(machine: Constraint, rng: random.Random, slack: int,
         alphabet: Sequence[str] = ALPHABET) -> str:
    """A random text the automaton lets through, in a budget of its shortest plus
    ``slack`` characters; fails if the automaton ever leaves no way to finish in budget
    (what the token budget of constrained decoding relies on)."""
    state, out = machine.start(), ""
    budget = machine.min_chars(state) + slack
    while not machine.complete(state):
        left = budget - len(out) - 1
        options = [(c, after) for c in alphabet
                   if (after := machine.feed(state, c)) is not None
                   and machine.min_chars(after) <= left]
        if machine.accepting(state) and (not options or rng.random() < 0.3):
            break
        assert options, f"stuck after {out!r}"
        char, state = rng.choice(options)
        out += char
    assert len(out) <= budget
    return out


def model_walks(model: Any, *, seed: int, slack: int,
                count: int = 40) -> tuple[JsonMachine, list[str], list[Any]]:
    """The automaton of a Pydantic model's ``model_json_schema()``, ``count`` random
    documents it writes (each in a budget of its shortest plus up to ``slack``
    characters), validated by jsonschema, and the model's own parse of each (which fails
    the test on an invalid one)."""
    schema = model.model_json_schema()
    machine = JsonMachine(schema)
    rng = random.Random(seed)
    texts = [walk(machine, rng, rng.randint(0, slack)) for _ in range(count)]
    for text in texts:
        validate(json.loads(text), schema)
    return machine, texts, [model.model_validate_json(text) for text in texts]


def writable(value: Any) -> bool:
    """Whether a valid document is one the automaton writes: compact JSON (checked by the
    caller), numbers of at most 24 characters, no exponent where a range bounds them."""
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, (int, float)):
        text = json.dumps(value)
        return len(text) <= 24 and "e" not in text.lower() and "inf" not in text.lower() \
            and "nan" not in text.lower()
    if isinstance(value, list):
        return all(writable(v) for v in value)
    if isinstance(value, dict):
        return all(writable(k) and writable(v) for k, v in value.items())
    return all(" " <= c <= "~" for c in value)  # ASCII strings: no \u escapes needed


ASCII = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=4)
#: Map keys: non-empty (the automaton writes no empty key in a map).
KEYS = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=4)
ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | ASCII,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6)


#: No value: a ``$ref`` followed too deep (containers leave it out, or are cut too).
CUT: st.SearchStrategy[Any] = st.nothing()


def _lists(items: st.SearchStrategy[Any], least: int, most: int,
           unique: bool = False) -> st.SearchStrategy[Any]:
    if items is CUT:
        return st.just([]) if least == 0 else CUT
    return st.lists(items, min_size=least, max_size=most,
                    unique_by=(lambda v: json.dumps(v, sort_keys=True)) if unique else None)


def _maps(schema: dict[str, Any], keys: st.SearchStrategy[str],
          values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    least = schema.get("minProperties", 0)
    if values is CUT:
        return st.just({}) if least == 0 else CUT
    return st.dictionaries(keys, values, min_size=least, max_size=schema.get("maxProperties", 3))


def documents(schema: Any, root: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values meant to be valid against ``schema``, read from the raw schema (not from the
    automaton's compiled form); the test keeps those jsonschema says are valid. ``$ref``
    s are followed three deep (a recursive schema's values end there: :data:`CUT`)."""
    if depth > 3:
        return CUT
    if schema is True or not set(schema) - {"title", "description", "$defs"}:
        return ANY_VALUE
    if "patternProperties" in schema:  # one pattern: a map of keys matching it
        ((source, value_schema),) = schema["patternProperties"].items()
        keys = st.from_regex(source, alphabet=st.characters(min_codepoint=32,
                                                            max_codepoint=126))
        return _maps(schema, keys, documents(value_schema, root, depth))
    if "additionalProperties" in schema and "properties" not in schema:
        keys = KEYS if "propertyNames" not in schema else documents(
            {"type": "string", **schema["propertyNames"]}, root, depth).filter(
                lambda k: isinstance(k, str))
        return _maps(schema, keys, documents(schema["additionalProperties"], root, depth))
    if "$ref" in schema:
        return documents(root["$defs"][schema["$ref"].rsplit("/", 1)[1]], root, depth + 1)
    if "allOf" in schema:  # one schema (the generator writes no other)
        return documents(schema["allOf"][0], root, depth)
    for word in ("anyOf", "oneOf"):
        if word in schema:
            options = [o for o in (documents(s, root, depth) for s in schema[word])
                       if o is not CUT]
            return st.one_of(options) if options else CUT
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type", "object" if "properties" in schema else "array")
    if isinstance(kind, list):
        options = [o for o in (documents({**schema, "type": k}, root, depth) for k in kind)
                   if o is not CUT]
        return st.one_of(options) if options else CUT
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        values = {k: documents(v, root, depth) for k, v in props.items()}
        if any(values[k] is CUT for k in required):
            return CUT
        # Keys in the schema's order: the automaton writes an object union's discriminator
        # first (the strategy lists it first), any order elsewhere.
        named = st.fixed_dictionaries(
            {k: v for k, v in values.items() if k in required},
            optional={k: v for k, v in values.items() if k not in required and v is not CUT},
        ).map(lambda d: {k: d[k] for k in props if k in d})
        extra = documents(schema.get("additionalProperties", False), root, depth) \
            if schema.get("additionalProperties", False) is not False else CUT
        if extra is CUT:
            return named
        others = st.dictionaries(KEYS.filter(lambda k: k not in props), extra, max_size=2)
        return st.builds(lambda n, o: {**n, **o}, named, others)
    if kind == "array" and "prefixItems" in schema:
        leading = [documents(v, root, depth) for v in schema["prefixItems"]]
        if any(v is CUT for v in leading):
            return CUT
        rest = schema.get("items", True)
        tail = st.just([]) if rest is False else _lists(documents(rest, root, depth), 0, 2)
        return st.builds(lambda h, t: [*h, *t], st.tuples(*leading), tail)
    if kind == "array":
        return _lists(documents(schema["items"], root, depth), schema.get("minItems", 0),
                      schema.get("maxItems", 3), schema.get("uniqueItems", False))
    if kind == "string" and schema.get("format") in FORMAT_PATTERNS:
        return st.from_regex(FORMAT_PATTERNS[schema["format"]], fullmatch=True)
    if kind == "string" and "pattern" in schema:  # kept when the lengths fit too
        return st.from_regex(schema["pattern"], alphabet=st.characters(min_codepoint=32,
                                                                       max_codepoint=126))
    if kind == "string":
        low = schema.get("minLength", 0)
        return st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=low,
                       max_size=schema.get("maxLength", low + 6))
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1000))
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + 1000))
        ints = st.integers(math.ceil(low), math.floor(high)) if math.ceil(low) <= high \
            else st.nothing()
        if "multipleOf" in schema:  # the multiples (kept when in range)
            step = Fraction(str(schema["multipleOf"]))
            if kind == "integer":  # of p/q: of p
                return ints.map(lambda v: v - v % step.numerator)
            scaled = st.integers(math.ceil(low / step), math.floor(high / step)) \
                if math.ceil(low / step) <= high / step else st.nothing()
            exact = scaled.map(lambda k: k * step)
            return exact.map(lambda v: int(v) if v.denominator == 1 else float(v)) \
                | exact.map(float)
        if kind == "integer":
            return ints
        return st.one_of(ints, st.decimals(Decimal(str(low)), Decimal(str(high)), places=3,
                                           allow_nan=False, allow_infinity=False).map(float))
    return st.sampled_from({"boolean": [True, False], "null": [None]}[kind])
