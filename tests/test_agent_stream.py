"""Token streaming of agent runs (``Agent.run(on_delta=...)``): each model call's text as
it is generated, named by step and purpose; the same run as without streaming; and the
CLI's live display (``aieng agent --stream``, ``aieng chat --agent``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    AgentAction,
    AgentState,
    Completion,
    Delta,
    Message,
    Request,
    ToolCall,
    Usage,
)
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from aieng_core import Kernel
from aieng_core.agent import Agent, AgentDelta, AgentOptions, AgentResult
from aieng_core.agent._reflect import FORMAT_NOTE, PLAN_PROMPT, REVIEW_PROMPT
from aieng_core.cli import _agent, _chat, cli
from aieng_core.testing import ScriptedBackend, kernel_with
from aieng_core.testing.reference import AddTool

pytestmark = pytest.mark.anyio


class Talker:
    """A streaming backend double that says what it will do before it calls ``add(40, 2)``,
    then answers with the result; pieces of two words."""

    def __init__(self, before: str = "Let me add them.", after: str = "It is {}.") -> None:
        self.before, self.after = before, after

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
        return self._stream(request)

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion:
        pieces = [delta async for delta in self._stream(request)]
        end = pieces[-1]
        return Completion(text="".join(p.text for p in pieces), usage=end.usage,
                          finish_reason=end.finish_reason, tool_calls=end.tool_calls)

    async def _stream(self, request: Request) -> AsyncIterator[Delta]:
        results = [m.content for m in request.messages if m.role == "tool"]
        text = self.after.format(results[-1]) if results else self.before
        words = text.split(" ")
        pieces = [" ".join(words[i:i + 2]) for i in range(0, len(words), 2)]
        for index, piece in enumerate(pieces):
            yield Delta(text=piece if index == 0 else f" {piece}", index=index)
        calls = () if results else (ToolCall(id="c1", name="add", arguments={"a": 40, "b": 2}),)
        yield Delta(text="", index=len(pieces), usage=Usage(3, len(words)), tool_calls=calls,
                    finish_reason="tool_calls" if calls else "stop")


async def run(components: dict[str, object], task: Any = "What is 40 + 2?",
              options: AgentOptions | None = None, *, stream: bool = True,
              ) -> tuple[AgentResult, list[AgentDelta]]:
    pieces: list[AgentDelta] = []
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose(components, name="stream", timeout=5.0)
        result = await Agent(pipeline, options).run(
            task, on_delta=pieces.append if stream else None)
    return result, pieces


def texts(pieces: Sequence[AgentDelta]) -> dict[tuple[int, str], str]:
    """Each call's streamed text, by (step, purpose)."""
    joined: dict[tuple[int, str], str] = {}
    for piece in pieces:
        key = (piece.step, piece.purpose)
        joined[key] = joined.get(key, "") + piece.text
    return joined


async def test_each_decision_streams_its_text_and_its_calls() -> None:
    """The first decision streams the words before its tool call, its last piece carries
    the call; the second streams the answer; the pieces add up to each step's text."""
    result, pieces = await run({"llm": Talker(), "tools": AddTool()})
    assert result.answered and result.answer == "It is 42."
    assert texts(pieces) == {(1, "decide"): "Let me add them.", (2, "decide"): "It is 42."}
    assert [p.text for p in pieces if p.step == 1] == ["Let me", " add them.", ""]
    first_end = [p for p in pieces if p.step == 1][-1].delta
    assert first_end.finish_reason == "tool_calls" and first_end.tool_calls[0].name == "add"
    assert [s.action.text for s in result.steps] == ["Let me add them.", "It is 42."]


async def test_an_async_callback_is_awaited() -> None:
    """``on_delta`` may be a coroutine function: each piece is awaited in order."""
    seen: list[str] = []

    async def note(piece: AgentDelta) -> None:
        seen.append(piece.text)

    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose({"llm": Talker(), "tools": AddTool()}, name="s")
        result = await Agent(pipeline).run("40 + 2?", on_delta=note)
    assert "".join(seen) == "Let me add them.It is 42." and result.answered


def kinds(request: Request) -> Any:
    """Plans, reviews, decides (add, then prose) and formats, telling the calls apart."""
    system = request.messages[0].content if request.messages[0].role == "system" else ""
    if PLAN_PROMPT in system:
        return "1. add\n2. answer"
    if system == REVIEW_PROMPT:
        return "OK"
    if request.messages[-1].content == FORMAT_NOTE:
        return '{"sum": 42}'
    if not any(m.role == "tool" for m in request.messages):
        return [ToolCall(id="c1", name="add", arguments={"a": 40, "b": 2})]
    return "The sum is 42."


async def test_every_kind_of_call_streams_under_its_purpose() -> None:
    """Plan, decisions, review and format each stream under their purpose and step; the
    format call's text is the answer."""
    ask = Request(messages=(Message("user", "40 + 2 as JSON"),),
                  response_schema={"type": "object"})
    result, pieces = await run({"llm": ScriptedBackend(kinds), "tools": AddTool()}, ask,
                               AgentOptions(plan=True, reflect=True))
    assert result.answer == '{"sum": 42}'
    assert texts(pieces) == {(1, "plan"): "1. add\n2. answer", (1, "decide"): "",
                             (2, "decide"): "The sum is 42.", (2, "review"): "OK",
                             (2, "format"): '{"sum": 42}'}
    order = list(dict.fromkeys((p.step, p.purpose) for p in pieces))
    assert order == [(1, "plan"), (1, "decide"), (2, "decide"), (2, "review"), (2, "format")]


class Answers:
    """An agent policy double: answers at once, without a model call."""

    @hookimpl
    def aieng_agent_step(self, state: AgentState) -> AgentAction:
        return AgentAction("answer", text="by policy")


async def test_a_policy_step_streams_nothing() -> None:
    """A policy's decision is not a model call of the runner: no pieces."""
    result, pieces = await run({"llm": Talker(), "policy": Answers()})
    assert result.answer == "by policy" and pieces == []


def script(draw: st.DrawFn) -> list[Any]:
    """Replies: some tool calls (valid or not, unknown tools too), then maybe an answer."""
    calls = st.builds(lambda i, name, a: [ToolCall(id=f"c{i}", name=name,
                                                   arguments={"a": a, "b": 1})],
                      st.integers(0, 9), st.sampled_from(["add", "nope"]),
                      st.one_of(st.integers(-5, 5), st.text(max_size=3)))
    replies: list[Any] = draw(st.lists(calls, max_size=3))
    replies.append(draw(st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)
                        .filter(lambda s: s.strip())))
    return replies


@given(replies=st.composite(script)(), steps=st.integers(1, 4))
async def test_streaming_changes_nothing_but_shows_the_text(replies: list[Any],
                                                            steps: int) -> None:
    """Property: a run with ``on_delta`` ends as the same run without it (status, answer,
    steps, transcript), and each decision's pieces add up to its step's text."""
    options = AgentOptions(max_steps=steps)
    plain, _ = await run({"llm": ScriptedBackend(replies), "tools": AddTool()},
                         options=options, stream=False)
    streamed, pieces = await run({"llm": ScriptedBackend(replies), "tools": AddTool()},
                                 options=options)
    assert (streamed.status, streamed.answer, streamed.messages) == \
        (plain.status, plain.answer, plain.messages)
    assert [s.action for s in streamed.steps] == [s.action for s in plain.steps]
    joined = texts(pieces)
    for step in streamed.steps:
        assert joined[(step.index, "decide")] == step.action.text


# -- the CLI -------------------------------------------------------------------------------


def _kernel() -> Kernel:
    return kernel_with({"talker": Talker, "adder": AddTool, "quiet": lambda: ScriptedBackend(
        [[ToolCall(id="c1", name="add", arguments={"a": 1, "b": 1})], "two"])})


def invoke(tmp_path: Path, command: str, llm: str, *args: str, lines: str = "") -> Result:
    path = tmp_path / "agent.toml"
    path.write_text(f'[pipeline]\nname = "s"\n[components.llm]\nuse = "{llm}"\n'
                    '[components.tools]\nuse = "adder"\n', encoding="utf-8")
    assert (_agent.agent.name, _chat.chat.name) == ("agent", "chat")
    return CliRunner().invoke(cli, [command, str(path), *args], input=lines,
                              obj={"kernel": _kernel()})


def test_agent_stream_prints_the_text_as_it_comes(tmp_path: Path) -> None:
    """``--stream``: the words before the tool call, the step, the answer as it streamed
    (not printed a second time), the answer's step."""
    result = invoke(tmp_path, "agent", "talker", "40 + 2?", "--stream")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "Let me add them.", 'step 1 [model] add({"a": 40, "b": 2}) -> 42', "It is 42.",
        "step 2 [model] answer"]


def test_agent_without_stream_prints_only_the_answer_text(tmp_path: Path) -> None:
    """Without ``--stream`` the words before a tool call are not shown; the answer ends."""
    result = invoke(tmp_path, "agent", "talker", "40 + 2?")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        'step 1 [model] add({"a": 40, "b": 2}) -> 42', "step 2 [model] answer", "It is 42."]


def test_agent_stream_and_json_are_a_usage_error(tmp_path: Path) -> None:
    result = invoke(tmp_path, "agent", "talker", "40 + 2?", "--stream", "--json")
    assert result.exit_code == 2 and "--stream and --json" in result.stderr


def test_chat_agent_streams_the_answer_and_puts_steps_on_stderr(tmp_path: Path) -> None:
    """``aieng chat --agent``: the model's text streams to standard output, each step's line
    goes to standard error, and the answer is not printed twice."""
    result = invoke(tmp_path, "chat", "talker", "--agent", lines="40 + 2?\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["Let me add them.", "It is 42."]
    assert "step 1 [model] add(" in result.stderr and "step 2 [model] answer" in result.stderr


def test_a_model_that_does_not_stream_still_shows_its_answer(tmp_path: Path) -> None:
    """Pieces from a backend without ``aieng_stream``-style text (a tool call, then an
    answer) display as its answer once."""
    result = invoke(tmp_path, "agent", "quiet", "1 + 1?", "--stream")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-2:] == ["two", "step 2 [model] answer"]
    assert result.stdout.count("two") == 1
