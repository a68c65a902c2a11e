"""The JSON-schema automaton of constrained decoding against an independent validator
(jsonschema) and generator: random schemas of the subset both ways, and each keyword's
cases and refusals."""

from __future__ import annotations

import itertools
import json
import random
import string
from typing import Any

import jsonschema
import pytest
from _constraints import (
    ALPHABET,
    FORMATS,
    PERSON,
    PYDANTIC_LIKE,
    SCHEMAS,
    accepts,
    documents,
    model_walks,
    strict,
    validate,
    walk,
    writable,
)
from aieng_transformers import SchemaError
from aieng_transformers._jsonschema import JsonMachine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def test_schema_error_names_the_place() -> None:
    """The error names the JSON pointer of the offending keyword."""
    with pytest.raises(SchemaError, match="#/properties/a/items"):
        JsonMachine({"properties": {"a": {"type": "array", "items": {"minimum": 1}}}})


def test_a_schema_error_names_the_first_bad_bound_as_written() -> None:
    """Of two bad bounds the error names the first the schema writes, in every process
    (the bounds were read in a set's order, which follows the hash seed)."""
    for first, second in (("maximum", "minimum"), ("minimum", "maximum"),
                          ("exclusiveMinimum", "maximum")):
        with pytest.raises(SchemaError, match=f"#/{first}: must be a number"):
            JsonMachine({"type": "number", first: "x", second: "y"})


def test_extension_words_are_ignored() -> None:
    """Words of other vocabularies — ``x-`` extensions, OpenAPI's ``example``,
    ``externalDocs``, ``xml`` and ``nullable`` — say nothing about validity and are
    ignored wherever they are (``nullable``: no ``null`` is written, which JSON Schema and
    OpenAPI both accept); property names that look like them are names, and ``enum``
    values are data. Other unknown words are still refused."""
    schema = {"type": "object", "x-order": 1, "externalDocs": {"url": "u"},
              "properties": {"x-name": {"type": "string", "nullable": True, "example": "a",
                                        "x-go-type": "s", "xml": {"name": "n"}},
                             "n": {"$ref": "#/$defs/N"},
                             "e": {"enum": [{"x-k": 1}], "x-enum-names": ["one"]},
                             "l": {"type": "array", "items": {"x-a": 1, "type": "integer"}},
                             "u": {"anyOf": [{"type": "null", "x-b": 2}, {"type": "integer"}]}},
              "required": ["x-name", "e"], "$defs": {"N": {"type": "integer", "x-a": 1}}}
    machine = JsonMachine(schema)
    assert accepts(machine, '{"x-name":"q","n":3,"e":{"x-k":1},"l":[1],"u":null}')
    assert machine.feed(machine.start(), '{"x-name":n') is None  # nullable: not written
    assert not accepts(machine, '{"x-name":"q","e":{}}')
    with pytest.raises(SchemaError, match="unsupported keyword"):
        JsonMachine({"type": "string", "nullabel": True})


def test_machine_accepts_exactly_valid_documents() -> None:
    """Random character walks through the automaton always end in valid JSON within the
    character budget, and invalid texts are refused."""
    machine = JsonMachine(PERSON)
    alphabet = list('{}[]":, -0123456789.E\\+' + string.ascii_lowercase)
    rng = random.Random(0)
    shortest = machine.min_chars(machine.start())
    for _ in range(80):
        out = walk(machine, rng, rng.randint(0, 60 - shortest), alphabet)
        validate(json.loads(out), PERSON)
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


@pytest.mark.parametrize("schema", [
    {"type": "array", "items": {"type": "string"}},
    {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    {"type": "object", "additionalProperties": {"type": "integer"}},  # map keys
    {"type": "object", "properties": {"a": {}}, "additionalProperties": {}},  # open keys
])
@settings(max_examples=60, deadline=None)
@given(code=st.integers(0xD800, 0xDFFF) | st.integers(0, 0xFFFF),
       low=st.integers(0xDC00, 0xDFFF))
def test_surrogate_escapes_come_in_pairs(schema: dict[str, Any], code: int, low: int) -> None:
    """A ``\\u`` escape of a surrogate is written only as a high one followed by a low
    one (strict readers — Pydantic's — refuse a lone surrogate, which RFC 8259 leaves to
    the reader): a lone one is refused where it stops being a pair, a pair is accepted
    anywhere a string is, and the characters still needed inside one count the rest of
    the pair. Keys are checked as map keys and as an open object's."""
    array = schema["type"] == "array"
    opening, closing = ("[", "]") if array else ("{", ":0}")
    machine = JsonMachine(schema)
    escape = f'"\\u{code:04x}'
    state = machine.feed(machine.start(), opening + escape)
    if 0xD800 <= code <= 0xDBFF:  # high: only a low one may follow
        assert state is not None
        assert machine.min_chars(state) == len('\\udc00"' + closing)
        assert not accepts(machine, f'{opening}{escape}"{closing}')
        assert not accepts(machine, f'{opening}{escape}\\u0041"{closing}')
        assert accepts(machine, f'{opening}{escape}\\u{low:04X}"{closing}')
    elif 0xDC00 <= code <= 0xDFFF:  # a lone low one: refused at its second digit
        assert state is None
        assert machine.feed(machine.start(), opening + escape[:5]) is None
    else:
        assert state is not None and accepts(machine, f'{opening}{escape}"{closing}')


@pytest.mark.parametrize(("values", "written"), [
    (["\ud800", "a"], ['"a"']),
    (["\udc00", 1], ["1"]),  # mixed values: literals
    ([{"k\ud800": 1}, None], ["null"]),  # in an object's key
    ([["x", "\udfff"], True], ["true"]),  # in an array
])
def test_enum_values_with_a_lone_surrogate_are_not_written(values: list[Any],
                                                           written: list[str]) -> None:
    """An ``enum`` / ``const`` value holding a lone surrogate could only be spelled with
    the lone ``\\u`` escape the automaton never writes (strict readers refuse it): the
    value is left out, for strings and other values alike, and the others are written
    (regression: a string's was counted as finishable, then refused character by
    character, so generation failed half-way with "no token ... continues")."""
    machine = JsonMachine({"enum": values})
    for value in values:
        spelled = json.dumps(value, separators=(",", ":"))
        assert accepts(machine, spelled) == (spelled in written), spelled
    assert machine.min_chars(machine.start()) == min(len(w) for w in written)


@pytest.mark.parametrize("schema", [{"const": "\ud800"}, {"enum": ["\udc00", ["\ud800"]]}])
def test_an_enum_of_lone_surrogates_only_is_refused(schema: dict[str, Any]) -> None:
    """With every value left out there is nothing to write: refused before generating,
    naming the place and the reason."""
    with pytest.raises(SchemaError, match="#: .*lone surrogate"):
        JsonMachine(schema)


@settings(max_examples=150, deadline=None)
@given(schema=SCHEMAS, seed=st.integers(0, 2**32 - 1), slack=st.integers(0, 12))
def test_walks_end_in_valid_documents(schema: dict[str, Any], seed: int, slack: int) -> None:
    """Random walks through the automaton of any schema of the subset (bounds, lengths,
    counts, ``enum``/``const`` of every type, ``anyOf``/type lists, ``$ref``) end in
    documents jsonschema validates, within the characters ``min_chars`` promised."""
    machine = JsonMachine(schema)
    rng = random.Random(seed)
    for _ in range(3):
        validate(json.loads(walk(machine, rng, slack)), schema)


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
    checker = jsonschema.Draft202012Validator(strict(schema), format_checker=FORMATS)
    if writable(value) and checker.is_valid(value):
        state = machine.feed(machine.start(), text)
        assert state is not None and machine.accepting(state), text
    position = data.draw(st.integers(0, max(len(text) - 1, 0)))
    mutated = text[:position] + data.draw(st.sampled_from(ALPHABET)) + text[position + 1:]
    after = machine.feed(machine.start(), mutated)
    if after is not None and machine.accepting(after):
        validate(json.loads(mutated), schema)


@settings(max_examples=100, deadline=None)
@given(schema=SCHEMAS, seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(1, 6),
                                                                   min_size=1, max_size=30))
def test_feeding_a_text_whole_is_feeding_it_char_by_char(schema: dict[str, Any], seed: int,
                                                         cuts: list[int]) -> None:
    """A token's text fed at once (the fast path of a run of plain characters inside a
    ``pattern`` string included) reaches the state its characters reach one by one: on a
    random document cut into pieces, and on pieces with one character changed."""
    machine = JsonMachine(schema)
    rng = random.Random(seed)
    text = walk(machine, rng, 8)
    pieces, at = [], 0
    for size in itertools.cycle(cuts):
        if at >= len(text):
            break
        pieces.append(text[at:at + size])
        at += size
    whole: Any = machine.start()
    for piece in pieces:
        changed = piece[:-1] + rng.choice(ALPHABET)
        single: Any = whole
        for char in changed:
            single = None if single is None else machine.feed(single, char)
        assert machine.feed(whole, changed) == single, changed
        whole = machine.feed(whole, piece)
        assert whole is not None
    assert machine.accepting(whole)


def test_a_pydantic_style_schema() -> None:
    """The shapes ``model_json_schema()`` writes for plain fields (``$defs``/``$ref``,
    ``Optional`` as ``anyOf`` with null, ``Literal`` as ``const``/``enum``, ``Field``
    bounds, ``format``) compile; its shortest document is what it says, and the
    automaton follows the bounds character by character."""
    machine = JsonMachine(PYDANTIC_LIKE)
    rng = random.Random(1)
    for _ in range(20):
        validate(json.loads(walk(machine, rng, 30)), PYDANTIC_LIKE)
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
                   '"status":"ok","code":"x","note":null,"when":"2024-02-29T23:59:59.5+05:30"}')
    # the format is enforced: a free string is no date-time, nor is a day February lacks
    assert machine.feed(machine.start(), '{"when":"today') is None
    assert machine.feed(machine.start(), '{"when":"2023-02-29') is None


@pytest.mark.parametrize(("schema", "message"), [
    ({"oneOf": [{"type": "string", "maxLength": 2}, {"type": "string", "pattern": "a"}]},
     "same character"),
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "same character"),
    ({"oneOf": [{"enum": ["a", "b"]}, {"const": "a"}]}, "two alternatives"),
    ({"enum": [1, "a"], "type": "integer"}, "not of type"),
    ({"$ref": "#/components/x"}, "only"),
    ({"$ref": "#/$defs/missing", "$defs": {}}, "points at nothing"),
    ({"type": "number", "minimum": True}, "must be a number"),
    ({"type": "integer", "minimum": 0.5, "maximum": 0.7}, "bounds"),
    ({"type": "string", "minLength": -1}, "non-negative"),
    ({"const": "abc", "maxLength": 2}, "length"),
    ({"type": ["string", "nothing"]}, "list of types"),
    ({"type": ["string", "nothing"], "enum": ["a"]}, "must name"),
    ({"type": "number", "multipleOf": 0.1}, "positive integer"),
    ({"type": "integer", "multipleOf": -2}, "positive integer"),
    ({"type": "integer", "multipleOf": 10, "minimum": 1, "maximum": 9}, "multiple"),
    # NaN and the infinities are no JSON: never written, never a bound
    ({"enum": ["a", float("nan")]}, "no JSON value"),
    ({"const": float("inf")}, "no JSON value"),
    ({"properties": {"a": {"const": [1, float("-inf")]}}}, "#/properties/a: .* no JSON"),
    ({"enum": [{1, 2}]}, "no JSON value"),
    ({"type": "number", "minimum": float("nan")}, "minimum: must be a number"),
    ({"type": "integer", "exclusiveMaximum": float("inf")}, "exclusiveMaximum: must be a"),
    ({"type": "number", "multipleOf": float("nan")}, "positive integer"),
    # a keyword outside the subset is named, also in a schema without ``type``
    ({"not": {"type": "string"}}, r"unsupported keyword\(s\) \['not'\]"),
    ({"if": {"type": "string"}, "then": {"maxLength": 2}}, r"\['if', 'then'\]"),
    ({"properties": {"a": {"nott": {}}}}, r"#/properties/a: unsupported keyword\(s\) \['nott"),
])
def test_schemas_outside_the_subset_are_refused(schema: dict[str, Any], message: str) -> None:
    """Alternatives the first character cannot tell apart, values of the wrong type, refs
    elsewhere than ``$defs``, empty ranges and bad bounds fail naming the problem."""
    with pytest.raises(SchemaError, match=message):
        JsonMachine(schema)


def test_multiples() -> None:
    """An integer ``multipleOf`` (Pydantic's ``Field(multiple_of=...)``) is enforced as
    the number is written: a prefix that can no longer end on a multiple in range is
    refused at once, and the characters still needed count the nearest one."""
    from pydantic import BaseModel, Field

    class Order(BaseModel):
        boxes: int = Field(multiple_of=6, ge=1, le=100)
        grams: float = Field(multiple_of=250, gt=0)
        delta: int = Field(multiple_of=5)

    machine, _, orders = model_walks(Order, seed=9, slack=12)
    assert all(o.boxes % 6 == 0 and o.grams % 250 == 0 for o in orders)
    shortest = '{"boxes":6,"grams":250,"delta":0}'
    assert machine.min_chars(machine.start()) == len(shortest) and accepts(machine, shortest)
    assert machine.feed(machine.start(), '{"boxes":10') is None  # 10, 100…109: none ≤ 100
    assert machine.feed(machine.start(), '{"boxes":9') is not None  # 96
    state = machine.feed(machine.start(), '{"boxes":1')  # 12 or 18: one more digit
    assert state is not None
    assert machine.min_chars(state) == len('2,"grams":250,"delta":0}')
    for bad in ('{"boxes":6,"grams":250,"delta":3}', '{"boxes":6,"grams":250.5,"delta":0}',
                '{"boxes":0,"grams":250,"delta":0}'):
        assert not accepts(machine, bad), bad


def test_multiples_of_a_fraction_of_a_power_of_two() -> None:
    """A ``multipleOf`` such as 0.5, 0.25 or 2.5 (half stars, quarter hours) is enforced
    exactly: its multiples are doubles exactly, so float readers — jsonschema's division,
    Pydantic's remainder — accept every one the automaton writes (Pydantic validates each
    walk); within ±2**53 without other bounds, where that holds. An integer's multiples
    of 1.5 are those of 3. A decimal ``multipleOf`` (0.1, 0.01) is still refused."""
    from pydantic import BaseModel, Field

    class Review(BaseModel):
        stars: float = Field(multiple_of=0.5, ge=0, le=5)
        hours: float = Field(multiple_of=0.25)
        step: float = Field(multiple_of=2.5, gt=-10)

    machine, _, reviews = model_walks(Review, seed=2, slack=16, count=80)
    assert all((r.stars * 2).is_integer() and (r.hours * 4).is_integer() for r in reviews)
    assert any(not r.hours.is_integer() for r in reviews)  # fractions are written too
    assert accepts(machine, '{"stars":4.5,"hours":-0.75,"step":-7.5}')
    for bad in ('{"stars":4.25', '{"stars":5.5', '{"hours":0.3', '{"step":-10,',
                '{"hours":99999999999999999'):  # beyond 2**53 (16 digits)
        assert machine.feed(machine.start(), bad) is None, bad
    state = machine.feed(machine.start(), '{"stars":2.')  # 2.5 only: one more digit
    assert state is not None
    assert machine.min_chars(state) == len('5,"hours":0,"step":0}')
    thirds = JsonMachine({"type": "integer", "multipleOf": 1.5})
    assert accepts(thirds, "3") and accepts(thirds, "-9") and not accepts(thirds, "4")
    for decimal in (0.1, 0.01, 0.3):
        with pytest.raises(SchemaError, match="power of two"):
            JsonMachine({"type": "number", "multipleOf": decimal})


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


def test_required_names_without_a_property() -> None:
    """A required name that ``properties`` does not list (hand-written tool schemas) is
    a key with any value — or with ``additionalProperties``' schema — as JSON Schema reads
    it; with ``additionalProperties: false`` no document is valid, which is refused."""
    loose = JsonMachine({"type": "object", "properties": {"a": {"type": "integer"}},
                         "required": ["q"]})
    assert accepts(loose, '{"q":[1,{}]}') and accepts(loose, '{"a":1,"q":null}')
    assert not accepts(loose, '{"a":1}')
    assert loose.min_chars(loose.start()) == len('{"q":0}')
    typed = JsonMachine({"type": "object", "properties": {}, "required": ["q"],
                         "additionalProperties": {"type": "string"}})
    assert accepts(typed, '{"q":"x"}') and not accepts(typed, '{"q":1}')
    with pytest.raises(SchemaError, match="no document is valid"):
        JsonMachine({"type": "object", "properties": {}, "required": ["q"],
                     "additionalProperties": False})


def test_boolean_exclusive_bounds_of_draft_4() -> None:
    """Draft 4 and OpenAPI 3.0 spell an exclusive bound as a flag beside ``minimum`` /
    ``maximum`` (``exclusiveMinimum: true``): the bound is then open, as the draft-4
    validator reads it; ``false`` leaves it closed; a flag without its bound is
    nothing."""
    schema = {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1,
              "exclusiveMaximum": False}
    machine = JsonMachine(schema)
    assert not accepts(machine, "0") and accepts(machine, "1") and accepts(machine, "0.5")
    assert machine.min_chars(machine.start()) == len("1")
    rng = random.Random(4)
    for _ in range(60):
        jsonschema.Draft4Validator(schema).validate(json.loads(walk(machine, rng, 6)))
    free = JsonMachine({"type": "integer", "exclusiveMaximum": True})
    assert accepts(free, "-12345")


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
    # drafts 4 to 2019-09 (Pydantic v1): ``items`` a list is the tuple, ``additionalItems``
    # the rest (absent: any value, as in draft 7)
    old = {"type": "array", "items": [{"type": "integer"}, {"type": "string"}],
           "additionalItems": False}
    tuple_7 = JsonMachine(old)
    assert accepts(tuple_7, '[1,"a"]') and accepts(tuple_7, "[1]")
    assert tuple_7.feed(tuple_7.start(), '[1,"a",') is None
    rng = random.Random(5)
    for _ in range(40):
        jsonschema.Draft7Validator(old).validate(json.loads(walk(tuple_7, rng, 8)))
    rest = JsonMachine({"type": "array", "items": [{"type": "null"}]})  # then any values
    assert accepts(rest, '[null,{"a":[1]},"x"]')
    with pytest.raises(SchemaError, match="beside 'prefixItems'"):
        JsonMachine({"type": "array", "items": [{}], "prefixItems": [{}]})


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
