"""Model output and tool arguments as untrusted input: a reply built to break the parser
is a format error the model is told about, never a crash of the agent run."""

from __future__ import annotations

import pytest
from aieng_agents import CalculatorTool, ReActFormatError, ReActOptions, ReActPolicy, parse_react
from aieng_hookspecs.types import AgentState, Message, ToolSpec

from aieng_core import Kernel
from aieng_core.testing import ScriptedBackend

CALC = CalculatorTool().aieng_tools()[0]
PAIR = ToolSpec(name="pair", description="Two values.", parameters={
    "type": "object", "properties": {"a": {"type": "string"}, "b": {}}})

#: Nesting deeper than Python's recursion limit: its JSON reader (and ``ast``) raise
#: ``RecursionError`` on it.
DEEP = 5_000


@pytest.mark.parametrize(("tool", "given_input"), [
    (CALC, "[" * DEEP), (PAIR, "[" * DEEP), (PAIR, '{"a":' * DEEP),
    (PAIR, '{"b": ' + "[" * DEEP + "]" * DEEP + "}"),
])
def test_a_deeply_nested_action_input_is_a_format_error(tool: ToolSpec,
                                                         given_input: str) -> None:
    """Nesting past the recursion limit raised ``RecursionError`` out of the parser (the
    policy then failed the agent run); it is now a format error naming the nesting."""
    with pytest.raises(ReActFormatError, match="nested"):
        parse_react(f"Action: {tool.name}\nAction Input: {given_input}", (tool,))


@pytest.mark.anyio
async def test_a_deeply_nested_reply_is_sent_back_not_a_crash(aieng_kernel: Kernel) -> None:
    """The policy sends such a reply back with its note, and the next reply decides."""
    backend = ScriptedBackend(["Action: calculate\nAction Input: " + "[" * DEEP,
                               'Action: calculate\nAction Input: {"expression": "1+1"}'])
    policy = ReActPolicy(ReActOptions(retries=1))
    state = AgentState(messages=(Message("user", "1+1?"),), tools=(CALC,))
    async with aieng_kernel.compose({"react": policy, "llm": backend}):
        action = await policy.aieng_agent_step(state)
    assert action.kind == "tool_calls"
    assert action.tool_calls[0].arguments == {"expression": "1+1"}
    assert "nested" in backend.requests[1].messages[-1].content
