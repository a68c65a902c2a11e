"""Tool-call arguments checked against the tool's JSON schema before the tool runs: the
checker's verdicts (against the ``jsonschema`` package as an oracle), its messages, and the
runner giving the model an error result instead of calling the tool."""

from __future__ import annotations

import json
import math
from typing import Any

import jsonschema
import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Request, ToolCall, Usage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aieng_core import Kernel
from aieng_core.agent import Agent, AgentOptions
from aieng_core.agent._arguments import argument_errors
from aieng_core.testing.reference import AddTool

ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
       "required": ["a", "b"], "additionalProperties": False}


@pytest.mark.parametrize(("arguments", "expected"), [
    ({"a": 1, "b": 2}, []),
    ({"a": 3.0, "b": -2}, []),  # 3.0 is an integer in JSON Schema
    ({"a": "4", "b": 2}, ['$.a: expected integer, got string "4"']),
    ({"a": True, "b": 2}, ["$.a: expected integer, got boolean true"]),
    ({"a": 1}, ["$: missing required property 'b'"]),
    ({"a": 1, "b": 2, "c": 3}, ["$: unknown property 'c' (known: 'a', 'b')"]),
    ({}, ["$: missing required property 'a'", "$: missing required property 'b'"]),
])
def test_add_tool_messages(arguments: dict[str, Any], expected: list[str]) -> None:
    """Each problem names where it is (a JSON path) and what is wrong."""
    assert argument_errors(arguments, ADD) == expected


def test_nested_paths_and_keywords() -> None:
    """Paths go into arrays and odd keys; enum, pattern, bounds and lengths are checked."""
    schema = {"type": "object", "properties": {
        "rows": {"type": "array", "items": {"type": "object", "properties": {
            "unit": {"enum": ["m", "km"]}, "n": {"type": "number", "minimum": 0}}}},
        "odd key": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 3}}}
    errors = argument_errors({"rows": [{"unit": "m", "n": 1}, {"unit": "mi", "n": -1}],
                              "odd key": "ABCD"}, schema)
    assert errors == ['$.rows[1].unit: "mi" is not one of "m", "km"',
                      "$.rows[1].n: must be >= 0, got -1",
                      '$["odd key"]: allows at most 3 characters, got 4',
                      '$["odd key"]: "ABCD" does not match the pattern \'^[a-z]+$\'']


def test_refs_draft4_forms_and_decimal_steps() -> None:
    """Local $ref resolves; draft 4 exclusive bounds and tuple items are read; multipleOf
    compares numbers as written (0.3 is a multiple of 0.1); at most five errors."""
    schema = {"$defs": {"pos": {"type": "integer", "minimum": 0}},
              "type": "object", "properties": {
                  "p": {"$ref": "#/$defs/pos"},
                  "x": {"type": "number", "minimum": 1, "exclusiveMinimum": True},
                  "t": {"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},
                  "m": {"type": "number", "multipleOf": 0.1}}}
    assert argument_errors({"p": 2, "x": 1.5, "t": ["a", 1], "m": 0.3}, schema) == []
    assert argument_errors({"p": -1, "x": 1, "t": [1, "a"], "m": 0.35}, schema) == [
        "$.p: must be >= 0, got -1", "$.x: must be > 1, got 1",
        "$.t[0]: expected string, got integer 1", '$.t[1]: expected integer, got string "a"',
        "$.m: must be a multiple of 0.1, got 0.35"]
    many = {"type": "object", "required": list("abcdefg")}
    assert len(argument_errors({}, many)) == 5


def test_what_the_checker_cannot_read_is_not_the_models_fault() -> None:
    """A pattern Python cannot compile, a remote or dangling $ref and unknown keywords
    count as valid; a non-finite number fails a bounded schema."""
    schema = {"type": "object", "properties": {
        "s": {"type": "string", "pattern": "(unclosed"},
        "r": {"$ref": "https://example.com/schema"}, "d": {"$ref": "#/$defs/missing"},
        "f": {"type": "string", "format": "email"},
        "n": {"type": "number", "maximum": 10}}}
    assert argument_errors({"s": "x", "r": 1, "d": 2, "f": "not an email", "n": 3}, schema) \
        == []
    assert argument_errors({"n": math.inf}, schema) == [
        "$.n: must be a finite number, got Infinity"]


# -- the oracle ----------------------------------------------------------------------------

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5),
                     st.floats(-5, 5, allow_nan=False).map(lambda x: round(x, 1)),
                     st.sampled_from(["", "a", "ab", "abc", "B1"]))
VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3)), max_leaves=8)

_TYPES = ["null", "boolean", "integer", "number", "string", "array", "object"]


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(lambda t: {"type": t}, st.sampled_from(_TYPES)),
        st.builds(lambda ts: {"type": ts}, st.lists(st.sampled_from(_TYPES), min_size=1,
                                                    max_size=3, unique=True)),
        st.builds(lambda e: {"enum": e}, st.lists(_SCALARS, min_size=1, max_size=3)),
        st.builds(lambda c: {"const": c}, _SCALARS),
        st.builds(lambda lo, hi: {"type": "number", "minimum": lo, "exclusiveMaximum": hi},
                  st.integers(-3, 3), st.integers(-3, 3)),
        st.builds(lambda n: {"type": "integer", "multipleOf": n}, st.integers(1, 3)),
        st.builds(lambda lo, hi: {"type": "string", "minLength": lo, "maxLength": hi},
                  st.integers(0, 2), st.integers(0, 3)),
        st.builds(lambda p: {"type": "string", "pattern": p},
                  st.sampled_from(["^a", "b$", "[0-9]", "^[a-z]*$"])),
        st.just({}),
    )


SCHEMAS = st.recursive(_leaf(), lambda inner: st.one_of(
    st.builds(lambda props, req, extra: {"type": "object", "properties": props,
                                         "required": req, "additionalProperties": extra},
              st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
              st.lists(st.sampled_from(["a", "b"]), unique=True, max_size=2),
              st.one_of(st.booleans(), inner)),
    st.builds(lambda items, lo, hi, uniq: {"type": "array", "items": items, "minItems": lo,
                                           "maxItems": hi, "uniqueItems": uniq},
              inner, st.integers(0, 2), st.integers(0, 3), st.booleans()),
    st.builds(lambda subs: {"anyOf": subs}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda subs: {"oneOf": subs}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda subs: {"allOf": subs}, st.lists(inner, min_size=1, max_size=2)),
    st.builds(lambda sub: {"not": sub}, inner),
), max_leaves=6)


def _same_verdict(schema: dict[str, Any], value: Any) -> None:
    wrapped = {"type": "object", "properties": {"v": schema}}
    ours = argument_errors({"v": value}, wrapped) == []
    theirs = jsonschema.Draft202012Validator(wrapped).is_valid({"v": value})
    assert ours == theirs, (json.dumps(schema), value, argument_errors({"v": value}, wrapped))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=SCHEMAS, value=VALUES)
def test_verdicts_match_jsonschema(schema: dict[str, Any], value: Any) -> None:
    """On the subset it reads (draft 2020-12 forms), the checker accepts exactly what the
    jsonschema package accepts. Arguments are always an object: the value is wrapped."""
    _same_verdict(schema, value)


@settings(max_examples=300, deadline=None)
@given(schema=_leaf(), value=_SCALARS)
def test_leaf_verdicts_match_jsonschema(schema: dict[str, Any], value: Any) -> None:
    """The same on one keyword and one scalar, where type edge cases (``true`` is no
    integer, ``2.0`` is one) are drawn often."""
    _same_verdict(schema, value)


# -- in the runner -------------------------------------------------------------------------




class Sloppy:
    """A backend double that first passes a string for ``a``, then (after an error result)
    integers, then answers with the last tool result."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        self.requests.append(request)
        tools = [m for m in request.messages if m.role == "tool"]
        if len(tools) == 2:
            return Completion(text=f"It is {tools[-1].content}.", usage=Usage(1, 1))
        a: Any = "40" if not tools else 40
        call = ToolCall(id=f"c{len(tools)}", name="add", arguments={"a": a, "b": 2})
        return Completion(text="", finish_reason="tool_calls", tool_calls=(call,),
                          usage=Usage(1, 1))


@pytest.mark.anyio
async def test_invalid_arguments_are_an_error_result_and_the_tool_is_not_called() -> None:
    """The model gets an error result naming the problem and the schema; the tool only
    runs with valid arguments; the run goes on to an answer."""
    adder, llm = AddTool(), Sloppy()
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose({"llm": llm, "tools": adder}, name="args", timeout=5.0)
        result = await Agent(pipeline).run("What is 40 + 2?")
    assert result.status == "answered" and result.answer == "It is 42."
    first = result.steps[0].results[0]
    assert first.is_error and first.call_id == "c0"
    assert first.content.startswith("error: invalid arguments for tool 'add': $.a: expected "
                                    'integer, got string "40". The tool was not run;')
    assert '"required":["a","b"]' in first.content
    assert [c.arguments for c in adder.calls] == [{"a": 40, "b": 2}]


@pytest.mark.anyio
async def test_validation_can_be_turned_off() -> None:
    """``validate_arguments=False`` hands every call to the tool as it came."""
    adder, llm = AddTool(), Sloppy()
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose({"llm": llm, "tools": adder}, name="args", timeout=5.0)
        result = await Agent(pipeline, AgentOptions(validate_arguments=False)).run("40 + 2?")
    assert adder.calls[0].arguments == {"a": "40", "b": 2}
    assert result.steps[0].results[0].content.startswith("add needs two integers")
