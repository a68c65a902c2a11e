"""Tool calling through the gateway on OpenAI's wire format: streamed calls in delta
format, read back by aieng's ``openai`` backend and by the ``openai`` SDK (when
installed); an agent whose model sits behind ``openai`` → ``aieng serve``; OpenAI's
tool and format fields passed both ways."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from _support import LoopbackServer
from aieng_gateway import Gateway, GatewaySettings
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    Completion,
    Delta,
    Message,
    Request,
    ToolCall,
    Usage,
)
from aieng_openai import OpenAIBackend, OpenAIOptions

from aieng_core.agent import Agent, AgentOptions
from aieng_core.testing import isolated_kernel
from aieng_core.testing.reference import AddTool

pytestmark = pytest.mark.anyio

#: The calls :class:`ToolModel` makes: ids as OpenAI's, arguments with text past ASCII.
CALLS = (ToolCall(id="call_Ab3xYz", name="add", arguments={"a": 40, "b": 2}),
         ToolCall(id="call_Qr7", name="add", arguments={"a": 1, "b": 1, "note": "Zürich ✓"}))


class ToolModel:
    """A tool-calling backend (a test double): asked with tools and no tool result after
    the last user turn, it calls :data:`CALLS` (``parallel_tool_calls`` false: the first
    only), with ``Adding.`` beside them; after a tool result it answers with the results
    and the ids they answer. It records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def _answer(self, request: Request) -> Completion:
        self.requests.append(request)
        last = request.messages[-1]
        if request.tools and last.role != "tool":
            calls = CALLS[:1] if request.metadata.get("parallel_tool_calls") is False \
                else CALLS
            return Completion(text="Adding.", finish_reason="tool_calls", tool_calls=calls,
                              usage=Usage(prompt_tokens=7, completion_tokens=9))
        results = [f"{m.content} ({m.tool_call_id})" for m in request.messages
                   if m.role == "tool"]
        return Completion(text="The answer is " + ", ".join(results) + ".",
                          usage=Usage(prompt_tokens=11, completion_tokens=5))

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion:
        return self._answer(request)

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
        return self._stream(request)

    async def _stream(self, request: Request) -> AsyncIterator[Delta]:
        answer = self._answer(request)
        yield Delta(answer.text, index=0)
        yield Delta("", index=1, finish_reason=answer.finish_reason, usage=answer.usage,
                    tool_calls=answer.tool_calls)




_TOOLS = [{"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                    "b": {"type": "integer"}}}}}]


def _gateway(model: Any, name: str = "upstream") -> Gateway:
    return Gateway(lambda kernel: kernel.compose({"llm": model}, name=name),
                   settings=GatewaySettings(auth=False),
                   kernel=lambda: isolated_kernel(loop_block_threshold=None))


@pytest.fixture
def upstream() -> Iterator[tuple[ToolModel, LoopbackServer]]:
    """A gateway without auth over a fresh :class:`ToolModel`, on loopback."""
    model = ToolModel()
    with LoopbackServer(_gateway(model).app) as server:
        yield model, server


def _client(server: LoopbackServer, **options: Any) -> OpenAIBackend:
    return OpenAIBackend(OpenAIOptions(base_url=f"{server.url}/v1", model="upstream",
                                       max_retries=0, read_timeout=20.0, **options))


def _events(text: str) -> list[Any]:
    return [json.loads(line[6:]) if line[6:] != "[DONE]" else "[DONE]"
            for line in text.splitlines() if line.startswith("data: ")]


async def test_a_stream_sends_calls_in_openai_delta_format(
        upstream: tuple[ToolModel, LoopbackServer]) -> None:
    """A streamed answer with calls has, before its finish chunk (``tool_calls``), the
    calls as ``delta.tool_calls`` entries with ``index``, ``id``, ``type`` and the function
    (arguments as a JSON string), then the usage chunk asked for, then ``[DONE]``."""
    async with upstream[1].async_client() as client:
        response = await client.post("/v1/chat/completions", json={
            "model": "upstream", "stream": True, "stream_options": {"include_usage": True},
            "tools": _TOOLS, "messages": [{"role": "user", "content": "40 + 2?"}]})
    assert response.status_code == 200
    events = _events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Adding."
    fragments = [f for d in deltas for f in d.get("tool_calls") or ()]
    assert [(f["index"], f["id"], f["type"], f["function"]["name"],
             json.loads(f["function"]["arguments"])) for f in fragments] == [
        (i, c.id, "function", c.name, c.arguments) for i, c in enumerate(CALLS)]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls" and set(finishes[:-1]) == {None}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}


@pytest.mark.parametrize("stream", [False, True])
async def test_the_openai_backend_reads_the_calls_back(
        upstream: tuple[ToolModel, LoopbackServer], stream: bool) -> None:
    """aieng's ``openai`` backend reads the gateway's calls, streamed or not, as the model
    made them (ids, names, arguments past ASCII), with ``finish_reason`` ``tool_calls``."""
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        pipe = kernel.compose({"remote": _client(upstream[1])}, name="client")
        request = Request(messages=(Message("user", "40 + 2?"),),
                          tools=(AddTool().aieng_tools()[0],))
        result = await pipe.run(request, on_delta=(lambda d: None) if stream else None)
        await pipe.aclose()
    assert result.completion is not None
    assert result.completion.finish_reason == "tool_calls"
    assert result.completion.text == "Adding."
    assert result.completion.tool_calls == CALLS


async def test_the_openai_sdk_reads_the_calls_back(
        upstream: tuple[ToolModel, LoopbackServer]) -> None:
    """The ``openai`` SDK (a client only) puts the streamed calls together with its own
    stream helper, reads them from a JSON answer, and its tool messages answer them."""
    import openai  # a test dependency (the root's dev extra): a missing one fails here

    client = openai.AsyncOpenAI(base_url=f"{upstream[1].url}/v1", api_key="unused",
                                max_retries=0, http_client=upstream[1].async_client())
    ask: list[Any] = [{"role": "user", "content": "40 + 2?"}]
    # The helper parses arguments of strict tools only (the gateway takes the flag).
    strict = [{"type": "function", "function": {**_TOOLS[0]["function"], "strict": True}}]
    try:
        async with client.chat.completions.stream(model="upstream", messages=ask,
                                                  tools=strict) as events:
            streamed = await events.get_final_completion()
        created = await client.chat.completions.create(
            model="upstream", messages=ask, tools=_TOOLS,
            tool_choice={"type": "function", "function": {"name": "add"}},
            parallel_tool_calls=False)
        message = created.choices[0].message
        answered = await client.chat.completions.create(model="upstream", tools=_TOOLS,
                                                        messages=[
            *ask, message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "42"}])
    finally:
        await client.close()
    choice = streamed.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Adding."
    assert [(c.id, c.function.name, json.loads(c.function.arguments),
             c.function.parsed_arguments) for c in choice.message.tool_calls] == [
        (c.id, c.name, c.arguments, c.arguments) for c in CALLS]
    assert created.choices[0].finish_reason == "tool_calls"
    assert [(c.id, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        (CALLS[0].id, CALLS[0].arguments)]
    assert answered.choices[0].message.content == f"The answer is 42 ({CALLS[0].id})."


async def test_an_agent_behind_openai_and_the_gateway_calls_its_tool(
        upstream: tuple[ToolModel, LoopbackServer]) -> None:
    """Agent → ``openai`` backend → ``aieng serve`` → a tool-calling model → the agent's
    tool → the answer: the call's id, the assistant message with its calls and the tool
    message answering it reach the model unchanged across both hops."""
    model, server = upstream
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        pipe = kernel.compose({"llm": _client(server), "tools": AddTool()}, name="agent")
        agent = Agent(pipe, AgentOptions(max_steps=4))
        result = await agent.run(Request(messages=(Message("user", "What is 40 + 2?"),),
                                         metadata={"parallel_tool_calls": False}))
        await pipe.aclose()
    assert result.status == "answered", result.reason
    assert result.answer == f"The answer is 42 ({CALLS[0].id})."
    first, second = model.requests
    assert [t.name for t in first.tools] == ["add"]
    assistant, tool = second.messages[-2:]
    assert assistant.role == "assistant" and assistant.tool_calls == CALLS[:1]
    assert tool.role == "tool" and tool.tool_call_id == CALLS[0].id and tool.content == "42"


@pytest.mark.parametrize("fmt", [
    {"type": "json_object"},
    {"type": "json_schema", "json_schema": {"name": "sum", "strict": False, "schema": {
        "type": "object", "properties": {"total": {"type": "integer"}}}}},
])
async def test_response_format_and_tool_fields_pass_through_a_gateway_chain(
        upstream: tuple[ToolModel, LoopbackServer], fmt: dict[str, Any]) -> None:
    """A gateway whose backend is ``openai`` over another gateway: the client's
    ``response_format`` (JSON mode; a schema with its name and ``strict``),
    ``tool_choice`` and ``parallel_tool_calls`` reach the model behind the second as the
    client sent them, not rebuilt as a strict schema named ``response``."""
    model, server = upstream
    front = _gateway(_client(server), name="front")
    choice = {"type": "function", "function": {"name": "add"}}
    async with front.running():
        transport = httpx.ASGITransport(app=front.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            response = await client.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "40 + 2?"}], "tools": _TOOLS,
                "response_format": fmt, "tool_choice": choice,
                "parallel_tool_calls": False})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] == "tool_calls"
    seen = model.requests[-1]
    assert seen.metadata["response_format"] == fmt
    assert seen.metadata["tool_choice"] == choice
    assert seen.metadata["parallel_tool_calls"] is False
    assert seen.response_schema is not None


async def test_arguments_nested_too_deeply_are_a_422_naming_them(
        upstream: tuple[ToolModel, LoopbackServer]) -> None:
    """An assistant call whose arguments string holds JSON nested past what can be read
    (the body itself parses: the nesting is inside a string) is a 422 naming the field,
    never a 500."""
    deep = '{"a": ' + "[" * 5000 + "]" * 5000 + "}"
    async with upstream[1].async_client() as client:
        response = await client.post("/v1/chat/completions", json={"messages": [
            {"role": "user", "content": "40 + 2?"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "add", "arguments": deep}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"}]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "messages[1].tool_calls[0].function.arguments"
    assert "nested too deeply" in error["message"]


@pytest.mark.parametrize("stream", [False, True])
async def test_n_other_than_one_is_refused_never_answered_with_one_choice(
        upstream: tuple[ToolModel, LoopbackServer], stream: bool) -> None:
    """``n`` = 2 is a 422 naming ``n`` (a stream's too, before its first byte), never a
    silent single choice; ``n`` = 1 and ``null`` are served."""
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": stream}
    async with upstream[1].async_client() as client:
        refused = await client.post("/v1/chat/completions", json={**body, "n": 2})
        served = [await client.post("/v1/chat/completions", json={**body, "n": n})
                  for n in (1, None)]
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["param"] == "n"
    assert "n = 1" in refused.json()["error"]["message"]
    assert [r.status_code for r in served] == [200, 200]
