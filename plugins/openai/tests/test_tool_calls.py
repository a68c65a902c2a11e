"""Tool calling on the wire: fragments put together exactly, OpenAI's tool fields sent as
they were given, and what an upstream's malformed arguments become."""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

import pytest
from _openai_double import CHAT_MODEL, OpenAIServerDouble, Scripted
from aieng_hookspecs.types import Message, Request, ToolCall, ToolSpec
from aieng_openai import OpenAIBackend, OpenAIError
from aieng_openai._payload import StreamedCalls
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio

_SCALARS = st.none() | st.booleans() | st.integers(-(2**53), 2**53) \
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
_ARGUMENTS = st.dictionaries(st.text(max_size=8), _VALUES, max_size=4)
_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


def _pieces(text: str, cuts: list[int]) -> list[str]:
    """``text`` cut at ``cuts`` (positions, any order, repeats give empty pieces)."""
    points = [0, *sorted(c % (len(text) + 1) for c in cuts), len(text)]
    return [text[a:b] for a, b in pairwise(points)]


@settings(max_examples=150, deadline=None)
@given(calls=st.lists(st.tuples(_NAMES, _ARGUMENTS, st.lists(st.integers(0, 10**6),
                                                             max_size=12),
                                st.booleans()), min_size=1, max_size=3),
       order=st.randoms(use_true_random=False), ascii_only=st.booleans())
def test_any_split_of_the_arguments_gives_the_same_calls(
        calls: list[tuple[str, dict[str, Any], list[int], bool]], order: Any,
        ascii_only: bool) -> None:
    """However the arguments' JSON text is cut into fragments, and however the calls'
    fragments interleave (each call's own in order, id and name in its first, the name
    sent again on every fragment by some servers), the calls come out as they were made."""
    streams: list[list[dict[str, Any]]] = []
    for index, (name, arguments, cuts, name_every_time) in enumerate(calls):
        text = json.dumps(arguments, ensure_ascii=ascii_only)
        fragments: list[dict[str, Any]] = []
        for position, piece in enumerate(_pieces(text, cuts)):
            function: dict[str, Any] = {"arguments": piece}
            if position == 0:
                fragments.append({"index": index, "id": f"call_{index}", "type": "function",
                                  "function": {"name": name, **function}})
                continue
            if name_every_time:
                function["name"] = name
            fragments.append({"index": index, "function": function})
        streams.append(fragments)
    assembler = StreamedCalls()
    while any(streams):  # one fragment at a time, from a call picked at random
        pick = order.choice([s for s in streams if s])
        assembler.add([pick.pop(0)])
    assert assembler.calls() == tuple(
        ToolCall(id=f"call_{index}", name=name, arguments=arguments)
        for index, (name, arguments, _, _) in enumerate(calls))


def _ask(**params: Any) -> Request:
    return Request(messages=(Message("user", "weather in Oslo?"),), **params)


_WEATHER = ToolSpec(name="get_weather", parameters={
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


@pytest.mark.parametrize("choice", [
    "none", "auto", "required", {"type": "function", "function": {"name": "get_weather"}}])
@pytest.mark.parametrize("parallel", [True, False])
async def test_tool_choice_and_parallel_calls_are_sent_as_given(
        double: OpenAIServerDouble, make_backend: Any, choice: Any, parallel: bool) -> None:
    """``tool_choice`` (each of OpenAI's forms) and ``parallel_tool_calls`` (false too)
    reach the server as OpenAI's fields, beside the tools; without them, neither is sent."""
    backend: OpenAIBackend = make_backend()
    try:
        await backend.aieng_generate(_ask(tools=(_WEATHER,), metadata={
            "tool_choice": choice, "parallel_tool_calls": parallel}))
        await backend.aieng_generate(_ask(tools=(_WEATHER,)))
    finally:
        await backend.aclose()
    given_, bare = (call.body for call in double.calls_to("chat/completions"))
    assert given_["tool_choice"] == choice and given_["parallel_tool_calls"] is parallel
    assert given_["tools"][0]["function"]["name"] == "get_weather"
    assert "tool_choice" not in bare and "parallel_tool_calls" not in bare


def _answer(arguments: Any) -> Scripted:
    return Scripted(body=json.dumps({
        "object": "chat.completion", "model": CHAT_MODEL,
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": arguments}}]}}]}))


def _streamed(arguments: str) -> Scripted:
    def event(delta: dict[str, Any], finish: str | None = None) -> str:
        return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": delta, "finish_reason": finish}]})

    half = len(arguments) // 2
    return Scripted(sse=(
        event({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": arguments[:half]}}]}), "",
        event({"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]}),
        "", event({}, "tool_calls"), "", "data: [DONE]", ""))


_DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(("arguments", "found"), [
    ('{"city": "Oslo"', "not JSON"),
    ("city=Oslo", "not JSON"),
    ('["Oslo"]', "not a JSON object"),
    ('"Oslo"', "not a JSON object"),
    ("null", "not a JSON object"),
    ("42", "not a JSON object"),
    ('{"city": ' + _DEEP + "}", "nested too deeply"),
])
@pytest.mark.parametrize("how", ["json", "stream", "events to generate"])
async def test_malformed_arguments_are_protocol_errors_naming_the_tool(
        double: OpenAIServerDouble, make_backend: Any, arguments: str, found: str,
        how: str) -> None:
    """Arguments that are not a JSON object (not JSON, another JSON value, JSON nested
    past what can be read) are never handed over as a call: the answer, streamed or not,
    is an ``OpenAIError`` of kind ``protocol`` naming the tool and the fault, not retried
    (the same request would get the same model output's kind again)."""
    if how == "json":
        double.script("chat/completions", _answer(arguments))
    else:  # a stream, or a stream answered to a request without "stream"
        double.script("chat/completions", _streamed(arguments))
    backend: OpenAIBackend = make_backend()
    request = _ask(tools=(_WEATHER,))
    try:
        with pytest.raises(OpenAIError) as caught:
            if how == "stream":
                stream = backend.aieng_stream(request)
                assert stream is not None
                async for _ in stream:
                    pass
            else:
                await backend.aieng_generate(request)
    finally:
        await backend.aclose()
    assert caught.value.kind == "protocol"
    assert "get_weather" in str(caught.value) and found in str(caught.value)
    assert len(double.calls_to("chat/completions")) == 1  # not retried


async def test_arguments_sent_as_an_object_are_taken(double: OpenAIServerDouble,
                                                     make_backend: Any) -> None:
    """A server that sends the arguments decoded (an object, not its JSON text), or an
    empty string for a call without arguments, still gives the call."""
    double.script("chat/completions", _answer({"city": "Oslo"}), _answer(""))
    backend: OpenAIBackend = make_backend()
    try:
        decoded = await backend.aieng_generate(_ask(tools=(_WEATHER,)))
        empty = await backend.aieng_generate(_ask(tools=(_WEATHER,)))
    finally:
        await backend.aclose()
    assert decoded is not None and empty is not None
    assert decoded.tool_calls == (ToolCall("call_1", "get_weather", {"city": "Oslo"}),)
    assert empty.tool_calls == (ToolCall("call_1", "get_weather", {}),)


@pytest.mark.parametrize("fmt", [
    {"type": "json_object"},
    {"type": "json_schema", "json_schema": {"name": "weather", "strict": False, "schema": {
        "type": "object", "properties": {"city": {"type": "string"}}}}},
])
async def test_an_openai_response_format_in_metadata_is_sent_as_given(
        double: OpenAIServerDouble, make_backend: Any, fmt: dict[str, Any]) -> None:
    """``metadata["response_format"]`` (OpenAI's object, as ``aieng serve`` passes its
    client's) is sent as it is, not rebuilt from ``response_schema`` as a strict schema
    named ``response``: a client's JSON mode, or its non-strict schema and its name,
    reach OpenAI unchanged (which refuses JSON mode's open object as a strict schema)."""
    schema = {"type": "object", "additionalProperties": True}
    backend: OpenAIBackend = make_backend()
    try:
        await backend.aieng_generate(_ask(response_schema=schema,
                                          metadata={"response_format": fmt}))
        await backend.aieng_generate(_ask(response_schema=schema))
    finally:
        await backend.aclose()
    given_, built = (call.body for call in double.calls_to("chat/completions"))
    assert given_["response_format"] == fmt
    assert built["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "response", "schema": schema, "strict": True}}
    assert "response_format" not in given_.get("metadata", {})


async def test_a_response_format_in_metadata_must_be_an_object(make_backend: Any) -> None:
    """A ``metadata["response_format"]`` that is not an object with a type is refused
    before anything is sent (a ``ValueError``, as for a bad ``regex``)."""
    backend: OpenAIBackend = make_backend()
    try:
        with pytest.raises(ValueError, match="response_format"):
            await backend.aieng_generate(_ask(metadata={"response_format": "json"}))
    finally:
        await backend.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_nested_too_deeply_is_a_protocol_error(
        double: OpenAIServerDouble, make_backend: Any, stream: bool) -> None:
    """A body or a stream event nested past what Python's JSON reader takes (a broken or
    hostile server) is an ``OpenAIError`` of kind ``protocol``, not a ``RecursionError``
    escaping the backend."""
    deep = '{"choices": ' + _DEEP + "}"
    double.script("chat/completions",
                  Scripted(sse=("data: " + deep, "")) if stream else Scripted(body=deep))
    backend: OpenAIBackend = make_backend()
    try:
        with pytest.raises(OpenAIError, match="nested too deeply") as caught:
            if stream:
                deltas = backend.aieng_stream(_ask())
                assert deltas is not None
                async for _ in deltas:
                    pass
            else:
                await backend.aieng_generate(_ask())
    finally:
        await backend.aclose()
    assert caught.value.kind == "protocol"


@pytest.mark.parametrize(("sent", "read"), [
    ("stop", "stop"), ("length", "length"), ("tool_calls", "tool_calls"),
    ("function_call", "tool_calls"), ("content_filter", "content_filter"),
    ("eos", "stop"), ("abort", "error"), ("something_new", "stop")])
@pytest.mark.parametrize("stream", [False, True])
async def test_finish_reasons_are_read_as_the_contract_names_them(
        double: OpenAIServerDouble, make_backend: Any, sent: str, read: str,
        stream: bool) -> None:
    """OpenAI's finish reasons (and other servers' names for them) are read as the
    contract's, in an answer and at a stream's end; an unknown one is ``stop``."""
    if stream:
        double.script("chat/completions", Scripted(sse=(
            "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "x"},
                                                "finish_reason": sent}]}), "")))
    else:
        double.script("chat/completions", Scripted(body=json.dumps({"choices": [{
            "index": 0, "finish_reason": sent,
            "message": {"role": "assistant", "content": "x"}}]})))
    backend: OpenAIBackend = make_backend()
    try:
        if stream:
            deltas = backend.aieng_stream(_ask())
            assert deltas is not None
            finish = [d.finish_reason async for d in deltas][-1]
        else:
            completion = await backend.aieng_generate(_ask())
            assert completion is not None
            finish = completion.finish_reason
    finally:
        await backend.aclose()
    assert finish == read
