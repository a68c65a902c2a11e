"""Constrained decoding: JSON against a schema and regex, enforced while decoding."""

from __future__ import annotations

import json
import math
import random
import string
from decimal import Decimal
from typing import Any

import jsonschema
import pytest
import regex
from _tiny import CHAIN_TEXT
from aieng_hookspecs.types import Completion, Message, Request
from aieng_transformers import SchemaError, SmolLM2Backend
from aieng_transformers._jsonschema import JsonMachine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio

PERSON = {"type": "object",
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                         "ok": {"type": "boolean"}, "pet": {"type": "null"},
                         "tags": {"type": "array", "items": {"type": "string",
                                                             "enum": ["a", 'b"c']}},
                         "where": {"type": "object", "properties": {"x": {"type": "number"}},
                                   "required": ["x"]}},
          "required": ["name", "where"]}


def ask(**params: Any) -> Request:
    return Request(messages=(Message("user", "hi"),), **params)


async def generate(backend: SmolLM2Backend, request: Request) -> Completion:
    completion = await backend.aieng_generate(request)
    assert completion is not None
    return completion


def strict(schema: Any) -> Any:
    """The schema as jsonschema reads our semantics (no additional properties), through
    ``properties``, ``items``, ``anyOf`` / ``oneOf`` and ``$defs``."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: strict(v) for k, v in out["properties"].items()}
    if "additionalProperties" in out:  # a map, or an open object
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
    values = st.one_of(
        st.sampled_from(VALUES).map(lambda v: {"const": v}),
        st.lists(st.sampled_from(VALUES), min_size=1, max_size=4).map(lambda e: {"enum": e}))
    return st.one_of(integers, numbers, strings, patterned, values)


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
    maps = st.tuples(children, st.sampled_from([{}, {"minProperties": 1},
                                                 {"minProperties": 1, "maxProperties": 2},
                                                 {"minProperties": 2}, {"maxProperties": 0}])).map(
        lambda t: {"type": "object", "additionalProperties": t[0], **t[1]})
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
    distinct = st.tuples(children, st.integers(0, 3), st.integers(0, 2)).map(
        lambda t: {"type": "array", "items": t[0], "uniqueItems": True, "minItems": t[1],
                   "maxItems": t[1] + t[2]})
    return st.one_of(objects, arrays, bounded_arrays, optional, typed, maps, tuples, tagged,
                     keyed, distinct, wrapped, open_objects)


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


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=SCHEMAS, seed=st.integers(0, 2**16), temperature=st.sampled_from([0.0, 1.0]))
async def test_outputs_always_validate(random_backend: SmolLM2Backend, schema: dict[str, Any],
                                       seed: int, temperature: float) -> None:
    """Whatever the (small) schema, seed and temperature, the random model's output parses
    and validates: budget-aware decoding finishes the document within ``max_tokens``."""
    machine = JsonMachine(schema)
    budget = machine.min_chars(machine.start()) + 24
    completion = await generate(random_backend, ask(response_schema=schema, seed=seed,
                                                    temperature=temperature,
                                                    max_tokens=budget))
    jsonschema.validate(json.loads(completion.text), strict(schema))
    assert completion.usage.completion_tokens <= budget


@pytest.mark.parametrize("temperature", [0.0, 1.0])
async def test_chain_model_is_steered_into_the_schema(chain_backend: SmolLM2Backend,
                                                      temperature: float) -> None:
    """The chain model, which wants to write ``CHAIN_TEXT``, writes schema-valid JSON instead;
    greedy and sampled alike, and a whole document ends generation at once."""
    for seed in range(3):
        completion = await generate(chain_backend, ask(response_schema=PERSON, max_tokens=60,
                                                       temperature=temperature, seed=seed))
        jsonschema.validate(json.loads(completion.text), strict(PERSON))
        assert completion.finish_reason == "stop"


async def test_shortest_budget_still_completes(chain_backend: SmolLM2Backend) -> None:
    """With ``max_tokens`` equal to the shortest valid document, the output is that long and
    valid (each needed character is one byte token here)."""
    machine = JsonMachine(PERSON)
    shortest = machine.min_chars(machine.start())
    completion = await generate(chain_backend, ask(response_schema=PERSON,
                                                   max_tokens=shortest))
    assert len(completion.text) == shortest
    jsonschema.validate(json.loads(completion.text), strict(PERSON))


@pytest.mark.parametrize("pattern", [r"[a-c]{2,4}-\d{2}", r"(yes|no)", r"x+y?z{0,3}",
                                     r"\d{3}-\d{4}"])
async def test_regex_outputs_fully_match(chain_backend: SmolLM2Backend, pattern: str) -> None:
    """Regex-constrained output fully matches the pattern, greedy and sampled."""
    for seed, temperature in ((0, 0.0), (1, 1.0), (2, 1.0)):
        completion = await generate(chain_backend, ask(metadata={"regex": pattern},
                                                       max_tokens=30, seed=seed,
                                                       temperature=temperature))
        assert regex.fullmatch(pattern, completion.text), completion.text


async def test_regex_that_agrees_with_the_model_changes_nothing(
        chain_backend: SmolLM2Backend) -> None:
    """A pattern the model's own greedy text already satisfies does not alter it, and the
    end-of-sequence token is taken where the pattern accepts."""
    completion = await generate(chain_backend, ask(metadata={"regex": r"abc-xyz:?"}))
    assert completion.text == "abc-xyz:"
    assert CHAIN_TEXT.startswith(completion.text)


async def test_regex_budget_and_end_are_exact(chain_backend: SmolLM2Backend) -> None:
    """A pattern of the automaton's subset knows the characters it still needs: with two
    tokens left the long alternative the model wants is refused at its first character
    (regression: the partial matcher counted one character still needed, let the model
    start ``abc-xyz:`` and ran out of tokens after ``ab``), and a match nothing may extend
    ends generation at once (finish ``stop``)."""
    pattern = "(abc-xyz:|q)"
    short = await generate(chain_backend, ask(metadata={"regex": pattern}, max_tokens=2))
    assert (short.text, short.finish_reason) == ("q", "stop")
    free = await generate(chain_backend, ask(metadata={"regex": pattern}, max_tokens=20))
    assert (free.text, free.finish_reason) == ("abc-xyz:", "stop")
    assert free.usage.completion_tokens == len("abc-xyz:")  # no end-of-sequence token needed


@pytest.mark.parametrize("pattern", [r"(?=\d)\w{3}", r"(a)\1b"])
async def test_regex_outside_the_subset_falls_back(chain_backend: SmolLM2Backend,
                                                    pattern: str) -> None:
    """Python-only syntax (a lookahead, a backreference) still constrains, through the
    ``regex`` package's partial matching."""
    completion = await generate(chain_backend, ask(metadata={"regex": pattern},
                                                   max_tokens=12))
    assert regex.fullmatch(pattern, completion.text), completion.text


@pytest.mark.parametrize(("request_params", "message"), [
    ({"response_schema": {"type": "string", "pattern": "(?=a)"}}, "pattern.*lookaround"),
    ({"response_schema": {"anyOf": [{"type": "object", "properties": {"a": {}}},
                                    {"properties": {}}]}},
     "discriminator"),
    ({"response_schema": {"anyOf": [{"type": "object", "additionalProperties": True},
                                    {"type": "array", "items": {}}, {"type": "object"}]}},
     "same character"),
    ({"response_schema": {"$defs": {"A": {"type": "object", "properties": {
        "a": {"$ref": "#/$defs/A"}}, "required": ["a"]}}, "$ref": "#/$defs/A"}},
     "no finite document"),
    ({"response_schema": {"type": "integer", "minimum": 5, "exclusiveMaximum": 5}}, "bounds"),
    ({"response_schema": {"type": "string", "minLength": 3, "maxLength": 2}}, "below"),
    ({"response_schema": {"type": "object", "properties": {"a": {}},
                          "minProperties": 1}}, "minProperties"),
    ({"response_schema": {"type": "object", "properties": {"a": {"type": "string"}},
                          "required": ["b"]}}, "required"),
    ({"response_schema": {"allOf": [{"type": "string"}, {"maxLength": 3}]}}, "allOf"),
    ({"metadata": {"regex": "("}}, "does not compile"),
    ({"metadata": {"regex": "a"}, "response_schema": {"type": "null"}}, "not both"),
])
async def test_unsupported_constraints_fail_before_generating(
        chain_backend: SmolLM2Backend, request_params: dict[str, Any], message: str) -> None:
    """A schema outside the subset, a bad regex, or both at once fail with a clear error
    before any token is generated."""
    with pytest.raises(ValueError, match=message):
        await generate(chain_backend, ask(**request_params))


def test_schema_error_names_the_place() -> None:
    """The error names the JSON pointer of the offending keyword."""
    with pytest.raises(SchemaError, match="#/properties/a/items"):
        JsonMachine({"properties": {"a": {"type": "array", "items": {"minimum": 1}}}})


def test_machine_accepts_exactly_valid_documents() -> None:
    """Random character walks through the automaton always end in valid JSON within the
    character budget, and invalid texts are refused."""
    machine = JsonMachine(PERSON)
    alphabet = list('{}[]":, -0123456789.E\\+' + string.ascii_lowercase)
    rng = random.Random(0)
    shortest = machine.min_chars(machine.start())
    for _ in range(80):
        out = walk(machine, rng, rng.randint(0, 60 - shortest), alphabet)
        jsonschema.validate(json.loads(out), strict(PERSON))
    for bad in ('{"name":"a"}', '{"nam', '{"name":1', '{"where":{"x":01', '{ "name"',
                '{"name":"a","name"', '{"name":"\n'):
        assert not accepts(machine, bad), bad


def test_pending_escape_rules_out_plain_enum_values() -> None:
    """After a backslash inside an enum string, only escaped values can finish it: the
    characters still needed count from those (regression: 'a' was counted, so the token
    budget let a document run out of tokens mid-array)."""
    machine = JsonMachine({"type": "array", "items": {"type": "string",
                                                     "enum": ["\\", '"', "a"]}})
    state = machine.feed(machine.start(), '["\\')
    assert state is not None
    assert machine.min_chars(state) == len('\\"]')  # the escaped char, the quote, the bracket


# -- the automaton against an independent validator and generator ---------------------------

def accepts(machine: JsonMachine, text: str) -> bool:
    """Whether ``text`` is a whole document the automaton accepts."""
    state = machine.feed(machine.start(), text)
    return state is not None and machine.accepting(state)


#: Every character a walk may try: printable ASCII (the schemas' values and keys use no more).
ALPHABET = [chr(c) for c in range(32, 127)]


def walk(machine: JsonMachine, rng: random.Random, slack: int,
         alphabet: list[str] = ALPHABET) -> str:
    """A random document the automaton lets through, in a budget of its shortest plus
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
        jsonschema.validate(json.loads(text), strict(schema))
    return machine, texts, [model.model_validate_json(text) for text in texts]


@settings(max_examples=150, deadline=None)
@given(schema=SCHEMAS, seed=st.integers(0, 2**32 - 1), slack=st.integers(0, 12))
def test_walks_end_in_valid_documents(schema: dict[str, Any], seed: int, slack: int) -> None:
    """Random walks through the automaton of any schema of the subset (bounds, lengths,
    counts, ``enum``/``const`` of every type, ``anyOf``/type lists, ``$ref``) end in
    documents jsonschema validates, within the characters ``min_chars`` promised."""
    machine = JsonMachine(schema)
    rng = random.Random(seed)
    for _ in range(3):
        jsonschema.validate(json.loads(walk(machine, rng, slack)), strict(schema))


def _writable(value: Any) -> bool:
    """Whether a valid document is one the automaton writes: compact JSON (checked by the
    caller), numbers of at most 24 characters, no exponent where a range bounds them."""
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, (int, float)):
        text = json.dumps(value)
        return len(text) <= 24 and "e" not in text.lower() and "inf" not in text.lower() \
            and "nan" not in text.lower()
    if isinstance(value, list):
        return all(_writable(v) for v in value)
    if isinstance(value, dict):
        return all(_writable(v) for v in value.values())
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


def documents(schema: Any, root: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values meant to be valid against ``schema``, read from the raw schema (not from the
    automaton's compiled form); the test keeps those jsonschema says are valid. ``$ref``
    s are followed three deep (a recursive schema's values end there: :data:`CUT`)."""
    if depth > 3:
        return CUT
    if schema is True or not set(schema) - {"title", "description", "$defs"}:
        return ANY_VALUE
    if "additionalProperties" in schema and "properties" not in schema:
        values = documents(schema["additionalProperties"], root, depth)
        least = schema.get("minProperties", 0)
        if values is CUT:
            return st.just({}) if least == 0 else CUT
        return st.dictionaries(KEYS, values, min_size=least,
                               max_size=schema.get("maxProperties", 3))
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
        if kind == "integer":
            return ints
        return st.one_of(ints, st.decimals(Decimal(str(low)), Decimal(str(high)), places=3,
                                           allow_nan=False, allow_infinity=False).map(float))
    return st.sampled_from({"boolean": [True, False], "null": [None]}[kind])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), schema=SCHEMAS)
def test_every_valid_document_is_accepted(data: st.DataObject, schema: dict[str, Any]) -> None:
    """Valid documents of the schema (drawn from the raw schema, kept when jsonschema
    validates them), written compactly, are accepted whole: the automaton refuses no valid
    document it could write. And a text it accepts is valid (checked on the same
    documents with one character changed)."""
    machine = JsonMachine(schema)
    value = data.draw(documents(schema, schema), label="document")
    text = json.dumps(value, separators=(",", ":"))
    if _writable(value) and jsonschema.Draft202012Validator(strict(schema)).is_valid(value):
        state = machine.feed(machine.start(), text)
        assert state is not None and machine.accepting(state), text
    position = data.draw(st.integers(0, max(len(text) - 1, 0)))
    mutated = text[:position] + data.draw(st.sampled_from(ALPHABET)) + text[position + 1:]
    after = machine.feed(machine.start(), mutated)
    if after is not None and machine.accepting(after):
        jsonschema.validate(json.loads(mutated), strict(schema))


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


def test_a_pydantic_style_schema() -> None:
    """The shapes ``model_json_schema()`` writes for plain fields (``$defs``/``$ref``,
    ``Optional`` as ``anyOf`` with null, ``Literal`` as ``const``/``enum``, ``Field``
    bounds, ``format``) compile; its shortest document is what it says, and the
    automaton follows the bounds character by character."""
    machine = JsonMachine(PYDANTIC_LIKE)
    rng = random.Random(1)
    for _ in range(20):
        jsonschema.validate(json.loads(walk(machine, rng, 30)), strict(PYDANTIC_LIKE))
    shortest = '{"name":"a","rating":1,"score":0.1,"pets":[],"status":"ok","code":1}'
    assert machine.min_chars(machine.start()) == len(shortest)
    assert machine.accepting(machine.feed(machine.start(), shortest))  # type: ignore[arg-type]

    head = '{"name":"a","score":0.5,"pets":[],"status":"ok","code":null,"rating":'
    assert [accepts(machine, head + r + "}") for r in ("1", "5", "0", "6", "3.0", "-1")] == [
        True, True, False, False, False, False]
    # a prefix that can no longer end in range is refused at once, not at the end
    assert machine.feed(machine.start(), '{"rating":6') is None
    assert machine.feed(machine.start(), '{"score":1') is None
    assert machine.feed(machine.start(), '{"score":0.') is not None
    assert machine.feed(machine.start(), '{"name":"123456789') is None
    assert machine.feed(machine.start(), '{"name":""') is None
    assert machine.feed(machine.start(), '{"pets":[{"kind":"cat"},{"kind":"dog"},') is None
    assert machine.feed(machine.start(), '{"code":3') is None
    assert machine.feed(machine.start(), '{"name":"\\u00e9') is None  # counted: no \u
    assert accepts(machine, '{"name":"\\n","rating":2,"score":0.99,"pets":[{"kind":"dog","age":3}],'
                   '"status":"ok","code":"x","note":null,"when":"today"}')


@pytest.mark.parametrize(("schema", "message"), [
    ({"anyOf": [{"type": "integer"}, {"type": "number", "minimum": 1}]}, "same character"),
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "same character"),
    ({"oneOf": [{"enum": ["a", "b"]}, {"const": "a"}]}, "two alternatives"),
    ({"enum": [1, "a"], "type": "integer"}, "not of type"),
    ({"$ref": "#/components/x"}, "only"),
    ({"$ref": "#/$defs/missing", "$defs": {}}, "points at nothing"),
    ({"type": "number", "minimum": True}, "boolean"),
    ({"type": "integer", "minimum": 0.5, "maximum": 0.7}, "bounds"),
    ({"type": "string", "minLength": -1}, "non-negative"),
    ({"const": "abc", "maxLength": 2}, "length"),
    ({"type": ["string", "nothing"]}, "list of types"),
    ({"type": ["string", "nothing"], "enum": ["a"]}, "must name"),
])
def test_schemas_outside_the_subset_are_refused(schema: dict[str, Any], message: str) -> None:
    """Alternatives the first character cannot tell apart, values of the wrong type, refs
    elsewhere than ``$defs``, empty ranges and bad bounds fail naming the problem."""
    with pytest.raises(SchemaError, match=message):
        JsonMachine(schema)


def test_alternatives_that_merge() -> None:
    """In ``anyOf`` an integer beside an unbounded number is the number, a string enum
    beside a free string the string, duplicate nulls one; ``enum``/``const`` values of
    several alternatives are one set."""
    machine = JsonMachine({"anyOf": [{"type": "integer"}, {"type": "number"},
                                     {"enum": ["a"]}, {"type": "string"},
                                     {"type": "null"}, {"type": "null"}]})
    for text in ("2.5", "3", '"zz"', "null"):
        assert accepts(machine, text), text
    for schema, texts in (
            ({"anyOf": [{"type": "null"}, {"const": None}]}, ["null"]),
            ({"anyOf": [{"type": "integer"}, {"const": 1}, {"const": "a"}]}, ["7", '"a"']),
            ({"anyOf": [{"type": "integer", "minimum": 3}, {"type": "integer"}]}, ["-4"]),
            ({"anyOf": [{}, {"type": "null"}]}, ["null", "[]", '{"x":1}'])):
        merged = JsonMachine(schema)
        for text in texts:
            assert accepts(merged, text), (schema, text)
    values = JsonMachine({"anyOf": [{"const": 1}, {"enum": ["a", None]}, {"const": [2]}]})
    for text, ok in (("1", True), ('"a"', True), ("null", True), ("[2]", True), ("2", False),
                     ("[3]", False), ("12", False)):
        assert accepts(values, text) is ok, text


def test_bounds_are_the_decimals_the_schema_wrote() -> None:
    """``exclusiveMaximum: 0.01`` excludes the text ``0.01`` (regression: the bound was
    read as the double nearest 0.01, a hair above it), and a bounded non-integer has at
    most 15 digits, so a float reader agrees with the exact comparison."""
    machine = JsonMachine({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.01})

    assert not accepts(machine, "0.01") and not accepts(machine, "0")
    assert accepts(machine, "0.001") and accepts(machine, "0.00999999999999")  # 14 decimals
    assert machine.feed(machine.start(), "0.0099999999999999") is None  # 16: refused
    assert machine.min_chars(machine.start()) == len("0.001")


def test_maps_and_any_values() -> None:
    """``additionalProperties`` as a schema without ``properties`` is a map of free keys
    (``dict[str, X]``); ``{}`` / ``true`` is any JSON value (Pydantic's ``Any``)."""
    counts = JsonMachine({"type": "object", "additionalProperties": {"type": "integer",
                                                                      "minimum": 0}})

    assert accepts(counts, '{"a":1, "b c":2}') and accepts(counts, "{}")
    assert counts.feed(counts.start(), '{"a":1,"a"') is None  # a key it has
    assert counts.feed(counts.start(), '{"a":1,"\\u0061"') is None  # the same, escaped
    assert counts.feed(counts.start(), '{""') is None  # no empty key
    assert counts.feed(counts.start(), '{"a":-1') is None  # ("-0" is 0: allowed)
    assert counts.feed(counts.start(), '{"a":"') is None
    key = counts.feed(counts.start(), '{"k')
    assert key is not None and counts.min_chars(key) == len('":0}')
    bare = JsonMachine({"type": "object", "minProperties": 1})  # JSON Schema: any object
    assert accepts(bare, '{"a":[1,{"b":null}]}') and not accepts(bare, "{}")
    assert accepts(JsonMachine({"type": "array"}), '[1,"x",{}]')  # any items
    anything = JsonMachine({"description": "any value"})
    for text in ('[{"a":[null,true]},"x",-1.5e3]', "{}", '"s"', "0", "false", '{"k":{}}'):
        assert accepts(anything, text), text
    assert accepts(JsonMachine(True), "[1]")  # type: ignore[arg-type]
    some = JsonMachine({"type": "object", "additionalProperties": {"type": "boolean"},
                        "minProperties": 1, "maxProperties": 2})
    assert not accepts(some, "{}") and accepts(some, '{"a":true}')
    assert some.feed(some.start(), '{"a":true,"b":false,') is None
    assert some.min_chars(some.start()) == len('{"a":true}')
    two = JsonMachine({"type": "object", "additionalProperties": {"type": "integer"},
                       "minProperties": 2})
    rng = random.Random(0)
    for _ in range(20):  # tight budgets: an underestimate would strand the walk
        assert len(json.loads(walk(two, rng, rng.randint(0, 3)))) >= 2
    with pytest.raises(SchemaError, match="maps"):
        JsonMachine({"type": "object", "properties": {}, "minProperties": 1})


def test_pydantic_models_validate_what_the_automaton_writes() -> None:
    """The schema a real Pydantic model writes (``model_json_schema()``: an ``Enum`` and a
    nested model in ``$defs``, ``Optional`` fields, ``Field`` bounds and lengths,
    ``Literal``, ``dict[str, int]``, ``Any``, a tuple) compiles, and every random document the
    automaton lets through is accepted by the model's own validation."""
    import enum
    from typing import Literal

    from pydantic import BaseModel, Field

    class Kind(str, enum.Enum):
        cat = "cat"
        dog = "dog"

    class Pet(BaseModel):
        kind: Kind
        name: str = Field(min_length=1, max_length=12)
        age: int | None = Field(default=None, ge=0, le=40)

    class Review(BaseModel):
        title: str
        rating: int = Field(ge=1, le=5)
        score: float = Field(gt=0, lt=1)
        pets: list[Pet] = Field(max_length=2)
        status: Literal["ok", "late"]
        tags: dict[str, int]
        note: str | None = None
        extra: Any = None
        where: tuple[int, str] = (0, "")

    assert "prefixItems" in json.dumps(Review.model_json_schema())
    model_walks(Review, seed=7, slack=40, count=60)


def test_shared_definitions_compile_once() -> None:
    """A definition used by definitions used twice, twenty levels deep, compiles in
    linear time (each ``$ref`` target once), and the document is still exact."""
    depth = 20
    defs = {f"D{i}": {"type": "object",
                      "properties": {"a": {"$ref": f"#/$defs/D{i + 1}"},
                                     "b": {"$ref": f"#/$defs/D{i + 1}"}}}
            for i in range(depth)}
    defs[f"D{depth}"] = {"type": "integer", "minimum": 1, "maximum": 2}
    machine = JsonMachine({"$defs": defs, "$ref": "#/$defs/D0"})  # 2**20 paths if inlined
    state = machine.feed(machine.start(), '{"a":{"b":{}}}')
    assert state is not None and machine.accepting(state)
    assert machine.feed(machine.start(), '{"a":{"a":{"a":{"c"') is None


def test_tuples() -> None:
    """``prefixItems`` (Pydantic's ``tuple[int, str]``): each leading item has its own
    schema; ``items: false`` ends the array there, a schema types the rest."""
    pair = JsonMachine({"type": "array", "prefixItems": [{"type": "integer"},
                                                         {"type": "string"}],
                        "minItems": 2, "maxItems": 2})

    assert accepts(pair, '[1,"a"]') and not accepts(pair, "[1]")
    assert pair.feed(pair.start(), '["a"') is None and pair.feed(pair.start(), "[1,2") is None
    assert pair.feed(pair.start(), '[1,"a",') is None
    assert pair.min_chars(pair.start()) == len('[0,""]')
    more = JsonMachine({"type": "array", "prefixItems": [{"type": "null"}],
                        "items": {"type": "boolean"}})
    assert accepts(more, "[null,true,false]") and accepts(more, "[]")
    assert more.feed(more.start(), "[null,null") is None
    with pytest.raises(SchemaError, match="minItems"):
        JsonMachine({"type": "array", "prefixItems": [{}], "items": False, "minItems": 2})


def test_discriminated_unions() -> None:
    """Object alternatives with a discriminator (a key each requires, with string values
    no two share — Pydantic's ``Cat | Dog`` with ``Literal`` tags, with or without
    ``Field(discriminator=...)``) are supported: the tag is written first and picks the
    object; Pydantic validates every document. Without a discriminator they are
    refused, naming what is missing."""
    from typing import Literal

    from pydantic import BaseModel, Field

    class Cat(BaseModel):
        pet_type: Literal["cat"]
        meows: int = Field(ge=0)

    class Dog(BaseModel):
        pet_type: Literal["dog", "puppy"]
        barks: float
        name: str | None = None

    class Owner(BaseModel):
        pet: Cat | Dog = Field(discriminator="pet_type")
        others: list[Cat | Dog]

    assert "discriminator" in json.dumps(Owner.model_json_schema())
    machine, _, _ = model_walks(Owner, seed=5, slack=40)
    assert accepts(machine, '{"pet":{"pet_type": "puppy","barks":1.5},"others":[]}')
    assert not accepts(machine, '{"pet":{"barks":1.5,"pet_type":"dog"},"others":[]}')
    assert machine.feed(machine.start(), '{"pet":{"pet_type":"cat","barks"') is None
    assert machine.feed(machine.start(), '{"pet":{"pet_type":"cow"') is None
    untagged = {"anyOf": [{"type": "object", "properties": {"a": {"type": "string"}}},
                          {"type": "object", "properties": {"b": {"type": "string"}}}]}
    with pytest.raises(SchemaError, match="discriminator.*nor does each require a key"):
        JsonMachine(untagged)  # neither requires its key: nothing tells them apart
    with pytest.raises(SchemaError, match="'kind' is not"):
        JsonMachine({**untagged, "discriminator": {"propertyName": "kind"}})


def test_patterns_in_json_strings() -> None:
    """``pattern`` (Pydantic's ``Field(pattern=...)``) is searched in the string's decoded
    characters, as JSON Schema has it, with its lengths folded in: characters that leave
    no finishable match are refused at once, escapes count as the characters they stand
    for, and the characters still needed are exact."""
    from pydantic import BaseModel, Field

    class Contact(BaseModel):
        phone: str = Field(pattern=r"^\d{3}-\d{4}$")
        code: str = Field(pattern=r"[A-Z]{2}", min_length=3, max_length=5)
        handle: str | None = Field(default=None, pattern=r"^@\w+$")

    machine, _, _ = model_walks(Contact, seed=3, slack=12)
    shortest = '{"phone":"000-0000","code":"AAA"}'
    assert machine.min_chars(machine.start()) == len(shortest)
    assert accepts(machine, shortest)
    assert machine.feed(machine.start(), '{"phone":"12a') is None
    assert machine.feed(machine.start(), '{"phone":"123-45678') is None
    assert machine.feed(machine.start(), '{"code":"abcd') is None  # no room left for [A-Z]{2}
    assert machine.feed(machine.start(), '{"code":"abc') is not None  # "abcXY" still fits
    assert machine.feed(machine.start(), '{"handle":"@') is not None
    escaped = JsonMachine({"type": "string", "pattern": '^"\\\\\n$'})  # quote, backslash, newline
    assert escaped.min_chars(escaped.start()) == len('"\\"\\\\\\n"')
    assert accepts(escaped, '"\\"\\\\\\n"')
    assert escaped.feed(escaped.start(), '"\\u0022') is None  # no \u escapes here
    assert escaped.feed(escaped.start(), '"\\n') is None
    values = JsonMachine({"type": "string", "enum": ["ab", "b1", "c"], "pattern": r"\d"})
    assert accepts(values, '"b1"') and not accepts(values, '"ab"')
    with pytest.raises(SchemaError, match="matches 'pattern'"):
        JsonMachine({"enum": ["a"], "pattern": "b"})
    with pytest.raises(SchemaError, match=r"#/properties/p/pattern: .*lookaround"):
        JsonMachine({"properties": {"p": {"type": "string", "pattern": "(?!a)"}}})
    with pytest.raises(SchemaError, match="no text"):
        JsonMachine({"type": "string", "pattern": "^abc$", "maxLength": 2})


def test_recursive_models() -> None:
    """A self-referencing Pydantic model (a comment with replies, a thread with an
    optional next thread: ``$ref`` back into ``$defs``) compiles; every document a random
    walk writes — nesting as deep as the budget lets it — validates with the model's own
    validation; the shortest document is exact (a fixed point over the recursion)."""
    from pydantic import BaseModel, Field

    class Comment(BaseModel):
        text: str = Field(max_length=6)
        replies: list[Comment] = Field(default_factory=list, max_length=2)

    class Thread(BaseModel):
        head: Comment
        next: Thread | None = None

    machine, texts, _ = model_walks(Thread, seed=11, slack=80)
    assert max(text.count("{") for text in texts) >= 3  # it does nest
    assert machine.min_chars(machine.start()) == len('{"head":{"text":""}}')
    assert accepts(machine, '{"head":{"text":"a","replies":[{"text":"b","replies":[]}]},'
                            '"next":{"head":{"text":""},"next":null}}')
    assert machine.feed(machine.start(), '{"head":{"text":"a","replies":[{"text":1') is None
    # the cheapest way out of a recursion counts the recursion's own cheapest document
    nested = JsonMachine({"$defs": {"A": {"type": "array", "minItems": 1, "items": {
        "anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}]}}}, "$ref": "#/$defs/A"})
    state = nested.feed(nested.start(), "[[[")
    assert state is not None and nested.min_chars(state) == len("null]]]")
    assert nested.min_chars(nested.start()) == len("[null]")
    with pytest.raises(SchemaError, match="first character"):
        JsonMachine({"$defs": {"A": {"anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}]}},
                     "$ref": "#/$defs/A"})


def test_arrays_of_distinct_items() -> None:
    """``uniqueItems`` (Pydantic's ``set[X]``) over free strings, free integers, enums,
    booleans / null and literal sets: an item equal to one the array has (as JSON Schema
    compares: decoded strings, ``1`` and ``1.0`` one number) is refused as it closes, a
    prefix that can only repeat one at once; the characters still needed count the
    cheapest *distinct* items, so walks in that budget end in documents Pydantic
    validates. Items outside those kinds are refused before generating."""
    import enum
    from typing import Literal

    from pydantic import BaseModel, Field

    class Color(str, enum.Enum):
        red = "red"
        green = "green"
        blue = "blue"

    class Bag(BaseModel):
        tags: set[str] = Field(min_length=3)
        nums: frozenset[int] = Field(min_length=12, max_length=14)
        colors: set[Color] = Field(min_length=2)
        flags: set[bool | None]
        odd: set[Literal["a", 1, 1.0, 2]]

    machine, _, _ = model_walks(Bag, seed=2, slack=30)
    # ten one-digit integers, then two of two characters; "" and two one-character strings
    shortest = ('{"tags":["","a","b"],"nums":[0,1,2,3,4,5,6,7,8,9,-1,-2],'
                '"colors":["red","blue"],"flags":[],"odd":[]}')
    assert machine.min_chars(machine.start()) == len(shortest)
    assert accepts(machine, shortest)
    for repeated in ('{"tags":["a","a"', '{"tags":["a","\\u0061"', '{"nums":[0,-0',
                     '{"nums":[0,0', '{"colors":["red","red"', '{"flags":[true,true',
                     '{"odd":[1,1.0'):
        assert machine.feed(machine.start(), repeated) is None, repeated
    assert machine.feed(machine.start(), '{"nums":[1,1') is not None  # may become 10…19
    assert machine.feed(machine.start(), '{"flags":[true,false,null,') is None  # none left
    state = machine.feed(machine.start(), '{"colors":["red","')
    assert state is not None
    rest = ',"tags":["","a","b"],"nums":[0,1,2,3,4,5,6,7,8,9,-1,-2],"flags":[],"odd":[]}'
    assert machine.min_chars(state) == len('blue"]') + len(rest)  # "red" is taken
    for schema_, message in (
            ({"type": "array", "items": {"type": "number"}, "uniqueItems": True},
             "supported for items"),
            ({"type": "array", "items": {"type": "string", "maxLength": 3},
              "uniqueItems": True}, "supported for items"),
            ({"type": "array", "items": {"type": "boolean"}, "uniqueItems": True,
              "minItems": 3}, "distinct items"),
            ({"type": "array", "prefixItems": [{}], "uniqueItems": True}, "prefixItems"),
            ({"type": "array", "items": {}, "uniqueItems": "yes"}, "true or false")):
        with pytest.raises(SchemaError, match=message):
            JsonMachine(schema_)


def test_unions_told_apart_by_a_key_of_their_own() -> None:
    """Objects without a discriminator, each requiring a key no other alternative has
    (Pydantic's ``Success | Failure``): that key is written first and picks the object;
    Pydantic validates every document, the characters still needed count the key's
    value, and a shared key cannot come first."""
    from pydantic import BaseModel

    class Success(BaseModel):
        value: int
        note: str | None = None

    class Failure(BaseModel):
        error: str
        code: int = 0
        note: str | None = None

    class Result(BaseModel):
        outcome: Success | Failure
        history: list[Success | Failure] = []

    machine, _, results = model_walks(Result, seed=4, slack=40)
    assert {type(r.outcome).__name__ for r in results} == {"Success", "Failure"}
    assert machine.min_chars(machine.start()) == len('{"outcome":{"value":0}}')
    assert accepts(machine, '{"outcome":{"error":"x","code":2,"note":null}}')
    assert not accepts(machine, '{"outcome":{"code":2,"error":"x"}}')  # its key first
    assert machine.feed(machine.start(), '{"outcome":{"note"') is None  # shared by both
    assert machine.feed(machine.start(), '{"outcome":{"value":1,"error"') is None
    state = machine.feed(machine.start(), '{"outcome":{"err')
    assert state is not None and machine.min_chars(state) == len('or":""}}')


@settings(max_examples=60, deadline=None)
@given(schema=SCHEMAS, seed=st.integers(0, 2**32 - 1),
       vocabulary=st.lists(st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                   min_size=1, max_size=4), min_size=1, max_size=60))
def test_first_character_mask_drops_only_refused_tokens(schema: dict[str, Any], seed: int,
                                                        vocabulary: list[str]) -> None:
    """The candidate mask of a state (``Guide._candidates``) keeps exactly the tokens
    whose first character the automaton accepts there — every token it drops is refused
    whole — and the stop ids; ids past the vocabulary are dropped."""
    from aieng_transformers._constrain import Guide, JsonConstraint

    texts: list[str | None] = [*vocabulary, None]
    stop = len(texts) - 1
    constraint = JsonConstraint(schema)
    guide = Guide(constraint, texts, frozenset({stop}))
    rng = random.Random(seed)
    for _ in range(12):
        mask = guide._candidates(len(texts) + 2).tolist()
        assert mask[stop] and not mask[-1] and not mask[-2]
        for token, text in enumerate(vocabulary):
            whole = constraint.feed(guide.state, text) is not None
            head = constraint.feed(guide.state, text[0]) is not None
            assert mask[token] == head and (head or not whole), text
        options = [c for c in ALPHABET if constraint.feed(guide.state, c) is not None]
        if not options:
            break
        guide.state = constraint.feed(guide.state, rng.choice(options))


def test_all_of() -> None:
    """``allOf`` of one schema (Pydantic v1's ``allOf: [{"$ref": …}]`` beside a default)
    is that schema; ``allOf`` of objects (OpenAPI's inheritance: a base by ``$ref`` and
    more properties) is one object of all their properties and required names, valid
    against every part; anything else is refused, naming why."""
    v1 = {"title": "Owner", "type": "object", "definitions": {"Pet": {
        "title": "Pet", "type": "object", "properties": {"name": {"type": "string"}},
        "required": ["name"]}},
        "properties": {"pet": {"title": "Pet", "default": {"name": "x"},
                               "allOf": [{"$ref": "#/definitions/Pet"}]}},
        "required": ["pet"]}
    machine = JsonMachine(v1)
    assert accepts(machine, '{"pet":{"name":"Rex"}}') and not accepts(machine, '{"pet":{}}')
    inherited = {"$defs": {"Base": {"type": "object", "properties": {"id": {"type": "integer"}},
                                    "required": ["id"]}},
                 "allOf": [{"$ref": "#/$defs/Base"},
                           {"type": "object", "properties": {"name": {"type": "string"},
                                                             "id": {"type": "integer"}},
                            "required": ["name"]}]}
    merged = JsonMachine(inherited)
    assert merged.min_chars(merged.start()) == len('{"id":0,"name":""}')
    rng = random.Random(6)
    for _ in range(30):
        jsonschema.validate(json.loads(walk(merged, rng, rng.randint(0, 20))), inherited)
    for schema, message in (
            ({"allOf": [{"type": "string"}, {"maxLength": 3}]}, "supported for one schema"),
            ({"allOf": [{"properties": {"a": {"type": "string"}}},
                        {"properties": {"a": {"type": "integer"}}}]}, "two different"),
            ({"allOf": [{"properties": {"a": {}}, "additionalProperties": False},
                        {"properties": {"b": {}}}]}, "forbids"),
            ({"allOf": []}, "non-empty")):
        with pytest.raises(SchemaError, match=message):
            JsonMachine(schema)


def test_open_objects() -> None:
    """``additionalProperties`` a schema (or ``true``) beside ``properties`` (Pydantic's
    ``extra="allow"``): named keys take their property's schema, others the extra one,
    each key once (compared decoded), in any order; the characters still needed follow
    whichever key the one being written can still become."""
    from pydantic import BaseModel, ConfigDict

    class Item(BaseModel):
        model_config = ConfigDict(extra="allow")
        name: str
        qty: int = 1

    model_walks(Item, seed=8, slack=30)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
              "additionalProperties": {"type": "string", "minLength": 3}}
    machine = JsonMachine(schema)
    assert accepts(machine, '{"b":"xyz","a":1}') and accepts(machine, '{"\\u0061":1}')
    for bad in ('{"a":1,"b":"x"}', '{"a":1,"a":2}', '{"a":"xyz"}', '{"b":"xyz"}',
                '{"":"xyz","a":1}'):
        assert not accepts(machine, bad), bad
    for prefix, rest in (('{"', 'a":0}'), ('{"a":1,"', 'b":"xxx"}'), ('{"b', '":"xxx","a":0}'),
                         ('{"\\', 'n":"xxx","a":0}')):
        state = machine.feed(machine.start(), prefix)
        assert state is not None and machine.min_chars(state) == len(rest), prefix
    with pytest.raises(SchemaError, match="maps"):  # counts beside named keys: refused
        JsonMachine({**schema, "minProperties": 2})
