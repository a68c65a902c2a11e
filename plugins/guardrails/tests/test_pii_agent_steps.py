"""``pii`` across an agent's steps: a value keeps its placeholder for the whole agent run,
also after a call that kept it (``restore_calls``) put the placeholder in the transcript;
no value crosses into another agent run."""

from __future__ import annotations

import re

import pytest
from aieng_guardrails import PIIGuard, PIIOptions, restore
from aieng_guardrails._pii import find_pii
from aieng_guardrails._redact import redact_texts
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Message, Request, ToolCall, ToolResult, ToolSpec

from aieng_core.agent import Agent, AgentOptions
from aieng_core.testing import ScriptedBackend, isolated_kernel

pytestmark = pytest.mark.anyio

BOB, ANN = "bob@example.org", "ann@example.org"


class Fetch:
    """A tool double ``fetch`` (not in ``restore_calls``), recording its arguments; its
    result names another address."""

    def __init__(self) -> None:
        self.got: list[dict[str, object]] = []

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="fetch")]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        self.got.append(dict(call.arguments))
        return ToolResult(call.id, f"profile found; manager is {ANN}")


def first_placeholder(request: Request) -> str:
    """The first address placeholder of the task as this model call sees it."""
    task = next(m.content for m in request.messages if m.role == "user")
    return re.findall("<EMAIL_[0-9]+>", task)[0]


def model(request: Request) -> str | list[ToolCall]:
    """First look the address up (its placeholder, withheld from ``fetch``), then answer
    with the placeholder the task shows now and the one of the manager."""
    if request.messages[-1].role != "tool":
        return [ToolCall(id="f1", name="fetch",
                         arguments={"who": first_placeholder(request)})]
    manager = re.findall("<EMAIL_[0-9]+>", request.messages[-1].content)[0]
    return f"{first_placeholder(request)} reports to {manager}."


async def test_a_withheld_placeholder_keeps_its_number_in_the_next_step() -> None:
    """The task's address is ``<EMAIL_1>`` in every model call of the run (it was
    ``<EMAIL_2>`` after the withheld call), the page's new address takes the next number,
    and the answer gets both values back; the tool got the placeholder only."""
    fetch, backend = Fetch(), ScriptedBackend(model)
    guard = PIIGuard(PIIOptions(restore=True, restore_calls=False))
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        pipe = kernel.compose({"pii": guard, "llm": backend, "tools": fetch})
        result = await Agent(pipe, AgentOptions(max_steps=3)).run(f"who is {BOB}'s manager?")
    assert fetch.got == [{"who": "<EMAIL_1>"}]
    tasks = [next(m.content for m in r.messages if m.role == "user") for r in backend.requests]
    assert tasks == ["who is <EMAIL_1>'s manager?"] * 2
    assert backend.requests[1].messages[-1].content == "profile found; manager is <EMAIL_2>"
    assert result.status == "answered" and result.answer == f"{BOB} reports to {ANN}."
    seen = repr([r.messages for r in backend.requests])
    assert BOB not in seen and ANN not in seen


async def test_no_value_crosses_into_another_agent_run() -> None:
    """A later run on the same guard, whose task has no address, answers with the
    placeholder it was given by the user: the first run's value is not put back; and the
    first run's numbering is gone once it finished."""
    guard = PIIGuard(PIIOptions(restore=True, restore_calls=False))
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        pipe = kernel.compose({"pii": guard, "llm": ScriptedBackend(model), "tools": Fetch()})
        agent = Agent(pipe, AgentOptions(max_steps=3))
        await agent.run(f"who is {BOB}'s manager?")
        assert len(guard.agent_runs) == 1
        echo = ScriptedBackend(lambda request: "I only know <EMAIL_1>.")
        other = kernel.compose({"pii": guard, "llm": echo}, name="other")
        result = await Agent(other, AgentOptions(max_steps=2)).run("who is <EMAIL_1>?")
    assert result.answer == "I only know <EMAIL_1>."
    assert len(guard.agent_runs) == 0  # dropped when the run finished (events delivered)


def test_outside_an_agent_run_nothing_is_kept_between_calls() -> None:
    """Direct calls (no agent run bound) number each conversation afresh, as before."""
    guard = PIIGuard(PIIOptions(restore=True))
    for _ in range(2):
        verdict = guard.check_input(Request(messages=(Message("user", f"mail {BOB}"),)))
        assert verdict is not None and verdict.text == "mail <EMAIL_1>"
    assert len(guard.agent_runs) == 0


def test_assigned_placeholders_are_reused_and_stand_for_their_values() -> None:
    """``redact_texts(..., assigned=...)``: a value given a placeholder earlier keeps it,
    the same placeholder already in a text stands for it (restored to it), and a new value
    takes a number no assigned placeholder has."""
    texts = [f"mail {BOB} and {ANN}", "sent to <EMAIL_1>"]
    found = [find_pii(text) for text in texts]
    out, mapping = redact_texts(texts, found, assigned={"<EMAIL_1>": BOB})
    assert out == ["mail <EMAIL_1> and <EMAIL_2>", "sent to <EMAIL_1>"]
    assert mapping == {"<EMAIL_1>": BOB, "<EMAIL_2>": ANN}
    assert [restore(text, mapping) for text in out] == [texts[0], f"sent to {BOB}"]
