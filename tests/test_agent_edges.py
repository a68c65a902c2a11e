"""Agent runner edges a demanding user hits: tool results that are not valid UTF-8 or are
huge, and ``--json`` values JSON cannot hold (NaN in a model's tool arguments)."""

from __future__ import annotations

import json

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import RunStarted, ToolCall, ToolResult, ToolSpec, Usage

from aieng_core import Kernel
from aieng_core.agent import Agent, AgentOptions
from aieng_core.testing import EventCapture, ScriptedBackend

pytestmark = pytest.mark.anyio




class Odd:
    """``bytes`` answers text decoded with surrogateescape (a file that is not UTF-8);
    ``big`` answers ``n`` characters."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="bytes"), ToolSpec(name="big")]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        if call.name == "bytes":
            return ToolResult(call.id, b"caf\xe9 \xf0\x9f\x98\x80".decode("utf-8",
                                                                       "surrogateescape"))
        if call.name == "big":
            return ToolResult(call.id, "x" * int(call.arguments["n"]))
        return None


async def test_a_result_that_is_not_utf8_reaches_the_model_as_valid_text() -> None:
    """Lone surrogates (undecodable bytes) become U+FFFD: the model, the transcript and
    ``--json`` get valid UTF-8; a real character stays as it is."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        model = ScriptedBackend(usage=Usage(3, 2), replies=[[ToolCall(id="k", name="bytes")], "ok"])
        result = await Agent(kernel.compose({"llm": model, "t": Odd()})).run("x")
    [observation] = result.steps[0].results
    assert observation.content == "caf\ufffd \U0001f600" and not observation.is_error
    tool_message = next(m for m in model.requests[1].messages if m.role == "tool")
    assert tool_message.content == "caf\ufffd \U0001f600"
    json.dumps(result.to_json(), ensure_ascii=False).encode("utf-8")  # no surrogate left


async def test_a_huge_result_is_cut_for_the_model_saying_so() -> None:
    """A result longer than ``tool_result_chars`` is cut, with a note of how much was cut;
    one at the limit is kept whole."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        model = ScriptedBackend(usage=Usage(3, 2), replies=[[ToolCall(id="a", name="big", arguments={"n": 1_000_000}),
                         ToolCall(id="b", name="big", arguments={"n": 100})], "ok"])
        agent = Agent(kernel.compose({"llm": model, "t": Odd()}),
                      AgentOptions(tool_result_chars=100))
        result = await agent.run("x")
    cut, whole = result.steps[0].results
    assert cut.content.startswith("x" * 100 + "\n")
    assert "999900 more characters cut" in cut.content and len(cut.content) < 200
    assert whole.content == "x" * 100
    sent = [m.content for m in model.requests[1].messages if m.role == "tool"]
    assert sent == [cut.content, whole.content]


async def test_the_default_cap_keeps_ordinary_results_whole() -> None:
    """The default cap (20,000 characters) leaves a result of that length alone."""
    assert AgentOptions().tool_result_chars == 20_000
    async with Kernel(env={}, entry_points=[]) as kernel:
        model = ScriptedBackend(usage=Usage(3, 2), replies=[[ToolCall(id="a", name="big", arguments={"n": 20_000})], "ok"])
        result = await Agent(kernel.compose({"llm": model, "t": Odd()})).run("x")
    assert result.steps[0].results[0].content == "x" * 20_000
    with pytest.raises(ValueError, match="tool_result_chars"):
        AgentOptions(tool_result_chars=0)


class Echo:
    """``echo`` answers its ``text`` argument."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="echo")]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        if call.name != "echo":
            return None
        return ToolResult(call.id, str(call.arguments.get("text")))


async def test_to_json_is_strict_json_even_with_nan_arguments() -> None:
    """A model may write ``NaN`` in its arguments (Python's json reads it): ``to_json``
    still gives values strict JSON can hold (non-finite numbers as strings)."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        calls = [ToolCall(id="k", name="echo",
                          arguments={"text": float("nan"), "n": [float("-inf"), 1.5]})]
        model = ScriptedBackend(usage=Usage(3, 2), replies=[calls, "ok"])
        result = await Agent(kernel.compose({"llm": model, "t": Echo()})).run("x")
    data = result.to_json()
    text = json.dumps(data, allow_nan=False)  # raises on NaN / Infinity
    arguments = json.loads(text)["steps"][0]["action"]["tool_calls"][0]["arguments"]
    assert arguments == {"text": "NaN", "n": ["-Infinity", 1.5]}


async def test_the_runs_of_an_agent_name_it_as_their_parent() -> None:
    """Each model call of an agent run is a pipeline run whose ``run.started`` names the
    agent run as its ``parent`` (drift counts the task once); a run of its own has none."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        capture = EventCapture(kernel)
        call = ToolCall(id="k", name="big", arguments={"n": 3})
        model = ScriptedBackend(usage=Usage(3, 2), replies=[[call], "ok"])
        pipeline = kernel.compose({"llm": model, "t": Odd()})
        result = await Agent(pipeline).run("x")
        await pipeline.run("alone")
        started = capture.of(RunStarted)
    assert [e.parent for e in started] == [result.run_id, result.run_id, ""]
