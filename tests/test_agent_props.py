"""Agent runner properties and edges: a well-formed transcript for any script, guards,
caches, misbehaving tools, and the docs page's program."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio.testing
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    GuardVerdict,
    Message,
    Request,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core import Kernel
from aieng_core.agent import STATUSES, Agent, AgentOptions
from aieng_core.testing import PromptCache, ScriptedBackend

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]




class Echo:
    """One tool, ``echo``; ``odd`` behaviours on request: a wrong call id, a wrong type."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="echo"), ToolSpec(name="wrong_id"), ToolSpec(name="wrong_type")]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> Any:
        if call.name == "echo":
            return ToolResult(call.id, str(call.arguments.get("text", "")))
        if call.name == "wrong_id":
            return ToolResult("someone-else", "mine")
        if call.name == "wrong_type":
            return "not a ToolResult"
        return None


_calls = st.lists(
    st.builds(ToolCall, id=st.sampled_from(["a", "b", "c"]),
              name=st.sampled_from(["echo", "missing", "wrong_id"]),
              arguments=st.fixed_dictionaries({"text": st.sampled_from(["x", "y", "é 中"])})),
    max_size=3)
_scripts = st.lists(st.one_of(st.text(max_size=5), _calls), min_size=1, max_size=6)


def _well_formed(messages: Sequence[Message]) -> None:
    """Every tool message answers a call of the assistant message before it (once), and
    every call of an assistant message is answered."""
    open_calls: set[str] = set()
    for message in messages:
        if message.role == "tool":
            assert message.tool_call_id in open_calls, message
            open_calls.discard(message.tool_call_id)
            continue
        assert not open_calls, f"unanswered calls {open_calls} before {message}"
        if message.role == "assistant":
            ids = [c.id for c in message.tool_calls]
            assert len(ids) == len(set(ids))
            open_calls = set(ids)
    assert not open_calls


@settings(max_examples=40)
@given(script=_scripts, max_steps=st.integers(1, 5))
def test_any_script_gives_a_well_formed_transcript(
    script: list[str | list[ToolCall]], max_steps: int
) -> None:
    """For any scripted sequence of tool calls and answers, the transcript is well formed,
    the steps are at most ``max_steps`` and the status is a documented one."""

    async def main() -> None:
        async with Kernel(env={}, entry_points=[]) as kernel:
            pipeline = kernel.compose({"llm": ScriptedBackend(usage=Usage(3, 2), replies=script), "tools": Echo()})
            result = await Agent(pipeline, AgentOptions(max_steps=max_steps)).run("task")
        assert result.status in STATUSES
        assert 1 <= len(result.steps) <= max_steps
        _well_formed(result.messages)
        assert result.messages[0] == Message("user", "task")
        if result.status == "answered":
            assert result.messages[-1] == Message("assistant", result.answer)

    anyio.run(main)


async def test_a_tool_answering_another_id_is_given_the_calls_id() -> None:
    """A result whose ``call_id`` is not its call's is re-addressed to the call."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        model = ScriptedBackend(usage=Usage(3, 2), replies=[[ToolCall(id="k", name="wrong_id")], "ok"])
        result = await Agent(kernel.compose({"llm": model, "t": Echo()})).run("x")
    assert result.steps[0].results == (ToolResult("k", "mine"),)


async def test_a_tool_returning_the_wrong_type_is_an_error_result() -> None:
    """A tool whose value is not a ToolResult fails like a raise: an error result."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        model = ScriptedBackend(usage=Usage(3, 2), replies=[[ToolCall(id="k", name="wrong_type")], "ok"])
        result = await Agent(kernel.compose({"llm": model, "t": Echo()})).run("x")
    [error] = result.steps[0].results
    assert error.is_error and "expected ToolResult" in error.content


class Slow:
    """A tool that outlives the pipeline's timeout."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="wait")]

    @hookimpl
    async def aieng_call_tool(self, call: ToolCall) -> ToolResult:
        await anyio.sleep(30)
        return ToolResult(call.id, "late")


@pytest.mark.parametrize(
    "anyio_backend", [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})],
    ids=["trio-mock-clock"])
async def test_a_tool_timing_out_is_an_error_result() -> None:
    """A tool call past the pipeline's timeout is an error result saying so (on a clock
    that jumps to the next deadline once every task waits: the model calls before and
    after it never meet their own 0.1 s, however busy the machine)."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        model = ScriptedBackend(usage=Usage(3, 2), replies=[[ToolCall(id="k", name="wait")], "ok"])
        pipeline = kernel.compose({"llm": model, "t": Slow()}, timeout=0.1)
        result = await Agent(pipeline).run("x")
    [error] = result.steps[0].results
    assert error.is_error and "timed out" in error.content and result.answered


class Blocker:
    """An input guard blocking any conversation that holds a tool message."""

    @hookimpl
    def aieng_guard_input(self, request: Request) -> GuardVerdict:
        if any(m.role == "tool" for m in request.messages):
            return GuardVerdict("block", "")
        return GuardVerdict("allow", request.prompt)


async def test_a_guard_blocking_a_model_call_ends_the_run_blocked() -> None:
    """Every model call goes through the pipeline's guards: a block ends the run
    ``blocked``, naming the stage."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        model = ScriptedBackend(usage=Usage(3, 2), replies=[[ToolCall(id="k", name="echo", arguments={"text": "x"})], "ok"])
        pipeline = kernel.compose({"guard": Blocker(), "llm": model, "t": Echo()})
        result = await Agent(pipeline).run("x")
    assert result.status == "blocked" and "guard_input" in result.reason
    assert len(model.requests) == 1 and len(result.steps) == 2


async def test_a_cached_model_call_costs_no_tokens() -> None:
    """A model call answered by the pipeline's cache counts no tokens (no model ran)."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        model = ScriptedBackend(usage=Usage(3, 2), replies=["hello"])
        pipeline = kernel.compose({"cache": PromptCache(), "llm": model})
        first = await Agent(pipeline).run("hi")
        second = await Agent(pipeline).run("hi")
    assert first.tokens == 5 and second.tokens == 0 and second.answer == "hello"
    assert len(model.requests) == 1


def test_the_docs_page_program_runs(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """docs/agents.md's complete program runs as written and prints its steps and answer
    (tests/test_examples.py runs only the README's and the user guide's)."""
    text = (ROOT / "docs" / "agents.md").read_text(encoding="utf-8")
    programs = [b for b in re.findall(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
                if "anyio.run(main)" in b]
    assert programs
    monkeypatch.chdir(ROOT)
    for code in programs:
        program = compile(code, "<docs/agents.md>", "exec")
        exec(program, {"__name__": "__doc_snippet__"})  # noqa: S102
    out = capsys.readouterr().out
    assert "answered" in out and "42" in out


class Shy:
    """Lists a tool but never runs it."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="shy")]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> None:
        return None


async def test_a_listed_tool_that_nobody_runs_says_so() -> None:
    """A call of a listed tool that no component answers is an error result saying no
    component ran it (not "unknown tool", which would contradict the tool list)."""
    async with Kernel(env={}, entry_points=[]) as kernel:
        model = ScriptedBackend(usage=Usage(3, 2), replies=[[ToolCall(id="k", name="shy")], "ok"])
        result = await Agent(kernel.compose({"llm": model, "t": Shy()})).run("x")
    [error] = result.steps[0].results
    assert error.is_error and error.content == "error: no component ran tool 'shy'"


async def test_the_requests_parameters_are_used_and_its_tools_replaced() -> None:
    """A Request task gives every model call its model name, sampling parameters and
    metadata; the tools offered are the components'."""
    request = Request(messages=(Message("system", "sys"), Message("user", "hi")),
                      model=None, temperature=0.5, max_tokens=7, metadata={"tag": "t"},
                      tools=(ToolSpec(name="ghost"),))
    async with Kernel(env={}, entry_points=[]) as kernel:
        model = ScriptedBackend(usage=Usage(3, 2), replies=[[ToolCall(id="k", name="echo", arguments={"text": "é"})], "ok"])
        result = await Agent(kernel.compose({"llm": model, "t": Echo()})).run(request)
    assert result.answered and result.messages[:2] == request.messages
    for seen in model.requests:
        assert (seen.temperature, seen.max_tokens, seen.metadata) == (0.5, 7, {"tag": "t"})
        assert [t.name for t in seen.tools] == ["echo", "wrong_id", "wrong_type"]
    assert result.steps[0].results[0].content == "é"
