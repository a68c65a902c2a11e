"""Constrained decoding: JSON against a schema and regex, enforced while decoding."""

from __future__ import annotations

import json
import random
import string
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


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as jsonschema reads our semantics (no additional properties)."""
    if schema.get("type") == "object":
        props = {k: strict(v) for k, v in schema.get("properties", {}).items()}
        return {**schema, "properties": props, "additionalProperties": False}
    if schema.get("type") == "array":
        return {**schema, "items": strict(schema["items"])}
    return schema


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.sampled_from([{"type": t} for t in ("string", "number", "integer", "boolean",
                                                "null")]),
        st.lists(st.text("ab\"\\", min_size=1, max_size=3), min_size=1, max_size=3,
                 unique=True).map(lambda e: {"type": "string", "enum": e}))


def _extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    objects = st.dictionaries(st.sampled_from(["a", "b", "k\"", "long"]), children,
                              max_size=3).flatmap(lambda props: st.builds(
                                  lambda req: {"type": "object", "properties": props,
                                               "required": sorted(req)},
                                  st.sets(st.sampled_from(sorted(props) or ["_"]))
                                  .map(lambda r: r & set(props))))
    arrays = children.map(lambda items: {"type": "array", "items": items})
    return st.one_of(objects, arrays)


SCHEMAS = st.recursive(_leaf(), _extend, max_leaves=5)


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


@pytest.mark.parametrize(("request_params", "message"), [
    ({"response_schema": {"type": "string", "pattern": "a+"}}, "pattern"),
    ({"response_schema": {"type": ["string", "null"]}}, "one type"),
    ({"response_schema": {"type": "object", "additionalProperties": True}},
     "additionalProperties"),
    ({"response_schema": {"type": "object", "properties": {"a": {"type": "string"}},
                          "required": ["b"]}}, "required"),
    ({"response_schema": {"type": "array"}}, "items"),
    ({"response_schema": {"anyOf": [{"type": "string"}]}}, "type"),
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
    for _ in range(80):
        state, out = machine.start(), ""
        budget = rng.randint(machine.min_chars(state), 60)
        while not machine.complete(state):
            left = budget - len(out) - 1
            options = [(c, after) for c in alphabet
                       if (after := machine.feed(state, c)) is not None
                       and machine.min_chars(after) <= left]
            if machine.accepting(state) and (not options or rng.random() < 0.3):
                break
            assert options, out
            char, state = rng.choice(options)
            out += char
        jsonschema.validate(json.loads(out), strict(PERSON))
    for bad in ('{"name":"a"}', '{"nam', '{"name":1', '{"where":{"x":01', '{ "name"',
                '{"name":"a","name"', '{"name":"\n'):
        state = machine.feed(machine.start(), bad)
        assert state is None or not machine.accepting(state), bad


def test_pending_escape_rules_out_plain_enum_values() -> None:
    """After a backslash inside an enum string, only escaped values can finish it: the
    characters still needed count from those (regression: 'a' was counted, so the token
    budget let a document run out of tokens mid-array)."""
    machine = JsonMachine({"type": "array", "items": {"type": "string",
                                                     "enum": ["\\", '"', "a"]}})
    state = machine.feed(machine.start(), '["\\')
    assert state is not None
    assert machine.min_chars(state) == len('\\"]')  # the escaped char, the quote, the bracket
