"""Tool calls in the llama3 and Mistral formats: the automata, the split of a text into
content and calls, the streamed content, the templates, and generation on the tiny random
model and on the shipped SmolLM2."""

from __future__ import annotations

import json
import random
from typing import Any

import attrs
import pytest
from _constraints import ALPHABET, walk
from _tiny import random_llama
from _tools import (
    ADD,
    LINES,
    MISTRAL,
    TEXTS,
    TOOLSETS,
    WEATHER,
    ask,
    check_calls,
    draw_calls,
    fed_in_pieces,
    finished,
    generate,
)
from aieng_hookspecs.types import Message, ToolCall, ToolSpec
from aieng_transformers import SmolLM2Backend, SmolLM2Options
from aieng_transformers._jsonschema import JsonMachine
from aieng_transformers._toolcalls import (
    ARGS,
    CALL_ID,
    MARK,
    MARKER,
    MARKS,
    OPEN,
    ToolPlan,
    ToolText,
    as_text_messages,
    mistral_id,
    split_calls,
    template_messages,
    tool_plan,
)
from aieng_transformers._toolfsm import (
    BareCallConstraint,
    MarkedCallConstraint,
    NamedCallConstraint,
    call_constraint,
)
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio


# -- the llama3 format ---------------------------------------------------------------------


def bare(name: str, arguments: Any, *, compact: bool = False) -> str:
    """A call as the llama3 format writes it."""
    inner = json.dumps(arguments, separators=(",", ":") if compact else None)
    return f'{{"name": {json.dumps(name)}, "parameters": {inner}}}'


@settings(max_examples=60, deadline=None)
@given(tools=TOOLSETS, seed=st.integers(0, 2**32 - 1), slack=st.integers(0, 40),
       parallel=st.booleans(), choice=st.sampled_from(["auto", "required", "named"]))
def test_llama3_walks_are_valid_calls_or_text(tools: tuple[ToolSpec, ...], seed: int,
                                              slack: int, parallel: bool,
                                              choice: str) -> None:
    """Whatever the tools' parameters, every text the llama3 automaton lets through is
    either calls of the allowed tools whose arguments validate (no content; one call when
    parallel calls are off) or, under ``auto`` only, text not starting with ``{``."""
    rng = random.Random(seed)
    named = rng.choice(tools).name if choice == "named" else choice
    plan = ToolPlan(tools, named, parallel, "llama3")
    machine = call_constraint(plan)
    text = walk(machine, rng, slack, LINES)
    content, calls = split_calls(text, plan)
    if choice == "auto" and not text.startswith("{"):
        assert calls == () and content == text
        return
    assert calls and content == ""
    check_calls(calls, plan.callable)
    assert parallel or len(calls) == 1


@settings(max_examples=60, deadline=None)
@given(data=st.data(), tools=TOOLSETS, spaced=st.booleans())
def test_llama3_written_calls_are_accepted_and_read_back(data: st.DataObject,
                                                         tools: tuple[ToolSpec, ...],
                                                         spaced: bool) -> None:
    """Calls with valid arguments written in the llama3 format, separated by ``; `` or
    ``;``, are accepted under ``auto`` and read back as the same names and arguments."""
    plan = ToolPlan(tools, "auto", True, "llama3")
    machine = call_constraint(plan)
    wanted = draw_calls(data, tools, most=3)
    text = ("; " if spaced else ";").join(bare(name, arguments, compact=True)
                                          for name, arguments in wanted)
    state = machine.feed(machine.start(), text)
    assert state is not None and machine.accepting(state), text
    content, calls = split_calls(text, plan)
    assert content == "" and [(c.name, c.arguments) for c in calls] == wanted


def test_llama3_automaton_takes_text_or_calls() -> None:
    """Under ``auto`` an answer is text unless its first character is ``{``, then calls;
    a wrong name, text after a call, a second call when parallel calls are off, and
    text under ``required`` are refused as they are written; ``auto`` beside a
    ``response_schema`` is refused (both would be bare objects)."""
    plan = ToolPlan((WEATHER, ADD), "auto", True, "llama3")
    machine = call_constraint(plan)
    assert isinstance(machine, BareCallConstraint)
    start = machine.start()
    assert machine.accepting(start) and machine.min_chars(start) == 0
    for text in ["The weather {is} fine.", " {not a call", bare("add", {"a": 1, "b": 2}),
                 bare("add", {"a": 1, "b": 2}) + "; " + bare("get_weather", {
                     "city": "Oslo", "unit": "celsius"})]:
        state = machine.feed(start, text)
        assert state is not None and machine.accepting(state), text
    for text in ['{"name": "sub"', "{x", bare("add", {"a": 1, "b": 2}) + " Thanks",
                 bare("add", {"a": 1, "b": 2}) + ";;", '{"name": "add", "arguments": {']:
        assert machine.feed(start, text) is None, text
    inside = machine.feed(start, bare("add", {"a": 1, "b": 2}) + ";")
    assert inside is not None and not machine.accepting(inside)
    # after ";" the space is optional: the least is the shortest call of the tools
    assert machine.min_chars(inside) == len('{"name":"add","parameters":{"a":0,"b":0}}')
    single = call_constraint(ToolPlan((ADD,), "required", False, "llama3"))
    assert single.feed(single.start(), "Sure") is None and not single.accepting(single.start())
    done = single.feed(single.start(), bare("add", {"a": 1, "b": 2}))
    assert done is not None and single.complete(done) and single.feed(done, ";") is None
    schema = JsonMachine({"type": "object", "properties": {"x": {"type": "integer"}}})
    with pytest.raises(ValueError, match="cannot be told apart"):
        call_constraint(plan, schema)
    assert isinstance(call_constraint(attrs.evolve(plan, choice="required"), schema),
                      BareCallConstraint)


def test_llama3_unfinished_calls_are_kept_as_text() -> None:
    """A cut call, a call of another tool or a bad separator give no calls and the text
    whole; text is content; ``none`` never parses calls."""
    plan = ToolPlan((ADD,), "auto", True, "llama3")
    whole = bare("add", {"a": 1, "b": 2})
    for text in [whole[:-2], whole + "; " + whole[:-1], bare("sub", {"a": 1}), whole + " ;",
                 whole + "\n", "Three."]:
        assert split_calls(text, plan) == (text, ())
    assert split_calls(whole, ToolPlan((ADD,), "none", True, "llama3")) == (whole, ())


BARE_TEXTS = st.one_of(st.text(LINES, max_size=20).filter(lambda t: not t.startswith("{")),
                       st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)),
                                min_size=1, max_size=3).map(
                           lambda numbers: "; ".join(bare("add", {"a": a, "b": b})
                                                     for a, b in numbers)))


@settings(max_examples=150, deadline=None)
@given(text=BARE_TEXTS, cut=st.booleans(), cuts=st.lists(st.integers(1, 7), min_size=1,
                                                         max_size=40))
def test_llama3_streamed_content_is_the_content(text: str, cut: bool, cuts: list[int]) -> None:
    """However a llama3 text arrives, a stream shows nothing of calls and all of text (a
    cut call included, at the end)."""
    plan = ToolPlan((ADD,), "auto", True, "llama3")
    if cut and text.startswith("{"):
        text = text[:-3]
    stream = ToolText(plan)
    shown = fed_in_pieces(stream, text, cuts)
    rest, calls = finished(stream, shown, text, plan)
    if calls:
        assert "".join(shown) == "" and rest == ""


LLAMA3 = (
    "{%- if tools %}<|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"
    "Answer a function call as JSON in the format "
    '{"name": function name, "parameters": dictionary of arguments}.\n'
    "{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|eot_id|>{% endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>\n\n"
    "{{ m.content }}<|eot_id|>"
    "{%- elif m.tool_calls %}"
    "{%- if m.tool_calls | length != 1 %}{{ raise_exception('one call per turn') }}{% endif %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{{ '{\"name\": \"' + m.tool_calls[0].function.name + '\", ' }}"
    "{{- '\"parameters\": ' }}{{ m.tool_calls[0].function.arguments | tojson }}}<|eot_id|>"
    "{%- else %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{% endif %}")


def test_a_llama3_template_sets_the_format_and_renders_calls(tmp_path: Any) -> None:
    """A template in Llama 3's tool format is detected (``tool_format = "auto"``): it
    gets the tools, an assistant turn of two calls as two turns of one (its limit) and
    results in the ``ipython`` role; requests get llama3 plans. ``tool_format = "hermes"``
    on the same model writes tools into the text in the hermes format instead."""
    folder = random_llama(tmp_path, chat_template=LLAMA3)
    lm = SmolLM2Backend(SmolLM2Options(path=str(folder))).load()
    assert lm.template_tool_format == "llama3" and lm.tool_format == "llama3"
    calls = (ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2}),
             ToolCall(id="c2", name="add", arguments={"a": 3, "b": 4}))
    conversation = [Message("user", "1 + 2 and 3 + 4?"),
                    Message("assistant", "", tool_calls=calls),
                    Message("tool", "3", tool_call_id="c1"),
                    Message("tool", "7", tool_call_id="c2")]
    plan = tool_plan((ADD,), {}, format=lm.tool_format)
    assert plan is not None and plan.format == "llama3"
    text = lm.render(conversation, plan)
    assert "Environment: ipython" in text and '"name": "add"' in text
    assert text.count("<|start_header_id|>assistant<|end_header_id|>\n\n"
                      '{"name": "add", "parameters": ') == 2
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n7<|eot_id|>" in text
    hermes = SmolLM2Backend(SmolLM2Options(path=str(folder), tool_format="hermes")).load()
    assert hermes.tool_format == "hermes"
    written = hermes.render(conversation, tool_plan((ADD,), {}, format="hermes"))
    assert "Environment: ipython" not in written and OPEN in written
    assert "<tool_response>\n7\n</tool_response>" in written


def test_llama3_calls_are_written_into_templates_without_tool_support() -> None:
    """Without a template in its format, the llama3 listing asks for bare JSON with
    ``parameters`` and earlier calls are written that way, separated by ``; ``."""
    call = ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2})
    plan = ToolPlan((ADD,), "required", True, "llama3")
    out = as_text_messages([Message("user", "1 + 2?"),
                            Message("assistant", "", tool_calls=(call, call))], plan)
    assert '"parameters"' in out[0].content and OPEN not in out[0].content
    assert out[2].content == bare("add", {"a": 1, "b": 2}) + "; " + bare("add", {"a": 1, "b": 2})
    assert [(c.name, c.arguments) for c in split_calls(out[2].content, plan)[1]] == [
        ("add", {"a": 1, "b": 2})] * 2


async def test_smollm2_calls_tools_in_llama3(shipped_smollm2: SmolLM2Backend,
                                            smollm2_cache: Any) -> None:
    """Needs the shipped model: SmolLM2-135M with ``tool_format = "llama3"`` (its
    template has no tools: the listing is written into the system message) calls the
    tool it is asked for with valid arguments, alone and streamed."""
    backend = SmolLM2Backend(SmolLM2Options(cache_dir=str(smollm2_cache), tool_format="llama3"))
    tools = (WEATHER, ADD)
    request = ask("What is the weather in Paris?", tools=tools, max_tokens=60,
                  metadata={"tool_choice": "required", "parallel_tool_calls": False})
    completion = await generate(backend, request)
    assert completion.finish_reason == "tool_calls", completion
    check_calls(completion.tool_calls, tools)
    assert len(completion.tool_calls) == 1
    stream = backend.aieng_stream(request)
    assert stream is not None
    deltas = [delta async for delta in stream]
    assert [(c.name, c.arguments) for c in deltas[-1].tool_calls] == [
        (c.name, c.arguments) for c in completion.tool_calls]


# -- the mistral format --------------------------------------------------------------------

#: What a mistral walk may write: the lines' characters and the markers (weighted, so walks
#: under ``auto`` reach calls too).
MARKED = [*LINES, *[MARK] * 20, *[MARKS[ARGS]] * 10, *[MARKS[CALL_ID]] * 5]


def marked(*calls: tuple[str, Any], spaced: bool = True, compact: bool = False) -> str:
    """Calls as the mistral format writes them (the marker as the decoded text shows it);
    ``spaced``: a space after the marker and in the call objects; ``compact``: the
    arguments without spaces (``enum`` / ``const`` data is written compactly)."""
    between = (", ", ": ") if spaced else (",", ":")
    items = between[0].join(
        f'{{"name"{between[1]}{json.dumps(name)},{" " if spaced else ""}"arguments"{between[1]}'
        f'{json.dumps(arguments, separators=(",", ":") if compact else None)}}}'
        for name, arguments in calls)
    return f"{MARKER}{' ' if spaced else ''}[{items}]"


def named(*calls: tuple[str, Any], ids: tuple[str, ...] = ()) -> str:
    """Calls as the mistral-v11 format writes them (markers as the decoded text shows them),
    each with the id of ``ids`` at its place, if any."""
    return "".join(
        f"{MARKER}{name}{CALL_ID + ids[i] if i < len(ids) else ''}{ARGS}"
        f"{json.dumps(arguments, separators=(',', ':'))}"
        for i, (name, arguments) in enumerate(calls))


def as_read(text: str) -> str:
    """A text of the automaton (marker tokens read as MARKS) as decoding shows it."""
    for marker, mark in MARKS.items():
        text = text.replace(mark, marker)
    return text


def as_fed(text: str) -> str:
    """A decoded text as the automaton reads its tokens (markers as MARKS)."""
    for marker, mark in MARKS.items():
        text = text.replace(marker, mark)
    return text


@pytest.mark.parametrize("tool_format", ["mistral", "mistral-v11"])
@settings(max_examples=60, deadline=None)
@given(tools=TOOLSETS, seed=st.integers(0, 2**32 - 1), slack=st.integers(0, 40),
       parallel=st.booleans(), choice=st.sampled_from(["auto", "required", "named"]))
def test_mistral_walks_are_valid_calls_or_text(tool_format: str, tools: tuple[ToolSpec, ...],
                                               seed: int, slack: int, parallel: bool,
                                               choice: str) -> None:
    """Whatever the tools' parameters, every text either mistral automaton lets through
    is text (under ``auto``; it never spells the marker out nor holds another marker) or
    text, the marker and calls of the allowed tools whose arguments validate (one call
    when parallel calls are off; no text under ``required`` or a name)."""
    rng = random.Random(seed)
    choice = rng.choice(tools).name if choice == "named" else choice
    plan = ToolPlan(tools, choice, parallel, tool_format)  # type: ignore[arg-type]
    machine = call_constraint(plan)
    assert isinstance(machine, MarkedCallConstraint if tool_format == "mistral"
                      else NamedCallConstraint)
    text = walk(machine, rng, slack, MARKED)
    content, calls = split_calls(as_read(text), plan)
    if MARK not in text:
        assert choice == "auto" and calls == () and content == text and MARKER not in text
        assert not set(MARKS.values()).intersection(text)
        return
    assert calls and content == text.partition(MARK)[0].rstrip()
    assert not set(MARKS.values()).intersection(content)
    assert choice in ("auto", "required") or {c.name for c in calls} == {choice}
    assert choice == "auto" or content == ""
    check_calls(calls, plan.callable)
    assert parallel or len(calls) == 1


IDS = st.lists(st.text("abcXYZ0189", min_size=9, max_size=9), max_size=3)


@pytest.mark.parametrize("tool_format", ["mistral", "mistral-v11"])
@settings(max_examples=60, deadline=None)
@given(data=st.data(), tools=TOOLSETS, prefix=st.text(ALPHABET, max_size=12),
       spaced=st.booleans(), ids=IDS)
def test_mistral_written_calls_are_accepted_and_read_back(
        tool_format: str, data: st.DataObject, tools: tuple[ToolSpec, ...], prefix: str,
        spaced: bool, ids: list[str]) -> None:
    """Calls with valid arguments written in either mistral format after any text
    (``mistral``: the marker, an optional space, the array with or without spaces;
    ``mistral-v11``: each call's marker, name, optional id and arguments) are accepted
    under ``auto`` and read back as the same names and arguments (and the ids written),
    the text as content."""
    prefix = prefix.replace("[", "")  # (no spelled-out marker in the text)
    plan = ToolPlan(tools, "auto", True, tool_format)  # type: ignore[arg-type]
    machine = call_constraint(plan)
    wanted = draw_calls(data, tools, most=3)
    text = prefix + (marked(*wanted, spaced=spaced, compact=True) if tool_format == "mistral"
                     else named(*wanted, ids=tuple(ids)))
    state = machine.feed(machine.start(), as_fed(text))
    assert state is not None and machine.accepting(state), text
    assert machine.complete(state) == (tool_format == "mistral")
    content, calls = split_calls(text, plan)
    assert content == prefix.rstrip() and [(c.name, c.arguments) for c in calls] == wanted
    if tool_format == "mistral-v11":
        assert [c.id for c in calls[:len(ids)]] == ids[:len(calls)]


def test_mistral_automaton_refuses_what_is_not_calls() -> None:
    """The marker spelled out in text, the marker inside an argument, an empty array,
    text after the array, a second call when parallel calls are off, a wrong name, and
    text under ``required`` are refused as they are written; ``auto`` beside a
    ``response_schema`` is the document or calls (the marker tells them apart)."""
    plan = ToolPlan((WEATHER, ADD), "auto", True, "mistral")
    machine = call_constraint(plan)
    start = machine.start()
    assert machine.accepting(start) and machine.min_chars(start) == 0
    for text in ["The weather [is] fine.", "[TOOL_CALL]", "Sure. " + marked(("add", {
            "a": 1, "b": 2})), marked(("add", {"a": 1, "b": 2}), ("get_weather", {
                "city": "Oslo", "unit": "celsius"}), spaced=False)]:
        state = machine.feed(start, as_fed(text))
        assert state is not None and machine.accepting(state), text
    # (as the automaton reads tokens: MARKER here is the marker spelled out in letters)
    for text in [MARKER, f"x {MARKER}", MARK + "[]", as_fed(marked(("add", {"a": 1, "b": 2})))
                 + " ", as_fed(marked(("sub", {"a": 1}))), MARK + MARK,
                 MARK + '[{"name": "get_weather", "arguments": {"city": "' + MARK]:
        assert machine.feed(start, text) is None, text
    cut = machine.feed(start, as_fed(marked(("add", {"a": 1, "b": 2}))[:-1]))
    assert cut is not None and not machine.accepting(cut) and machine.min_chars(cut) == 1
    single = call_constraint(ToolPlan((ADD,), "required", False, "mistral"))
    first = single.start()
    assert single.feed(first, "Sure") is None and not single.accepting(first)
    assert single.min_chars(first) == 1 + len('[{"name":"add","arguments":{"a":0,"b":0}}]')
    assert single.feed(first, as_fed(marked(("add", {"a": 1, "b": 2}),
                                            ("add", {"a": 3, "b": 4})))) is None
    schema = JsonMachine({"type": "object", "properties": {"x": {"type": "integer"}},
                          "required": ["x"]})
    either = call_constraint(plan, schema)
    for text in ['{"x": 1}', marked(("add", {"a": 1, "b": 2}))]:
        state = either.feed(either.start(), as_fed(text))
        assert state is not None and either.complete(state), text
    assert either.feed(either.start(), "Hi") is None
    assert not either.accepting(either.start())


def test_mistral_unfinished_calls_are_kept_as_text() -> None:
    """A cut array, a call of another tool, an empty array or text after the array give
    no calls and the text whole; ``none`` never parses calls."""
    plan = ToolPlan((ADD,), "auto", True, "mistral")
    whole = marked(("add", {"a": 1, "b": 2}))
    for text in [whole[:-1], "Hi " + whole[:-3], marked(("sub", {"a": 1})), MARKER + " []",
                 whole + " Thanks", MARKER, f'{MARKER}{{"name": "add", "arguments": {{}}}}']:
        assert split_calls(text, plan) == (text, ())
    assert split_calls(whole, ToolPlan((ADD,), "none", True, "mistral")) == (whole, ())


def test_mistral_v11_automaton_refuses_what_is_not_calls() -> None:
    """In ``mistral-v11``: a name no tool has (or a prefix of one), arguments without
    their marker, an id of eight characters or of other characters, a marker in text or
    inside an argument, text after a call, a second call when parallel calls are off
    and text under ``required`` are refused as they are written; a call with or without
    an id, and several calls, are taken."""
    plan = ToolPlan((WEATHER, ADD), "auto", True, "mistral-v11")
    machine = call_constraint(plan)
    assert isinstance(machine, NamedCallConstraint)
    start = machine.start()
    one = ("add", {"a": 1, "b": 2})
    for text in ["Hi.", "Sure. " + named(one), named(one, one, ids=("abcdefghi",)),
                 named(("get_weather", {"city": "Oslo", "unit": "celsius"}))]:
        state = machine.feed(start, as_fed(text))
        assert state is not None and machine.accepting(state), text
    args, call_id = MARKS[ARGS], MARKS[CALL_ID]
    for text in [MARK + "sub" + args, MARK + "ad" + args, MARK + "add{", MARK + "add" + call_id
                 + "abcdefgh" + args, MARK + "add" + call_id + "abcd-fghi", "x" + args,
                 "x" + call_id, MARK + 'get_weather' + args + '{"city":"' + args,
                 as_fed(named(one)) + " ", MARKER, MARK + "add" + call_id + "abcdefghi"
                 + call_id]:
        assert machine.feed(start, text) is None, text
    single = call_constraint(ToolPlan((ADD,), "required", False, "mistral-v11"))
    first = single.start()
    assert single.feed(first, "Sure") is None and not single.accepting(first)
    assert single.min_chars(first) == len(MARK + "add" + args + '{"a":0,"b":0}')
    done = single.feed(first, as_fed(named(one)))
    assert done is not None and single.complete(done) and single.feed(done, MARK) is None


def test_mistral_v11_unfinished_calls_are_kept_as_text() -> None:
    """A cut call, a call of another tool, a call without arguments, a bad id or text
    after a call give no calls and the text whole."""
    plan = ToolPlan((ADD,), "auto", True, "mistral-v11")
    whole = named(("add", {"a": 1, "b": 2}))
    for text in [whole[:-1], whole + whole[:-2], named(("sub", {"a": 1})), MARKER + "add",
                 whole + " Thanks", f"{MARKER}add{CALL_ID}abc{ARGS}{{}}", MARKER]:
        assert split_calls(text, plan) == (text, ())


@pytest.mark.parametrize("tool_format", ["mistral", "mistral-v11"])
@settings(max_examples=100, deadline=None)
@given(parts=TEXTS, cuts=st.lists(st.integers(1, 7), min_size=1, max_size=40))
def test_mistral_streamed_content_is_the_content(tool_format: str,
                                                 parts: tuple[str, list[tuple[int, int]], bool],
                                                 cuts: list[int]) -> None:
    """However a text of either mistral format arrives, a stream shows its content and
    nothing from the first marker on (all of a text whose calls are cut, at the end)."""
    prefix, numbers, cut = parts
    plan = ToolPlan((ADD,), "auto", True, tool_format)  # type: ignore[arg-type]
    text = prefix
    if numbers:
        calls = [("add", {"a": a, "b": b}) for a, b in numbers]
        text += "\n" + (marked(*calls) if tool_format == "mistral" else named(*calls))
        text = text[:-3] if cut else text
    stream = ToolText(plan)
    shown = fed_in_pieces(stream, text, cuts)
    assert MARKER not in "".join(shown)
    finished(stream, shown, text, plan)


def test_a_mistral_template_sets_the_format_and_renders_calls(tmp_path: Any) -> None:
    """A Mistral-style template with the ``[TOOL_CALLS]`` token in the tokenizer is
    detected (``tool_format = "auto"``); it gets the tools, earlier calls with ids of
    nine letters or digits (one id for a call and its result) and the results. Without
    the token the template is not read as mistral; ``tool_format = "mistral"`` on a
    tokenizer without it is a ValueError naming the token."""
    folder = random_llama(tmp_path / "marked", chat_template=MISTRAL, extra=(MARKER,))
    lm = SmolLM2Backend(SmolLM2Options(path=str(folder))).load()
    assert lm.template_tool_format == "mistral" and lm.tool_format == "mistral"
    calls = (ToolCall(id="call_0123456789abcdef", name="add", arguments={"a": 1, "b": 2}),
             ToolCall(id="Abc123xyz", name="add", arguments={"a": 3, "b": 4}))
    conversation = [Message("user", "1 + 2 and 3 + 4?"),
                    Message("assistant", "", tool_calls=calls),
                    Message("tool", "3", tool_call_id=calls[0].id),
                    Message("tool", "7", tool_call_id=calls[1].id),
                    Message("user", "Thanks. And 5 + 6?")]
    plan = tool_plan((ADD,), {}, format=lm.tool_format)
    assert plan is not None and plan.format == "mistral"
    text = lm.render(conversation, plan)
    hashed = mistral_id(calls[0].id)
    assert len(hashed) == 9 and hashed.isalnum() and mistral_id("Abc123xyz") == "Abc123xyz"
    assert (f'[TOOL_CALLS] [{{"name": "add", "arguments": {{"a": 1, "b": 2}}, "id": '
            f'"{hashed}"}}, {{"name": "add"') in text
    assert f'"call_id": "{hashed}"}}[/TOOL_RESULTS]' in text and '"call_id": "Abc123xyz"' in text
    assert text.index("[AVAILABLE_TOOLS]") > text.index("[TOOL_RESULTS]")
    turns = template_messages(conversation, format="hermes")
    assert turns[1]["tool_calls"][0]["id"] == calls[0].id  # other formats keep ids
    plain = random_llama(tmp_path / "plain", chat_template=MISTRAL)
    assert SmolLM2Backend(SmolLM2Options(path=str(plain))).load().tool_format == "hermes"
    with pytest.raises(ValueError, match=r"\[TOOL_CALLS\] token"):
        SmolLM2Backend(SmolLM2Options(path=str(plain), tool_format="mistral")).load()


def test_mistral_calls_are_written_into_templates_without_tool_support() -> None:
    """Without a template in its format, the mistral listing asks for the marker and an
    array, and earlier calls are written that way (they read back as the same calls)."""
    call = ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2})
    plan = ToolPlan((ADD,), "required", True, "mistral")
    out = as_text_messages([Message("user", "1 + 2?"),
                            Message("assistant", "Adding.", tool_calls=(call, call))], plan)
    assert MARKER in out[0].content and OPEN not in out[0].content
    assert out[2].content == "Adding.\n" + marked(*[("add", {"a": 1, "b": 2})] * 2)
    content, calls = split_calls(out[2].content, plan)
    assert content == "Adding." and [(c.name, c.arguments) for c in calls] == [
        ("add", {"a": 1, "b": 2})] * 2


async def test_mistral_decoding_shows_the_marker(format_backends: dict[str, SmolLM2Backend]
                                                 ) -> None:
    """The marker token decodes as ``[TOOL_CALLS]`` in the mistral format (the calls are
    read by it) and not at all in another; a request without tools on the same model is
    plain text."""
    backend = format_backends["mistral"]
    lm = backend.load()
    marker, args, call_id = lm.tokenizer.convert_tokens_to_ids([MARKER, ARGS, CALL_ID])
    assert lm.kept == {marker: MARKER}
    a, b = lm.tokenizer.convert_tokens_to_ids(["a", "b"])
    assert lm.decode([a, marker, b]) == f"a{MARKER}b" and lm.decode([marker]) == MARKER
    assert lm.decode([marker, a, args, b]) == f"{MARKER}ab"
    lm.tool_format = "mistral-v11"
    lm.tool_format = "hermes"
    try:
        assert lm.kept == {} and lm.decode([a, marker, b]) == "ab"
        lm.tool_format = "mistral-v11"
        assert lm.kept == {marker: MARKER, args: ARGS, call_id: CALL_ID}
        assert lm.decode([marker, a, call_id, b, args]) == f"{MARKER}a{CALL_ID}b{ARGS}"
    finally:
        lm.tool_format = "mistral"
    plain = await generate(backend, ask("Hi.", max_tokens=4, temperature=0.0))
    assert plain.tool_calls == ()


#: A template in the shape of Mistral's v11 templates (written for this test): per call
#: [TOOL_CALLS]name[CALL_ID]id[ARGS]arguments, results with their call's id.
MISTRAL_V11 = (
    "{{ bos_token }}{%- for m in messages %}"
    "{%- if m.role == 'user' %}"
    "{%- if tools and loop.last %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]"
    "{%- endif %}[INST]{{ m.content }}[/INST]"
    "{%- elif m.tool_calls %}{%- for c in m.tool_calls %}"
    "{%- if c.id | length != 9 %}{{ raise_exception('Tool call IDs should be alphanumeric "
    "strings with length 9!') }}{% endif %}"
    "[TOOL_CALLS]{{ c.function.name }}[CALL_ID]{{ c.id }}[ARGS]{{ c.function.arguments | tojson }}"
    "{%- endfor %}{{ eos_token }}"
    "{%- elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.tool_call_id }}[TOOL_CONTENT]"
    "{{ m.content }}[/TOOL_RESULTS]"
    "{%- else %}{{ m.content }}{{ eos_token }}{%- endif %}{%- endfor %}")


def test_a_mistral_v11_template_sets_the_format(tmp_path: Any) -> None:
    """A template with ``[ARGS]`` beside ``[TOOL_CALLS]`` and ``[AVAILABLE_TOOLS]`` reads
    as ``mistral-v11`` when the tokenizer has both markers (not at all with
    ``[TOOL_CALLS]`` alone); it renders calls with nine-character ids. Choosing
    ``mistral-v11`` for a tokenizer without ``[ARGS]`` is a ValueError naming it."""
    folder = random_llama(tmp_path / "v11", chat_template=MISTRAL_V11,
                          extra=(MARKER, ARGS, CALL_ID))
    lm = SmolLM2Backend(SmolLM2Options(path=str(folder))).load()
    assert lm.template_tool_format == "mistral-v11" and lm.tool_format == "mistral-v11"
    call = ToolCall(id="call_0123456789abcdef", name="add", arguments={"a": 1, "b": 2})
    plan = tool_plan((ADD,), {}, format=lm.tool_format)
    text = lm.render([Message("user", "1 + 2?"), Message("assistant", "", tool_calls=(call,)),
                      Message("tool", "3", tool_call_id=call.id),
                      Message("user", "And 5 + 6?")], plan)
    hashed = mistral_id(call.id)
    assert f'[TOOL_CALLS]add[CALL_ID]{hashed}[ARGS]{{"a": 1, "b": 2}}' in text
    assert f"[TOOL_RESULTS]{hashed}[TOOL_CONTENT]3" in text
    half = random_llama(tmp_path / "half", chat_template=MISTRAL_V11, extra=(MARKER,))
    lm = SmolLM2Backend(SmolLM2Options(path=str(half))).load()
    assert lm.template_tool_format is None and lm.tool_format == "hermes"
    with pytest.raises(ValueError, match=r"\[ARGS\] token"):
        SmolLM2Backend(SmolLM2Options(path=str(half), tool_format="mistral-v11")).load()
    v11 = ToolPlan((ADD,), "required", True, "mistral-v11")
    written = as_text_messages([Message("assistant", "", tool_calls=(call, call))], v11)
    assert MARKER in written[0].content and ARGS in written[0].content
    assert written[1].content.startswith(f"{MARKER}add{ARGS}")
    assert [(c.name, c.arguments) for c in split_calls(written[1].content, v11)[1]] == [
        ("add", {"a": 1, "b": 2})] * 2
