"""An agent's conversation cut to ``AgentOptions.context_chars`` for the model: older
turns' texts become marks, oldest tool results first, and when marks are not enough the
oldest turns are left out whole (tests/test_agent_limits_big_day.py); the system text, the
task and the latest step are kept; the transcript keeps everything."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Message, ToolCall, ToolResult, ToolSpec, Usage
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core import Kernel
from aieng_core.agent import Agent, AgentOptions
from aieng_core.agent._messages import ContextLimitError, fit, size
from aieng_core.testing import ScriptedBackend

MARK = "[left out to fit the context: "
NOTE = re.compile(r"\[left out to fit the context: (\d+) earlier messages, (\d+) characters\]")

# Lengths drawn evenly (hypothesis' own text strategy favours short strings, which no
# mark would shorten).
_TEXT = st.builds(lambda n, piece: (piece * n)[:n], st.integers(0, 400),
                  st.sampled_from(["ab", "é ", "x\n", "word "]))


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    """A system prompt (maybe), the task, then steps: tool calls and their results, an
    answer a review rejected and the review's note, or a loop note."""
    messages = [Message("system", draw(_TEXT))] if draw(st.booleans()) else []
    messages.append(Message("user", draw(_TEXT)))
    for step in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["tools", "tools", "review"]))
        if kind == "review":
            messages += [Message("assistant", draw(_TEXT)), Message("user", draw(_TEXT))]
            continue
        calls = tuple(ToolCall(id=f"s{step}c{n}", name=draw(st.sampled_from(["add", "web"])),
                               arguments={"q": draw(_TEXT)[:20]})
                      for n in range(draw(st.integers(1, 3))))
        messages.append(Message("assistant", draw(_TEXT), tool_calls=calls))
        messages += [Message("tool", draw(_TEXT), tool_call_id=c.id) for c in calls]
        if draw(st.booleans()):
            messages.append(Message("user", draw(_TEXT)))  # a loop note
    return messages


@settings(max_examples=300, deadline=None)
@given(messages=conversations(), share=st.one_of(st.none(), st.floats(0.05, 1.2)))
def test_fit_keeps_every_message_and_cuts_oldest_first(messages: list[Message],
                                                       share: float | None) -> None:
    """Same messages, roles, ids and calls; only texts of the middle change, into marks;
    nothing changes when it fits; when it still does not fit, nothing else could be cut;
    tool results are cut oldest first. (The limit is drawn as a share of the size, so that
    most draws need some cuts and not all.)"""
    total = sum(map(size, messages))
    limit = None if share is None else max(1, int(total * share))
    try:
        out = fit(messages, limit)
    except ContextLimitError:  # what is never cut passes the limit alone
        return
    if limit is None or total <= limit:
        assert out == tuple(messages)
        return
    if "earlier messages, " in out[0].content:  # marks were not enough: turns left out
        return  # (tests/test_agent_limits_big_day.py checks that case)
    if any(m.content.endswith(" more characters cut to fit the context]") for m in out):
        return  # the latest step's tool results cut to fit: checked there too
    assert len(out) == len(messages)
    for before, after in zip(messages, out):
        assert (after.role, after.tool_call_id, after.tool_calls, after.name) == (
            before.role, before.tool_call_id, before.tool_calls, before.name)
        assert after.content == before.content or (
            after.content.startswith(MARK) and len(after.content) < len(before.content))
    first_user = next(i for i, m in enumerate(messages) if m.role == "user")
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"),
                         default=first_user)
    kept = [*range(first_user + 1), *range(max(last_assistant, first_user + 1),
                                             len(messages))]
    assert all(out[i] == messages[i] for i in kept)
    cut = [i for i in range(len(out)) if out[i] != messages[i]]
    if sum(map(size, out)) > limit:  # still over: every text that a mark shortens is cut
        middle = set(range(len(out))) - set(kept)
        assert all(out[i].content.startswith(MARK) or len(messages[i].content) < 100
                   for i in middle)
    tools = [i for i in cut if out[i].role == "tool"]
    if tools:  # a longer, older tool result was not kept while a newer one was cut
        older = [i for i in range(first_user + 1, max(tools))
                 if messages[i].role == "tool" and i not in cut]
        assert all(len(messages[i].content) < 100 for i in older)


def test_marks_name_the_tool_and_the_size() -> None:
    """A mark says whose result was left out and how long it was."""
    call = ToolCall(id="c1", name="search", arguments={"q": "x"})
    messages = [Message("user", "find it"), Message("assistant", "", tool_calls=(call,)),
                Message("tool", "r" * 500, tool_call_id="c1"),
                Message("assistant", "done?")]
    out = fit(messages, 100)
    assert out[2].content == (f"{MARK}the result of search, 500 characters]")
    assert out[3] == messages[3]


class Pages:
    """A ``page`` tool answering ``chars`` characters per call."""

    def __init__(self, chars: int) -> None:
        self.chars = chars

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="page")]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        return ToolResult(call.id, f"page {call.arguments.get('n')} " + "x" * self.chars)


@pytest.mark.anyio
async def test_a_long_run_stays_within_the_context_and_the_transcript_keeps_all() -> None:
    """Five pages of 2,000 characters, a 5,000-character context: every request fits it,
    the latest page always reaches the model whole, and the transcript holds all five."""
    replies: list[Any] = [[ToolCall(id=f"p{n}", name="page", arguments={"n": n})]
                          for n in range(5)] + ["read them all"]
    model = ScriptedBackend(replies, usage=Usage(1, 1))
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose({"llm": model, "tools": Pages(2000)}, name="ctx", timeout=5.0)
        result = await Agent(pipeline, AgentOptions(context_chars=5000,
                                                     stall_steps=10)).run("read")
    assert result.answered and len(result.steps) == 6
    for request in model.requests:
        assert sum(map(size, request.messages)) <= 5000
    last = model.requests[-1].messages
    assert last[-1].content.startswith("page 4 ") and len(last[-1].content) > 2000
    assert sum(m.content.startswith(MARK) for m in last) == 3
    assert [len(m.content) > 2000 for m in result.messages if m.role == "tool"] == [True] * 5


@pytest.mark.anyio
async def test_a_run_of_sixty_steps_stays_within_the_context() -> None:
    """60 steps of tool calls under a 3,000-character context: marks alone (about 130
    characters a step) stop fitting after some twenty steps; every request still fits,
    holds the task and the latest page whole, and says how much was left out."""
    replies: list[Any] = [[ToolCall(id="c", name="page", arguments={"n": n})]
                          for n in range(60)] + ["done"]
    model = ScriptedBackend(replies, usage=Usage(1, 1))
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose({"llm": model, "tools": Pages(600)}, name="ctx", timeout=5.0)
        result = await Agent(pipeline, AgentOptions(
            context_chars=3000, max_steps=61, stall_steps=100, loop_repeats=100,
            system="use page")).run("read them all")
    assert result.answered and len(result.steps) == 61
    for request in model.requests:
        sent = request.messages
        assert sum(map(size, sent)) <= 3000
        assert sent[0].content.startswith("use page") and sent[1].content == "read them all"
    last = model.requests[-1].messages
    assert last[-1].content.startswith("page 59 ") and NOTE.search(last[0].content)
    assert len(result.messages) == 2 + 60 * 2 + 1  # the transcript keeps everything


def test_context_chars_must_be_positive() -> None:
    """A context of no characters is a configuration error."""
    with pytest.raises(ValueError, match="context_chars"):
        AgentOptions(context_chars=0)


def test_the_cli_takes_a_context_bound(tmp_path: Any,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``aieng agent --context-chars N`` reaches the agent's options; 0 is a usage
    error."""
    from click.testing import CliRunner

    import aieng_core.agent
    from aieng_core.cli import _agent, cli

    seen: list[AgentOptions] = []

    class Recording(Agent):
        def __init__(self, pipeline: Any, options: AgentOptions | None = None) -> None:
            assert options is not None
            seen.append(options)
            super().__init__(pipeline, options)

    monkeypatch.setattr(aieng_core.agent, "Agent", Recording)
    assert _agent.agent.name == "agent"
    path = tmp_path / "a.toml"
    path.write_text('[pipeline]\nname = "a"\n[components.llm]\nuse = "extractive"\n',
                    encoding="utf-8")
    result = CliRunner().invoke(cli, ["agent", str(path), "x", "--context-chars", "0"])
    assert result.exit_code == 2 and "--context-chars" in result.stderr
    CliRunner().invoke(cli, ["agent", str(path), "x", "--context-chars", "1234"])
    assert [o.context_chars for o in seen] == [1234]
