"""The ``react`` policy: the prompt it renders, the replies it parses, its retry."""

from __future__ import annotations

import json
import re

import pytest
from aieng_agents import (
    CalculatorTool,
    ReActFormatError,
    ReActOptions,
    ReActPolicy,
    parse_react,
)
from aieng_agents._react import render_messages
from aieng_hookspecs.types import AgentState, Message, ToolCall, ToolSpec
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core import Kernel
from aieng_core.testing import ScriptedBackend
from aieng_core.testing import strategies as aist

CALC = CalculatorTool().aieng_tools()[0]
SEARCH = ToolSpec(name="search", description="Search the web.", parameters={
    "type": "object", "properties": {"query": {"type": "string"}, "k": {"type": "integer"}},
    "required": ["query"]})
TOOLS = (CALC, SEARCH)


def state(*messages: Message, tools: tuple[ToolSpec, ...] = TOOLS, step: int = 0
          ) -> AgentState:
    """An agent state with the given conversation (a user question by default)."""
    return AgentState(messages=messages or (Message(role="user", content="What is 2+2?"),),
                      tools=tools, step=step)


async def step(kernel: Kernel, replies: list[str], agent: AgentState,
               options: ReActOptions | None = None) -> tuple[object, ScriptedBackend]:
    """One policy step in a pipeline whose backend replies from a script."""
    backend = ScriptedBackend(replies)
    policy = ReActPolicy(options)
    async with kernel.compose({"react": policy, "llm": backend}):
        action = await policy.aieng_agent_step(agent)
    return action, backend


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_an_action_becomes_a_tool_call(aieng_kernel: Kernel) -> None:
    """``Action`` / ``Action Input`` become one tool call with a fresh id and the thought
    as the action's text; a made-up ``Observation`` after it is ignored."""
    reply = ('Thought: I should compute it.\nAction: calculate\n'
             'Action Input: {"expression": "2+2"}\nObservation: 5\nFinal Answer: 5')
    action, backend = await step(aieng_kernel, [reply], state())
    assert action.kind == "tool_calls" and action.text == "I should compute it."
    [call] = action.tool_calls
    assert (call.name, call.arguments) == ("calculate", {"expression": "2+2"})
    assert call.id.startswith("react-0-")
    [request] = backend.requests
    assert request.stop == ("\nObservation:",) and request.tools == ()


@pytest.mark.anyio
async def test_a_final_answer_is_the_answer(aieng_kernel: Kernel) -> None:
    """``Final Answer:`` ends the loop with the text after it (all its lines)."""
    action, _ = await step(aieng_kernel,
                           ["Thought: easy.\nFinal Answer: 4\nbecause 2+2=4"], state())
    assert (action.kind, action.text) == ("answer", "4\nbecause 2+2=4")


@pytest.mark.anyio
async def test_the_prompt_lists_the_tools_and_replays_the_transcript(
        aieng_kernel: Kernel) -> None:
    """The system prompt holds the format, each tool's description and arguments and the
    agent's own system prompt; past tool calls read as actions and results as
    observations (a text model knows no ``tool`` role)."""
    call = ToolCall(id="c1", name="calculate", arguments={"expression": "2+2"})
    agent = state(
        Message(role="system", content="Be terse."),
        Message(role="user", content="What is 2+2, plus 1?"),
        Message(role="assistant", content="Compute first.", tool_calls=(call,)),
        Message(role="tool", content="4", tool_call_id="c1"), step=1)
    _, backend = await step(aieng_kernel, ["Final Answer: 5"], agent)
    messages = backend.requests[0].messages
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    system = messages[0].content
    assert "Action Input:" in system and "Final Answer:" in system
    assert "- search: Search the web." in system and '"query": {"type": "string"}' in system
    assert "[calculate, search]" in system and system.endswith("Be terse.")
    assert messages[2].content == ('Thought: Compute first.\nAction: calculate\n'
                                   'Action Input: {"expression": "2+2"}')
    assert messages[3].content == "Observation: 4"


@pytest.mark.anyio
async def test_a_malformed_reply_is_retried_once_with_a_note(aieng_kernel: Kernel) -> None:
    """A reply in neither form is sent back with a note saying what was wrong; a valid
    second reply decides."""
    action, backend = await step(aieng_kernel, [
        "I think I'll use the calculator", 'Action: calculate\nAction Input: {"expression": "1"}'],
        state())
    assert action.kind == "tool_calls"
    assert len(backend.requests) == 2
    retry = backend.requests[1].messages
    assert retry[-2] == Message(role="assistant", content="I think I'll use the calculator")
    assert retry[-1].role == "user" and "did not follow the format" in retry[-1].content


@pytest.mark.anyio
async def test_still_malformed_the_raw_text_is_the_answer(aieng_kernel: Kernel) -> None:
    """After ``retries`` malformed replies, the last one's raw text is the answer (the
    model may have answered without the format)."""
    action, backend = await step(aieng_kernel, ["  It is four.  "], state(),
                                 ReActOptions(retries=2))
    assert (action.kind, action.text) == ("answer", "It is four.")
    assert len(backend.requests) == 3
    action, backend = await step(aieng_kernel, ["Four."], state(), ReActOptions(retries=0))
    assert (action.kind, action.text, len(backend.requests)) == ("answer", "Four.", 1)


@pytest.mark.anyio
async def test_an_unknown_tool_is_retried_naming_the_tools(aieng_kernel: Kernel) -> None:
    """An action naming a tool the agent lacks is corrected, the note listing the tools."""
    action, backend = await step(aieng_kernel, [
        "Action: python\nAction Input: {}", "Final Answer: 4"], state())
    assert action.kind == "answer"
    note = backend.requests[1].messages[-1].content
    assert "no tool 'python'" in note and "calculate, search" in note


@pytest.mark.parametrize(("text", "arguments"), [
    ('Action: calculate\nAction Input: ```json\n{"expression": "3*3"}\n```',
     {"expression": "3*3"}),
    ('action: `calculate`\naction input: {"expression": "1"} and some chatter',
     {"expression": "1"}),
    ("Action: calculate\nAction Input: 2 + 2", {"expression": "2 + 2"}),
    ('Action: calculate\nAction Input: "2 + 2"', {"expression": "2 + 2"}),
    ('**Action:** calculate\n**Action Input:** {"expression": "é"}', {"expression": "é"}),
    ("Action: search\nAction Input: {}", {}),
])
def test_tolerated_spellings(text: str, arguments: dict[str, object]) -> None:
    """Code fences, lower case, markdown bold, trailing chatter, and a bare value for a
    one-argument tool all parse."""
    action = parse_react(text, TOOLS)
    assert action.kind == "tool_calls" and action.tool_calls[0].arguments == arguments


@pytest.mark.parametrize("text", [
    "", "just text", "Action: search\nAction Input: two words",
    "Action: \nAction Input: {}", "Action: calculate", "Final answer is 4",
])
def test_malformed_replies_raise_a_format_error(text: str) -> None:
    """No action and no final answer, an unnamed tool, or a bare value for a tool with
    several arguments are format errors (``Action:`` alone is a call without arguments
    only for a named, known tool)."""
    if text == "Action: calculate":
        assert parse_react(text, TOOLS).tool_calls[0].arguments == {}
        return
    with pytest.raises(ReActFormatError):
        parse_react(text, TOOLS)


def test_the_first_of_action_and_final_answer_wins() -> None:
    """A Final Answer before an Action is the answer, and the reverse a tool call."""
    assert parse_react("Final Answer: 1\nAction: calculate", TOOLS).kind == "answer"
    assert parse_react("Action: calculate\nFinal Answer: 1", TOOLS).kind == "tool_calls"


def test_without_tools_only_an_answer_is_valid() -> None:
    """An agent without tools gets a prompt without actions; an action is an error."""
    assert parse_react("Final Answer: hi", ()).text == "hi"
    with pytest.raises(ReActFormatError, match="none: write a Final Answer"):
        parse_react("Action: calculate", ())


def test_call_ids_are_unique() -> None:
    """Each parsed call has its own id, even for the same reply at the same step."""
    ids = {parse_react("Action: search\nAction Input: {}", TOOLS, step=3).tool_calls[0].id
           for _ in range(50)}
    assert len(ids) == 50


@pytest.mark.anyio
async def test_an_unopened_policy_says_so() -> None:
    """Outside a pipeline the policy cannot generate, and says how to fix it."""
    with pytest.raises(RuntimeError, match="opens it first"):
        await ReActPolicy().aieng_agent_step(state())


@pytest.mark.anyio
async def test_a_loop_with_the_calculator(aieng_kernel: Kernel) -> None:
    """Policy, tool and observation close the loop: the second step sees the result."""
    backend = ScriptedBackend([
        'Thought: compute.\nAction: calculate\nAction Input: {"expression": "0.1+0.2"}',
        "Thought: done.\nFinal Answer: 0.3"])
    policy, tool = ReActPolicy(), CalculatorTool()
    messages = [Message(role="user", content="What is 0.1 + 0.2?")]
    async with aieng_kernel.compose({"react": policy, "llm": backend, "calc": tool}):
        first = await policy.aieng_agent_step(state(*messages))
        [call] = first.tool_calls
        result = tool.aieng_call_tool(call)
        assert result is not None
        messages += [Message(role="assistant", content=first.text, tool_calls=first.tool_calls),
                     Message(role="tool", content=result.content, tool_call_id=call.id)]
        second = await policy.aieng_agent_step(state(*messages, step=1))
    assert (second.kind, second.text) == ("answer", "0.3")
    assert backend.requests[1].messages[-1].content == "Observation: 0.3"


@pytest.mark.parametrize("options", [{"retries": 4}, {"retries": -1}, {"max_tokens": 0},
                                     {"temperature": -0.1}, {"model": None}])
def test_options_are_validated(options: dict[str, object]) -> None:
    """Options out of range or of the wrong type are refused."""
    with pytest.raises((ValueError, TypeError)):
        ReActOptions(**options)  # type: ignore[arg-type]


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=200) | st.builds(
    lambda name, value: f"Action: {name}\nAction Input: {json.dumps(value)}",
    st.sampled_from(["calculate", "search", "nope"]),
    st.dictionaries(st.text(max_size=5), st.integers()) | st.text(max_size=10)))
def test_any_reply_parses_or_raises_a_format_error(text: str) -> None:
    """Whatever the model writes, the parser gives a valid action or a format error."""
    try:
        action = parse_react(text, TOOLS)
    except ReActFormatError:
        return
    assert action.kind in ("answer", "tool_calls")
    assert all(call.name in ("calculate", "search") for call in action.tool_calls)


@pytest.mark.parametrize(("text", "arguments"), [
    ("Action: calculate\nAction Input: {'expression': '17 * 23'}", {"expression": "17 * 23"}),
    ('Action: calculate\nAction Input: `{"expression": "17*23"}`', {"expression": "17*23"}),
    ("Action: calculate\nAction Input: `17*23`", {"expression": "17*23"}),
])
def test_a_python_dict_or_inline_code_is_the_arguments(text: str,
                                                       arguments: dict[str, object]) -> None:
    """Small models write a Python dict (single quotes) or wrap the input in backticks: the
    arguments are the dict's, not its text given as a bare value."""
    action = parse_react(text, TOOLS)
    assert action.tool_calls[0].arguments == arguments


@pytest.mark.parametrize("text", ["{1: 2}", "{'a': 1, **x}", "{'a': (1, 2)}", "{" * 5000])
def test_a_dict_that_is_not_json_like_is_no_crash(text: str) -> None:
    """A Python literal with non-string keys, code, tuples or deep nesting is not taken as
    arguments: a bare value for a one-argument tool, as before, and never a crash."""
    action = parse_react(f"Action: calculate\nAction Input: {text}", TOOLS)
    assert action.tool_calls[0].arguments == {"expression": text}


_LABELS = re.compile(r"(?im)^[ \t*]*(thought|action|final|observation)")


@settings(max_examples=150, deadline=None)
@given(call=aist.tool_calls(), thought=st.text(max_size=40).filter(
    # "*" next to a label is markdown emphasis to the parser ("**Thought:** ..."), so a
    # thought that starts or ends with one loses it.
    lambda t: not _LABELS.search(t) and not t.strip().startswith("*")
    and not t.strip().endswith("*")))
def test_a_rendered_action_parses_back_to_the_same_call(call: ToolCall, thought: str) -> None:
    """Any tool call the policy writes into the transcript (``Action:`` / ``Action
    Input:``, after its thought) parses back to the same tool and the same arguments."""
    spec = ToolSpec(name=call.name, parameters={
        "type": "object", "properties": {name: {} for name in call.arguments}})
    agent = state(Message(role="user", content="go"),
                  Message(role="assistant", content=thought, tool_calls=(call,)),
                  tools=(spec,))
    rendered = render_messages(agent)[2].content
    action = parse_react(rendered, (spec,))
    [parsed] = action.tool_calls
    assert (parsed.name, parsed.arguments) == (call.name, call.arguments)
    assert action.text == thought.strip()


@pytest.mark.parametrize("after", [
    "\nFinal Answer: 4", "\nThought: now I wait", "\n\nI will wait for the observation.",
    "\nAction: search\nAction Input: {\"query\": \"x\"}",
])
def test_a_bare_value_ends_where_the_model_goes_on(after: str) -> None:
    """A bare Action Input is its first line: a Final Answer, a Thought or another Action
    after it (a model that writes both), or chatter, is not part of the argument."""
    action = parse_react(f"Action: calculate\nAction Input: 2 + 2{after}", TOOLS)
    assert action.kind == "tool_calls"
    assert action.tool_calls[0].arguments == {"expression": "2 + 2"}


def test_a_python_dict_with_chatter_after_it_is_the_arguments() -> None:
    """Trailing text after a single-quoted dict is ignored, as after a JSON object."""
    text = "Action: search\nAction Input: {'query': 'a } b', 'k': 3} and then I'll read"
    assert parse_react(text, TOOLS).tool_calls[0].arguments == {"query": "a } b", "k": 3}


@pytest.mark.parametrize("given_input", ["", "{}", "N/A", "nothing", "none", "42"])
def test_a_tool_without_parameters_takes_any_input_as_none(given_input: str) -> None:
    """A tool whose schema has no properties is called without arguments whatever the
    model wrote as its input (there is nothing else it can mean), not sent back with a
    note asking for a made-up argument."""
    ping = ToolSpec(name="ping", parameters={"type": "object"})
    action = parse_react(f"Action: ping\nAction Input: {given_input}", (ping, *TOOLS))
    assert (action.tool_calls[0].name, action.tool_calls[0].arguments) == ("ping", {})


@pytest.mark.parametrize(("given_input", "expression"), [
    ("42", "42"), ("3.50", "3.50"), ("true", "true"), ('"7 * 6"', "7 * 6")])
def test_a_bare_json_value_for_a_string_argument_is_its_text(given_input: str,
                                                             expression: str) -> None:
    """A bare number for a tool whose one argument is a string is that text (the
    calculator refuses a number where its schema says string)."""
    action = parse_react(f"Action: calculate\nAction Input: {given_input}", TOOLS)
    assert action.tool_calls[0].arguments == {"expression": expression}


def test_a_tool_name_in_another_case_is_that_tool() -> None:
    """``Action: Calculate`` calls ``calculate`` when no other tool has that name folded."""
    assert parse_react("Action: Calculate\nAction Input: 1", TOOLS).tool_calls[0].name == (
        "calculate")
    twins = (ToolSpec(name="Search"), ToolSpec(name="search"))
    with pytest.raises(ReActFormatError, match="no tool 'SEARCH'"):
        parse_react("Action: SEARCH", twins)


def test_native_tool_messages_are_replayed_as_actions_and_observations() -> None:
    """A conversation that already holds a native model's turn with two tool calls and
    their two results reads as one assistant turn with two actions, then one user turn
    with both observations in order; a conversation ending on results ends with them."""
    calls = (ToolCall(id="a", name="calculate", arguments={"expression": "1+1"}),
             ToolCall(id="b", name="search", arguments={"query": "ünï", "k": 2}))
    agent = state(Message(role="user", content="q"),
                  Message(role="assistant", content="", tool_calls=calls),
                  Message(role="tool", content="2", tool_call_id="a"),
                  Message(role="tool", content="found", tool_call_id="b"))
    messages = render_messages(agent)
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2].content == (
        'Action: calculate\nAction Input: {"expression": "1+1"}\n'
        'Action: search\nAction Input: {"query": "ünï", "k": 2}')
    assert messages[3].content == "Observation: 2\nObservation: found"


NUMBERS = ToolSpec(name="add", parameters={
    "type": "object", "properties": {"numbers": {"type": "array"}, "x": {"type": "number"}}})
ONE_NUMBER = ToolSpec(name="sqrt", parameters={
    "type": "object", "properties": {"x": {"type": "number"}}})


@pytest.mark.parametrize(("tool", "given_input"), [
    (NUMBERS, '{"x": NaN}'), (NUMBERS, '{"x": Infinity}'), (NUMBERS, '{"x": 1e999}'),
    (NUMBERS, '{"numbers": [1, -Infinity]}'), (NUMBERS, '{"x": "\\ud800"}'),
    (ONE_NUMBER, "NaN"), (ONE_NUMBER, "1e999"),
])
def test_values_json_cannot_carry_are_a_format_error(tool: ToolSpec, given_input: str) -> None:
    """Python's JSON reader takes NaN, Infinity, 1e999 and lone surrogates; no tool or API
    could be sent them, so the model is asked to write the input again."""
    with pytest.raises(ReActFormatError, match="JSON cannot carry"):
        parse_react(f"Action: {tool.name}\nAction Input: {given_input}", (tool,))
