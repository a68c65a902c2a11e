"""Tool calls from local models: the request's plan, the call automaton, the split of a
text into content and calls, the streamed content, the prompt, and generation end to end
on the tiny random model (fast) and on the shipped SmolLM2 (a few dozen tokens)."""

from __future__ import annotations

import random
from typing import Any

import attrs
import pytest
from _constraints import ALPHABET, walk
from _tiny import random_llama
from _tools import (
    ADD,
    HERMES,
    LINES,
    TEXTS,
    TOOLSETS,
    WEATHER,
    ask,
    block,
    check_calls,
    draw_calls,
    fed_in_pieces,
    finished,
    generate,
)
from aieng_hookspecs.types import Message, ToolCall, ToolSpec
from aieng_transformers import SchemaError, SmolLM2Backend, SmolLM2Options
from aieng_transformers._jsonschema import JsonMachine
from aieng_transformers._toolcalls import (
    CLOSE,
    OPEN,
    ToolPlan,
    ToolText,
    as_text_messages,
    split_calls,
    tool_plan,
)
from aieng_transformers._toolfsm import ToolCallConstraint, call_constraint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio

# -- the plan ------------------------------------------------------------------------------


def test_the_plan_reads_tool_choice_and_parallel_calls() -> None:
    """``tool_choice`` (OpenAI's strings, a name, or its function object) and
    ``parallel_tool_calls`` come from the metadata; a request without tools has no plan;
    what cannot be served is a ValueError naming the key."""
    tools = (WEATHER, ADD)
    assert tool_plan((), {}) is None
    assert tool_plan((), {"tool_choice": "none"}) is None
    assert tool_plan(tools, {}) == ToolPlan(tools, "auto", True)
    assert tool_plan(tools, {"tool_choice": "required", "parallel_tool_calls": False}) \
        == ToolPlan(tools, "required", False)
    named = tool_plan(tools, {"tool_choice": {"type": "function", "function": {"name": "add"}}})
    assert named is not None and named.choice == "add" and named.callable == (ADD,)
    none = tool_plan(tools, {"tool_choice": "none"})
    assert none is not None and not none.constrained
    bad = [((tools, {"tool_choice": "divide"}), "divide"),
           (((), {"tool_choice": "required"}), "lists no tools"),
           ((tools, {"tool_choice": 3}), "tool_choice"),
           ((tools, {"parallel_tool_calls": "yes"}), "parallel_tool_calls"),
           (((ADD, ADD), {}), "two tools share")]
    for (given_tools, metadata), words in bad:
        with pytest.raises(ValueError, match=words):
            tool_plan(given_tools, metadata)
    with pytest.raises(ValueError, match="not a constraint"):
        ToolCallConstraint(none)


def test_tool_plan_names_a_shared_name_among_many_tools() -> None:
    """Among 30,000 tools, two of one name are found without counting each name over the
    whole list (quadratic before: ~12 s); the smallest shared name is the one named."""
    many = tuple(ToolSpec(name=f"f{i}", description="", parameters={"type": "object"})
                 for i in range(30_000))
    with pytest.raises(ValueError, match="share the name 'add'"):
        tool_plan((*many, ADD, many[5], ADD), {})
    assert tool_plan(many, {}) == ToolPlan(many, "auto", True)


# -- the automaton -------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(tools=TOOLSETS, seed=st.integers(0, 2**32 - 1), slack=st.integers(0, 40),
       parallel=st.booleans(), named=st.booleans())
def test_walks_are_valid_calls(tools: tuple[ToolSpec, ...], seed: int, slack: int,
                               parallel: bool, named: bool) -> None:
    """Whatever the tools' parameters, every text the automaton lets through (under
    ``required`` or one tool's name, in a budget of its shortest plus ``slack``) splits
    into calls of the allowed tools whose arguments validate, one call when parallel
    calls are off, and no content."""
    rng = random.Random(seed)
    choice = rng.choice(tools).name if named else "required"
    plan = ToolPlan(tools, choice, parallel)
    machine = ToolCallConstraint(plan)
    text = walk(machine, rng, slack, LINES)
    content, calls = split_calls(text, plan)
    assert calls and content == ""
    check_calls(calls, plan.callable)
    assert parallel or len(calls) == 1
    assert {c.name for c in calls} <= {t.name for t in plan.callable}


@settings(max_examples=60, deadline=None)
@given(data=st.data(), tools=TOOLSETS, prefix=st.text(ALPHABET, max_size=12),
       spaced=st.booleans())
def test_written_calls_are_accepted_and_read_back(data: st.DataObject,
                                                  tools: tuple[ToolSpec, ...], prefix: str,
                                                  spaced: bool) -> None:
    """Calls with valid arguments (drawn from the raw parameters), written as the format
    says after any text, are accepted under ``auto``, and reading the text back gives
    the same names and arguments and the text before them as content."""
    plan = ToolPlan(tools, "auto", True)
    machine = ToolCallConstraint(plan)
    wanted = draw_calls(data, tools, most=2)
    text = prefix.replace("<", "") + "\n" + "\n".join(
        block(name, arguments, compact=True, spaced=spaced) for name, arguments in wanted)
    state = machine.feed(machine.start(), text)
    assert state is not None and machine.accepting(state), text
    content, calls = split_calls(text, plan)
    assert content == prefix.replace("<", "").rstrip()
    assert [(c.name, c.arguments) for c in calls] == wanted
    assert len({c.id for c in calls}) == len(calls)


def test_the_automaton_refuses_what_is_not_a_call() -> None:
    """A wrong name, a missing argument, text after a call or a second call when parallel
    calls are off are refused as they are written; ``auto`` takes text with a ``<`` that
    does not start a call, and ends after text or after a call."""
    plan = ToolPlan((WEATHER, ADD), "auto", True)
    machine = ToolCallConstraint(plan)
    start = machine.start()
    assert machine.accepting(start) and machine.min_chars(start) == 0
    for text in [f'{OPEN}\n{{"name": "sub"', f'{OPEN}\n{{"name": "add", "arguments": {{"a": 1}}}}',
                 block("add", {"a": 1, "b": 2}) + "\nThanks", f"{OPEN}x"]:
        assert machine.feed(start, text) is None, text
    for text in ["a < b and <tool_cal", block("add", {"a": 1, "b": 2}) + "\n",
                 "Let me add.\n" + block("add", {"a": 1, "b": 2}) + "\n"
                 + block("get_weather", {"city": "Oslo", "unit": "celsius"})]:
        state = machine.feed(start, text)
        assert state is not None and machine.accepting(state), text
    inside = machine.feed(start, f'{OPEN}\n{{"name": "add", "arguments": {{"a": 1, "b": 2}}}}')
    assert inside is not None and not machine.accepting(inside)
    assert machine.min_chars(inside) == len(CLOSE)  # the newline before it is optional
    single = ToolCallConstraint(ToolPlan((ADD,), "required", False))
    done = single.feed(single.start(), block("add", {"a": 1, "b": 2}))
    assert done is not None and single.complete(done) and single.feed(done, "\n") is None
    required = ToolCallConstraint(ToolPlan((ADD,), "required", True))
    assert required.feed(required.start(), "Sure") is None
    assert not required.accepting(required.start())
    least = block("add", {"a": 0, "b": 0}, compact=True, spaced=False).replace("\n", "")
    assert required.min_chars(required.start()) == len(least)


def test_auto_with_a_response_schema_is_the_document_or_calls() -> None:
    """With ``auto`` and a ``response_schema`` the output is the schema's document or
    calls, nothing else."""
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}},
              "required": ["answer"]}
    machine = ToolCallConstraint(ToolPlan((ADD,), "auto", True), JsonMachine(schema))
    start = machine.start()
    assert not machine.accepting(start)
    document = machine.feed(start, '{"answer": 42}')
    assert document is not None and machine.complete(document)
    assert machine.feed(start, "The answer") is None
    called = machine.feed(start, block("add", {"a": 40, "b": 2}))
    assert called is not None and machine.accepting(called)
    assert machine.min_chars(start) == len('{"answer":0}')


def test_each_tool_keeps_its_own_references() -> None:
    """Two tools defining the same ``$defs`` name differently, and a recursive one
    (``#``), as Pydantic writes them: each call's arguments follow its own tool's
    definitions."""
    item_a = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    item_b = {"type": "object", "properties": {"s": {"enum": ["x", "y"]}}, "required": ["s"]}
    first = ToolSpec(name="first", parameters={
        "$defs": {"Item": item_a}, "type": "object",
        "properties": {"item": {"$ref": "#/$defs/Item"}}, "required": ["item"]})
    second = ToolSpec(name="second", parameters={
        "definitions": {"Item": item_b}, "type": "object",
        "properties": {"item": {"$ref": "#/definitions/Item"}}, "required": ["item"]})
    tree = ToolSpec(name="tree", parameters={
        "type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"},
                                                  "maxItems": 2},
                                         "enum": {"const": {"$ref": "#"}}},
        "required": ["kids", "enum"]})
    tools = (first, second, tree)
    plan = ToolPlan(tools, "required", True)
    machine = ToolCallConstraint(plan)
    good = [block("first", {"item": {"n": 3}}), block("second", {"item": {"s": "y"}}),
            block("tree", {"kids": [{"kids": [], "enum": {"$ref": "#"}}],
                           "enum": {"$ref": "#"}}, compact=True)]  # (data written compactly)
    for text in good:
        state = machine.feed(machine.start(), text)
        assert state is not None and machine.accepting(state), text
    for text in [block("first", {"item": {"s": "y"}}), block("second", {"item": {"n": 3}})]:
        assert machine.feed(machine.start(), text) is None, text
    rng = random.Random(7)
    for _ in range(30):
        check_calls(split_calls(walk(machine, rng, 30, LINES), plan)[1], tools)


def test_parameters_outside_the_subset_name_the_tool() -> None:
    """A tool whose parameters use a keyword constrained decoding does not enforce is
    refused before generation, with the tool's position and name."""
    odd = ToolSpec(name="odd", parameters={"type": "object", "properties": {
        "x": {"not": {"type": "string"}}}})
    with pytest.raises(SchemaError, match=r"^tools\[1\] \(odd\) parameters: #/properties/x"):
        ToolCallConstraint(ToolPlan((ADD, odd), "required", True))


# -- from text to content and calls --------------------------------------------------------


def test_unfinished_calls_are_kept_as_text() -> None:
    """A text whose call was cut (by ``max_tokens`` or a stop string) or names another
    tool gives no calls and loses nothing: it is the content, whole; ``none`` never
    parses calls."""
    plan = ToolPlan((ADD,), "auto", True)
    for text in ["Sure. " + OPEN + '\n{"name": "add", "argu',
                 block("add", {"a": 1, "b": 2}) + "\n" + OPEN,
                 block("sub", {"a": 1}), "no calls < here"]:
        assert split_calls(text, plan) == (text, ())
    whole = block("add", {"a": 1, "b": 2})
    assert split_calls(whole, ToolPlan((ADD,), "none", True)) == (whole, ())


def test_arguments_holding_the_tags_are_read() -> None:
    """An argument string holding ``<tool_call>`` or ``</tool_call>`` (a model quoting the
    format) is a call the automaton lets through; reading the text gives that call, not
    the whole text as content."""
    echo = ToolSpec(name="echo", parameters={
        "type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]})
    plan = ToolPlan((echo, ADD), "auto", True)
    machine = ToolCallConstraint(plan)
    said = [f"a {CLOSE} b", f"{OPEN}\n", f'{CLOSE}\n{OPEN}\n{{"name": "add"}}']
    text = "Quoting.\n" + "\n".join(block("echo", {"s": s}) for s in said) + "\n" \
        + block("add", {"a": 1, "b": 2})
    state = machine.feed(machine.start(), text)
    assert state is not None and machine.accepting(state)
    content, calls = split_calls(text, plan)
    assert content == "Quoting."
    assert [(c.name, c.arguments) for c in calls] == [
        *[("echo", {"s": s}) for s in said], ("add", {"a": 1, "b": 2})]
    stream = ToolText(plan)
    assert finished(stream, fed_in_pieces(stream, text, [3]), text, plan)[0] == ""


@settings(max_examples=200, deadline=None)
@given(parts=TEXTS, cuts=st.lists(st.integers(1, 7), min_size=1, max_size=40))
def test_streamed_content_is_the_content(parts: tuple[str, list[tuple[int, int]], bool],
                                         cuts: list[int]) -> None:
    """However the text arrives in pieces, the pieces a stream shows plus what it shows at
    the end are the content of a text with calls (nothing of a call is ever shown) and
    the whole text of one without (a cut call included)."""
    prefix, numbers, cut = parts
    plan = ToolPlan((ADD,), "auto", True)
    text = prefix + "".join("\n" + block("add", {"a": a, "b": b}) for a, b in numbers)
    if cut and numbers:
        text = text[:-3]
    stream = ToolText(plan)
    shown = fed_in_pieces(stream, text, cuts)
    assert OPEN not in "".join(shown)
    finished(stream, shown, text, plan)


# -- prompts -------------------------------------------------------------------------------


def test_tools_are_written_into_templates_without_tool_support() -> None:
    """Without a template that renders tools, the listing joins the system message (or
    opens the conversation), an assistant's calls become blocks that read back as the
    same calls, and a tool's result is a user turn in ``<tool_response>`` tags."""
    call = ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2})
    conversation = [Message("system", "Be brief."), Message("user", "1 + 2?"),
                    Message("assistant", "Adding.", tool_calls=(call,)),
                    Message("tool", "3", tool_call_id="c1")]
    plan = ToolPlan((ADD, WEATHER), "add", True)
    out = as_text_messages(conversation, plan)
    assert [m.role for m in out] == ["system", "user", "assistant", "user"]
    assert out[0].content.startswith("Be brief.\n\n")
    assert '"name": "get_weather"' in out[0].content and "Call the function add." in out[0].content
    assert out[3].content == "<tool_response>\n3\n</tool_response>"
    content, calls = split_calls(out[2].content, plan)
    assert content == "Adding." and [(c.name, c.arguments) for c in calls] == [
        ("add", {"a": 1, "b": 2})]
    assert as_text_messages([Message("user", "hi")], plan)[0].role == "system"


def test_a_template_with_tool_support_renders_them_itself(tmp_path: Any) -> None:
    """A tokenizer template that renders tools in the ``<tool_call>`` format (Hermes,
    Qwen) gets the tools and the earlier calls as ``transformers`` passes them."""
    backend = SmolLM2Backend(SmolLM2Options(path=str(random_llama(tmp_path, chat_template=HERMES))))
    lm = backend.load()
    assert lm.template_tool_format == "hermes" and lm.tool_format == "hermes"
    call = ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2})
    plan = tool_plan((ADD,), {})
    text = lm.render([Message("user", "1 + 2?"), Message("assistant", "", tool_calls=(call,)),
                      Message("tool", "3", tool_call_id="c1")], plan)
    assert text.startswith('<|im_start|>system\n<tools>{"type": "function"')
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>' in text
    assert "<|im_start|>tool\n3<|im_end|>" in text
    plain = lm.render([Message("user", "hi")])
    assert "<tools>" not in plain


# -- generation ----------------------------------------------------------------------------


@pytest.mark.parametrize("tool_format", ["hermes", "llama3", "mistral", "mistral-v11"])
@settings(max_examples=16, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tools=TOOLSETS, seed=st.integers(0, 2**16), temperature=st.sampled_from([0.0, 1.0]),
       parallel=st.booleans())
async def test_the_random_model_always_calls_validly(format_backends: dict[str, SmolLM2Backend],
                                                     tool_format: str,
                                                     tools: tuple[ToolSpec, ...], seed: int,
                                                     temperature: float,
                                                     parallel: bool) -> None:
    """A random model under ``required`` (within a budget of its shortest call plus 40
    tokens of one byte each), in either tool format, always ends with valid calls and
    finish reason ``tool_calls``; streaming the same seeded request shows no text and
    ends with the same calls on its last delta."""
    backend = format_backends[tool_format]
    plan = ToolPlan(tools, "required", parallel, tool_format)  # type: ignore[arg-type]
    machine = call_constraint(plan)
    budget = machine.min_chars(machine.start()) + 40  # (mistral: a marker is one token)
    request = ask("Call a tool.", tools=tools, seed=seed, temperature=temperature,
                  max_tokens=budget, metadata={"tool_choice": "required",
                                               "parallel_tool_calls": parallel})
    completion = await generate(backend, request)
    assert completion.finish_reason == "tool_calls" and completion.text == ""
    check_calls(completion.tool_calls, tools)
    assert parallel or len(completion.tool_calls) == 1
    stream = backend.aieng_stream(request)
    assert stream is not None
    deltas = [delta async for delta in stream]
    assert "".join(d.text for d in deltas) == ""
    assert deltas[-1].finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in deltas[-1].tool_calls] == [
        (c.name, c.arguments) for c in completion.tool_calls]
    assert stream.tool_calls == deltas[-1].tool_calls


async def test_streamed_logprobs_of_held_calls_are_not_lost(
        long_backend: SmolLM2Backend) -> None:
    """The log-probabilities of tokens a stream holds back (call text, never shown) reach
    the next delta, so the deltas' sum is the completion's (regression: a stream of calls
    only carried its last step's)."""
    request = ask("Add.", tools=(ADD,), max_tokens=80,
                  metadata={"tool_choice": "required", "logprobs": True})
    stream = long_backend.aieng_stream(request)
    assert stream is not None
    deltas = [delta async for delta in stream]
    assert deltas[-1].finish_reason == "tool_calls" and stream.logprobs is not None
    total = sum(d.logprob for d in deltas if d.logprob is not None)
    assert total == pytest.approx(sum(lp.logprob for lp in stream.logprobs), abs=1e-3)


async def test_batched_decoding_splits_calls_too(long_backend: SmolLM2Backend) -> None:
    """With ``max_batch`` > 1 the batched path returns the calls greedy decoding alone
    returns, and a request without tools beside it is plain text."""
    alone = long_backend
    batched = SmolLM2Backend(attrs.evolve(long_backend.options, max_batch=4))
    request = ask("Add.", tools=(ADD, WEATHER), max_tokens=80,
                  metadata={"tool_choice": "required"})
    expected = await generate(alone, request)
    await batched.aieng_pipeline_open()
    try:
        got = await generate(batched, request)
        plain = await generate(batched, ask("Hi.", max_tokens=4))
    finally:
        await batched.aieng_pipeline_close()
    assert got.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in got.tool_calls] == [
        (c.name, c.arguments) for c in expected.tool_calls]
    assert plain.tool_calls == () and plain.finish_reason in ("stop", "length")


async def test_bad_tool_requests_fail_before_generating(long_backend: SmolLM2Backend) -> None:
    """A ``tool_choice`` naming no tool, a regex with tools, or parameters outside the
    subset are the caller's ValueError, raised before any token."""
    for request in [ask("x", tools=(ADD,), metadata={"tool_choice": "sub"}),
                    ask("x", tools=(ADD,), metadata={"regex": "a+"}),
                    ask("x", tools=(ToolSpec(name="odd", parameters={"not": {}}),))]:
        with pytest.raises(ValueError):
            await generate(long_backend, request)


async def test_smollm2_calls_tools(shipped_smollm2: SmolLM2Backend) -> None:
    """Needs the shipped model: SmolLM2-135M (which was not trained on tool use and has a
    template without tools) asked with ``required`` writes calls of the listed tools with
    valid arguments, also with one tool named and with parallel calls (which it repeats
    until the budget leaves no room for another); the streamed answer ends with the same
    calls; under ``none`` it answers in text."""
    tools = (WEATHER, ADD)
    for question, choice, parallel in [("What is the weather in Paris?", "required", False),
                                       ("What is 12 plus 30?", "required", True),
                                       ("What is the weather in Oslo?", "get_weather", False)]:
        request = ask(question, tools=tools, max_tokens=100, metadata={
            "tool_choice": choice, "parallel_tool_calls": parallel})
        completion = await generate(shipped_smollm2, request)
        assert completion.finish_reason == "tool_calls", completion
        check_calls(completion.tool_calls, tools)
        if choice != "required":
            assert {c.name for c in completion.tool_calls} == {choice}
        assert parallel or len(completion.tool_calls) == 1
        stream = shipped_smollm2.aieng_stream(request)
        assert stream is not None
        deltas = [delta async for delta in stream]
        assert [(c.name, c.arguments) for c in deltas[-1].tool_calls] == [
            (c.name, c.arguments) for c in completion.tool_calls]
    answer = await generate(shipped_smollm2, ask("What is 12 plus 30?", tools=tools,
                                                 max_tokens=12,
                                                 metadata={"tool_choice": "none"}))
    assert answer.tool_calls == () and answer.text
