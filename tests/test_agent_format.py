"""An agent asked for a constrained output (``response_schema``, ``metadata["regex"]`` or
``["response_format"]``): its decisions go without the constraint (a model held to a JSON
schema could not call a tool), and its answer is asked again in the format, once."""

from __future__ import annotations

from typing import Any

import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    GuardVerdict,
    Message,
    Request,
    ToolCall,
    Usage,
)

from aieng_core import Kernel
from aieng_core.agent import Agent, AgentOptions
from aieng_core.agent._reflect import FORMAT_NOTE, REVIEW_PROMPT
from aieng_core.testing import ScriptedBackend
from aieng_core.testing.reference import AddTool

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {"sum": {"type": "integer"}}}
ASK = Request(messages=(Message("user", "40 + 2 as JSON"),), response_schema=SCHEMA,
              metadata={"tool_choice": "auto", "regex": ".*", "user": "u"})




def model(request: Request) -> Any:
    """Calls add, answers in prose, and writes JSON when asked for the format (or when it
    is held to the schema); a review call approves."""
    if request.messages[0].content == REVIEW_PROMPT:
        return "OK"
    if request.messages[-1].content == FORMAT_NOTE or (request.response_schema
                                                       and not request.tools):
        return '{"sum": 42}'
    if not any(m.role == "tool" for m in request.messages):
        return [ToolCall(id="c1", name="add", arguments={"a": 40, "b": 2})]
    return "The sum is 42."


async def run(components: dict[str, object], options: AgentOptions | None = None,
              ask: Request = ASK) -> tuple[Any, ScriptedBackend]:
    llm = ScriptedBackend(model, usage=Usage(2, 1))
    async with Kernel(env={}, entry_points=[]) as kernel:
        pipeline = kernel.compose({"llm": llm, **components}, name="fmt", timeout=5.0)
        return await Agent(pipeline, options).run(ask), llm


async def test_decisions_go_free_and_the_answer_is_formatted() -> None:
    """The two decisions offer the tool without the schema or the regex (tool_choice
    kept); the format call has them, and no tools; the answer is its text; its tokens are
    the last step's."""
    result, llm = await run({"tools": AddTool()})
    assert result.answered and result.answer == '{"sum": 42}'
    decisions, (formatting,) = llm.requests[:2], llm.requests[2:]
    for request in decisions:
        assert request.tools and request.response_schema is None
        assert request.metadata == {"tool_choice": "auto", "user": "u"}
    assert formatting.tools == () and formatting.response_schema == SCHEMA
    assert formatting.metadata == {"regex": ".*", "user": "u"}
    assert formatting.messages[-2:] == (Message("assistant", "The sum is 42."),
                                        Message("user", FORMAT_NOTE))
    assert result.messages[-1] == Message("assistant", '{"sum": 42}')
    assert result.steps[-1].usage == Usage(4, 2)


async def test_without_tools_the_decision_keeps_the_format() -> None:
    """No tools: one call, held to the schema, as a plain run."""
    result, llm = await run({})
    assert result.answer == '{"sum": 42}' and len(llm.requests) == 1
    assert llm.requests[0].response_schema == SCHEMA


async def test_a_plain_request_makes_no_format_call() -> None:
    """Nothing to format: the prose answer stands."""
    result, llm = await run({"tools": AddTool()},
                            ask=Request(messages=(Message("user", "40 + 2?"),)))
    assert result.answer == "The sum is 42." and len(llm.requests) == 2


async def test_the_review_comes_before_the_format() -> None:
    """With reflection the reviewed answer is the prose one; the format call follows an
    approval."""
    result, llm = await run({"tools": AddTool()}, AgentOptions(reflect=True))
    assert result.answer == '{"sum": 42}'
    review = next(r for r in llm.requests if r.messages[0].content == REVIEW_PROMPT)
    assert review.messages[1].content.endswith("Proposed answer:\nThe sum is 42.")
    assert llm.requests[-1].messages[-1].content == FORMAT_NOTE


class NoFormatting:
    """An input guard double blocking the formatting call."""

    @hookimpl
    def aieng_guard_input(self, request: Request) -> GuardVerdict:
        if request.messages[-1].content == FORMAT_NOTE:
            return GuardVerdict("block", "")
        return GuardVerdict("allow", request.prompt)


async def test_a_blocked_formatting_call_ends_the_run_blocked() -> None:
    """A guard that blocks the formatting call ends the run ``blocked``."""
    result, _ = await run({"guard": NoFormatting(), "tools": AddTool()})
    assert result.status == "blocked" and "formatting call" in result.reason
