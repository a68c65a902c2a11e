"""What the tool-call tests share: two tools, requests, call texts, random tool sets,
drawn calls, and the end of a stream checked against the split of its text."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from _constraints import ALPHABET, SCHEMAS, documents, validate, writable
from aieng_hookspecs.types import Completion, Message, Request, ToolCall, ToolSpec
from aieng_transformers import SchemaError, SmolLM2Backend
from aieng_transformers._jsonschema import JsonMachine
from aieng_transformers._toolcalls import (
    CLOSE,
    OPEN,
    ToolPlan,
    ToolText,
    calls_schema,
    split_calls,
)
from hypothesis import assume
from hypothesis import strategies as st

__all__ = ["ADD", "HERMES", "LINES", "MISTRAL", "TEXTS", "TOOLSETS", "WEATHER", "as_parameters",
           "ask", "block", "check_calls", "draw_calls", "everywhere", "fed_in_pieces", "finished", "generate",
           "valid"]


#: A Hermes / Qwen-style template rendering tools, calls and ``tool`` turns itself.
HERMES = (
    "{% if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t | tojson }}"
    "{% endfor %}</tools> Use <tool_call> blocks.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>\n"
    "{{ c.function | tojson }}\n</tool_call>{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


#: A template in the shape of Mistral 7B Instruct v0.3's (written for the tests): tools in
#: [AVAILABLE_TOOLS] before the last user turn, calls after [TOOL_CALLS] with ids of nine
#: letters or digits (refused otherwise), results in [TOOL_RESULTS].
MISTRAL = (
    "{{ bos_token }}{%- for m in messages %}"
    "{%- if m.role == 'user' %}"
    "{%- if tools and loop.last %}[AVAILABLE_TOOLS] {{ tools | tojson }}[/AVAILABLE_TOOLS]"
    "{%- endif %}[INST] {{ m.content }}[/INST]"
    "{%- elif m.tool_calls %}[TOOL_CALLS] ["
    "{%- for c in m.tool_calls %}"
    "{%- if c.id | length != 9 %}{{ raise_exception('Tool call IDs should be alphanumeric "
    "strings with length 9!') }}{% endif %}"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}, '
    '"id": "{{ c.id }}"}{% if not loop.last %}, {% endif %}'
    "{%- endfor %}]{{ eos_token }}"
    "{%- elif m.role == 'tool' %}[TOOL_RESULTS] {\"content\": {{ m.content | tojson }}, "
    '"call_id": "{{ m.tool_call_id }}"}[/TOOL_RESULTS]'
    "{%- else %} {{ m.content }}{{ eos_token }}{%- endif %}{%- endfor %}")

WEATHER = ToolSpec(name="get_weather", description="The weather in a city now.", parameters={
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                     "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"], "additionalProperties": False})
ADD = ToolSpec(name="add", description="Add two integers.", parameters={
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"], "additionalProperties": False})
#: What a walk may write: printable ASCII and the newlines of the call lines.
LINES = [*ALPHABET, "\n"]


def ask(text: str, **params: Any) -> Request:
    return Request(messages=(Message("user", text),), **params)


def block(name: str, arguments: Any, *, compact: bool = False, spaced: bool = True) -> str:
    """A call as the format writes it; ``spaced``: the call object with spaces (its
    arguments compact unless not ``compact``: ``enum`` / ``const`` data is written
    compactly)."""
    inner = json.dumps(arguments, separators=(",", ":") if compact else None)
    body = f'{{"name": {json.dumps(name)}, "arguments": {inner}}}' if spaced \
        else f'{{"name":{json.dumps(name)},"arguments":{inner}}}'
    return f"{OPEN}\n{body}\n{CLOSE}"


def valid(document: Any, schema: Any) -> bool:
    try:
        validate(document, schema)
    except jsonschema.ValidationError:
        return False
    return True


def check_calls(calls: tuple[ToolCall, ...], tools: tuple[ToolSpec, ...]) -> None:
    """Each call names one of ``tools`` and its arguments are valid against its schema."""
    specs = {t.name: t for t in tools}
    for call in calls:
        assert call.name in specs
        validate(call.arguments, specs[call.name].parameters)



def as_parameters(schema: dict[str, Any], position: int) -> dict[str, Any]:
    """A random schema as a tool's parameters: an object whose one required property has
    it (``$defs`` stay at the parameters' root, as Pydantic writes them)."""
    defs = schema.get("$defs")
    inner = {k: v for k, v in schema.items() if k != "$defs"}
    parameters: dict[str, Any] = {"type": "object", "properties": {f"p{position}": inner},
                                  "required": [f"p{position}"]}
    if defs is not None:
        parameters["$defs"] = defs
    return parameters


def _tools_compile(tools: tuple[ToolSpec, ...]) -> bool:
    try:
        JsonMachine(calls_schema(tools))
    except SchemaError:
        return False
    return True


TOOLSETS = st.lists(SCHEMAS, min_size=1, max_size=3).map(lambda schemas: tuple(
    ToolSpec(name=f"tool_{i}", parameters=as_parameters(s, i))
    for i, s in enumerate(schemas))).filter(_tools_compile)



def draw_calls(data: st.DataObject, tools: tuple[ToolSpec, ...],
               most: int) -> list[tuple[str, Any]]:
    """1 to ``most`` calls of ``tools`` with valid arguments the automaton writes (drawn
    from the raw parameters)."""
    wanted: list[tuple[str, Any]] = []
    for _ in range(data.draw(st.integers(1, most), label="calls")):
        spec = data.draw(st.sampled_from(tools), label="tool")
        arguments = data.draw(documents(spec.parameters, spec.parameters), label="arguments")
        assume(writable(arguments) and valid(arguments, spec.parameters))
        wanted.append((spec.name, arguments))
    return wanted



def finished(stream: ToolText, shown: list[str], text: str,
             plan: ToolPlan) -> tuple[str, tuple[ToolCall, ...]]:
    """Ends ``stream``: what it showed plus the rest it gives at the end is the content
    :func:`split_calls` reads in ``text``, and its calls are the same; returns the rest
    and the calls."""
    rest, calls = stream.finish()
    content, expected = split_calls(text, plan)
    assert "".join(shown) + rest == content
    assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in expected]
    return rest, calls


def fed_in_pieces(stream: ToolText, text: str, cuts: list[int]) -> list[str]:
    """What ``stream`` shows of ``text`` fed in pieces of the sizes ``cuts`` (cycled)."""
    shown, position, turn = [], 0, 0
    while position < len(text):
        size = cuts[turn % len(cuts)]
        shown.append(stream.feed(text[position:position + size]))
        position += size
        turn += 1
    return shown


TEXTS = st.tuples(st.text(LINES, max_size=20),
                  st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=2),
                  st.booleans())



async def generate(backend: SmolLM2Backend, request: Request) -> Completion:
    completion = await backend.aieng_generate(request)
    assert completion is not None
    return completion




def everywhere(text: str, arguments: dict[str, Any]) -> list[Message]:
    """A conversation with ``text`` in every place a message's text goes (system, user, an
    assistant turn calling ``add`` with ``arguments``, its tool result, a last user turn);
    ``everywhere("x", {"a": "x", "k": 2})`` is the same conversation with nothing forged."""
    call = ToolCall(id="c1", name="add", arguments=arguments)
    return [Message("system", text), Message("user", text),
            Message("assistant", text, tool_calls=(call,)),
            Message("tool", text, tool_call_id="c1"), Message("user", text)]
