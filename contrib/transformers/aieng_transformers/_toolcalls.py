"""Tool calls from local models: the request's plan, the prompt that lists the tools, the
schema of a call, and the split of the text into content and calls (the automata that
keep every call valid while decoding are in :mod:`._toolfsm`).

Four call formats (:data:`TOOL_FORMATS`), those most open chat models with tool use were
trained on:

- ``hermes`` (Hermes, Qwen 2 / 2.5 / 3, SmolLM3; the default): a call is a JSON object
  ``{"name": ..., "arguments": {...}}`` between ``<tool_call>`` and ``</tool_call>``
  lines, after any text; several calls are several blocks.
- ``llama3`` (Llama 3.1 / 3.2 / 3.3's JSON tool calling): the answer *is* the call, a bare
  JSON object ``{"name": ..., "parameters": {...}}``; several calls are separated by
  ``; `` (the reading vLLM's ``llama3_json`` parser gives them). An answer that does not
  start with ``{`` is text, and has no calls.
- ``mistral`` (Mistral's v3 / v7 tokenizers: Mistral 7B Instruct v0.3, Mistral Nemo,
  Mixtral 8x22B Instruct, Mistral Small 3 (2501), Mistral Large 2407 / 2411): after any
  text, the ``[TOOL_CALLS]`` token and a JSON array of calls ``[{"name": ...,
  "arguments": {...}}, ...]``, the end of the answer.
- ``mistral-v11`` (Mistral's v11 and later tokenizers: Mistral Small 3.1 / 3.2,
  Ministral, Magistral, Devstral): after any text, per call ``[TOOL_CALLS]``, the tool's
  name, optionally ``[CALL_ID]`` and a nine-character id, then ``[ARGS]`` and the
  arguments' JSON object; the calls are the end of the answer.

Mistral's markers are special tokens: the automata read each as a character of its own
(:data:`MARKS`, private-use characters no other token writes), so a marker is always
its token and never its letters spelled out; the decoded text shows the markers' text.

What a request asks (``Request.tools`` plus two ``metadata`` keys, as OpenAI names them):

- ``metadata["tool_choice"]``: ``"auto"`` (default: text, calls, or text then calls),
  ``"required"`` (at least one call, no text), ``"none"`` (the tools are listed but the
  output is not constrained and never parsed as calls), or a tool's name (exactly that
  tool; OpenAI's ``{"type": "function", "function": {"name": ...}}`` is read too).
- ``metadata["parallel_tool_calls"]``: ``False`` ends the output after the first call
  (default ``True``: several calls may follow each other).
"""

from __future__ import annotations

import collections
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
from aieng_hookspecs.types import Message, ToolCall, ToolSpec

from ._jsonschema import JsonMachine, SchemaError
from ._text import StopBuffer

__all__ = [
    "ARGS",
    "CALL_ID",
    "CLOSE",
    "FORMAT_MARKERS",
    "MARK",
    "MARKER",
    "MARKS",
    "OPEN",
    "SEPARATOR",
    "TEXT_MARKERS",
    "TOOL_FORMATS",
    "ToolFormat",
    "ToolPlan",
    "ToolText",
    "as_text_messages",
    "calls_schema",
    "calls_text",
    "mistral_id",
    "split_calls",
    "template_messages",
    "template_tools",
    "tool_plan",
    "tools_prompt",
]

#: The line that opens a call, and the one that closes it.
OPEN = "<tool_call>"
CLOSE = "</tool_call>"
_CLOSE_LINE = "\n" + CLOSE
#: Newlines allowed after a call (before the end or the next call).
_GAP = 2
#: ``llama3``: what separates two calls (a space after the semicolon is optional).
SEPARATOR = "; "

#: Mistral's formats: the token that opens the calls (``mistral-v11``: each call), the one
#: before a call's arguments and the one before its id (``mistral-v11``).
MARKER = "[TOOL_CALLS]"
ARGS = "[ARGS]"
CALL_ID = "[CALL_ID]"
#: The character the automaton reads for each marker token (private-use characters: no
#: other token's text holds them).
MARKS: dict[str, str] = {MARKER: "\ue000", ARGS: "\ue001", CALL_ID: "\ue002"}
MARK = MARKS[MARKER]
#: The length of a call id in ``mistral-v11`` (letters and digits).
_ID_LENGTH = 9

ToolFormat = Literal["hermes", "llama3", "mistral", "mistral-v11"]
#: The call formats, and the key of a call's arguments in each.
TOOL_FORMATS: dict[str, str] = {"hermes": "arguments", "llama3": "parameters",
                                "mistral": "arguments", "mistral-v11": "arguments"}
#: The marker tokens a tokenizer needs for a format, and those it may have besides.
FORMAT_MARKERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mistral": ((MARKER,), ()), "mistral-v11": ((MARKER, ARGS), (CALL_ID,))}
#: The results' and the listing's tags that :func:`as_text_messages` writes in every format.
_TEXT_TAGS = ("<tool_response>", "</tool_response>", "<tools>", "</tools>")
#: Mistral's markers around tools and results (special tokens in Mistral's tokenizers).
_MISTRAL_TAGS = ("[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]")
#: The strings that mark a format's blocks in a prompt (its calls, its results, the tools'
#: listing), written by the chat template or by :func:`as_text_messages`: a
#: conversation's text may not write them (:func:`~._specials.neutralise`).
TEXT_MARKERS: dict[str, tuple[str, ...]] = {
    "hermes": (OPEN, CLOSE, *_TEXT_TAGS),
    "llama3": _TEXT_TAGS,
    "mistral": (MARKER, *_MISTRAL_TAGS, *_TEXT_TAGS),
    "mistral-v11": (MARKER, ARGS, CALL_ID, *_MISTRAL_TAGS, *_TEXT_TAGS),
}


@attrs.frozen
class ToolPlan:
    """What a request asks of tools.

    :param tools: the tools the model may call.
    :param choice: ``auto``, ``required``, ``none``, or the one tool's name to call.
    :param parallel: whether several calls may follow each other.
    :param format: how calls are written (:data:`TOOL_FORMATS`).
    """

    tools: tuple[ToolSpec, ...]
    choice: str = "auto"
    parallel: bool = True
    format: ToolFormat = attrs.field(default="hermes",
                                     validator=attrs.validators.in_(tuple(TOOL_FORMATS)))

    @property
    def key(self) -> str:
        """The key of a call's arguments in this format."""
        return TOOL_FORMATS[self.format]

    @property
    def constrained(self) -> bool:
        """Whether calls are enforced and parsed (every choice but ``none``)."""
        return self.choice != "none"

    @property
    def callable(self) -> tuple[ToolSpec, ...]:
        """The tools a call may name under this choice."""
        if self.choice in ("auto", "required", "none"):
            return self.tools
        return tuple(t for t in self.tools if t.name == self.choice)


def tool_plan(tools: Sequence[ToolSpec], metadata: Mapping[str, Any], *,
              format: ToolFormat = "hermes") -> ToolPlan | None:
    """The request's tool plan, or ``None`` when it lists no tools.

    :param format: the model's call format (:data:`TOOL_FORMATS`).

    :raises ValueError: a ``tool_choice`` that is not ``auto`` / ``required`` / ``none``
        / one of the tools, a ``tool_choice`` without tools, two tools of one name, or a
        ``parallel_tool_calls`` that is not a boolean.
    """
    raw = metadata.get("tool_choice")
    parallel = metadata.get("parallel_tool_calls", True)
    if type(parallel) is not bool:  # a request's error (ValueError), not the caller's type
        raise ValueError("metadata['parallel_tool_calls'] must be true or false")
    if not tools:
        if raw is not None and raw != "none":
            raise ValueError("metadata['tool_choice'] is set but the request lists no tools")
        return None
    names = [t.name for t in tools]
    # One count of all names: counting each name over the list was quadratic.
    twice = {n for n, count in collections.Counter(names).items() if count > 1}
    if twice:
        raise ValueError(f"two tools share the name {min(twice)!r}")
    choice = _choice(raw)
    if choice not in ("auto", "required", "none") and choice not in names:
        raise ValueError(f"metadata['tool_choice'] names {choice!r}, which is not one of the "
                         f"request's tools ({', '.join(names)})")
    return ToolPlan(tuple(tools), choice, parallel, format)


def _choice(raw: Any) -> str:
    if raw is None:
        return "auto"
    if isinstance(raw, str):
        return raw
    if isinstance(raw, Mapping):  # OpenAI's {"type": "function", "function": {"name": ...}}
        function = raw.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return str(function["name"])
    raise ValueError("metadata['tool_choice'] must be 'auto', 'required', 'none', a tool's "
                     "name or {'type': 'function', 'function': {'name': ...}}")


# -- prompts -------------------------------------------------------------------------------


def _function(spec: ToolSpec) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": spec.name, "description": spec.description, "parameters": spec.parameters}}


def tools_prompt(plan: ToolPlan) -> str:
    """The system text listing the tools and the call format, for chat templates that do
    not render tools themselves."""
    listed = "\n".join(json.dumps(_function(t), ensure_ascii=False) for t in plan.tools)
    lines = [
        ("You can call the functions described by the JSON schemas in <tools></tools> to "
         "help with the request."),
        f"<tools>\n{listed}\n</tools>",
    ]
    if plan.format == "llama3":
        lines += [
            ("To call a function, answer with only a JSON object of its name and arguments, "
             "nothing before it:"),
            '{"name": "<function name>", "parameters": {<arguments as JSON>}}',
            f"Separate several calls with {SEPARATOR!r}.",
        ]
    elif plan.format == "mistral":
        lines += [
            (f"To call functions, write {MARKER} and a JSON array of the calls, each an "
             "object with a name and arguments, as the end of your answer:"),
            f'{MARKER} [{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}]',
        ]
    elif plan.format == "mistral-v11":
        lines += [
            (f"To call a function, write {MARKER}, its name, {ARGS} and its arguments as a "
             "JSON object, as the end of your answer; for several, one after another:"),
            f"{MARKER}<function name>{ARGS}{{<arguments as JSON>}}",
        ]
    else:
        lines += [
            ("To call a function, write a JSON object with its name and arguments between "
             f"{OPEN} and {CLOSE} lines, one block per call:"),
            f'{OPEN}\n{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}\n{CLOSE}',
        ]
    lines.append("A function's result comes back in <tool_response></tool_response>.")
    if plan.choice == "required":
        lines.append("Answer with at least one function call.")
    elif plan.choice == "none":
        lines.append("Do not call a function now: answer in text.")
    elif plan.choice != "auto":
        lines.append(f"Call the function {plan.choice}.")
    return "\n".join(lines)


def calls_text(calls: Sequence[ToolCall], format: ToolFormat = "hermes") -> str:
    """Calls as the format writes them (the calls of an earlier assistant turn)."""
    key = TOOL_FORMATS[format]
    bodies = [json.dumps({"name": c.name, key: c.arguments}, ensure_ascii=False)
              for c in calls]
    if format == "llama3":
        return SEPARATOR.join(bodies)
    if format == "mistral":
        return f"{MARKER} [{', '.join(bodies)}]"  # as Mistral's templates write them
    if format == "mistral-v11":
        return "".join(f"{MARKER}{c.name}{ARGS}{json.dumps(c.arguments, ensure_ascii=False)}"
                       for c in calls)
    return "\n".join(f"{OPEN}\n{body}\n{CLOSE}" for body in bodies)


def as_text_messages(messages: Sequence[Message], plan: ToolPlan | None, *,
                     format: ToolFormat = "hermes") -> list[Message]:
    """The conversation with tools written into its text, for templates without tool
    support: the tool listing joins the system message (one is added in front when there
    is none), an assistant's earlier calls are written in the call format after its text
    (``format``; the plan's when there is one), and tool results become user turns in
    ``<tool_response>`` tags."""
    format = plan.format if plan is not None else format
    out: list[Message] = []
    for message in messages:
        if message.role == "assistant" and message.tool_calls:
            blocks = [message.content.strip()] if message.content.strip() else []
            blocks.append(calls_text(message.tool_calls, format))
            out.append(Message(role="assistant", content="\n".join(blocks)))
        elif message.role == "tool":
            out.append(Message(role="user", content=(
                f"<tool_response>\n{message.content}\n</tool_response>")))
        else:
            out.append(message)
    if plan is not None:
        listing = tools_prompt(plan)
        if out and out[0].role == "system":
            out[0] = attrs.evolve(out[0], content=f"{out[0].content}\n\n{listing}")
        else:
            out.insert(0, Message(role="system", content=listing))
    return out


def template_messages(messages: Sequence[Message], *,
                      format: ToolFormat = "hermes") -> list[dict[str, Any]]:
    """The conversation as the dicts of ``transformers``' chat templates with tool support
    (an assistant's ``tool_calls``, a tool result's ``tool_call_id``). In the ``llama3``
    format an assistant turn of several calls becomes one turn per call (Llama 3's
    templates refuse several calls in one turn); its text stays with the first. In
    Mistral's formats call ids are written as :func:`mistral_id` gives them (Mistral's
    templates refuse any id that is not nine letters or digits)."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if format == "llama3" and len(message.tool_calls) > 1:
            first, *rest = message.tool_calls
            turns += template_messages([attrs.evolve(message, tool_calls=(first,))])
            turns += template_messages([attrs.evolve(message, content="", tool_calls=(c,))
                                        for c in rest])
            continue
        ids = mistral_id if format in FORMAT_MARKERS else str
        turn: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            turn["tool_calls"] = [
                {"id": ids(c.id), "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in message.tool_calls]
        if message.tool_call_id is not None:
            turn["tool_call_id"] = ids(message.tool_call_id)
        if message.name is not None and message.role == "tool":
            turn["name"] = message.name
        turns.append(turn)
    return turns


def mistral_id(call_id: str) -> str:
    """A call id as Mistral's templates take it: nine letters or digits. An id that is
    one already stays; any other becomes the first nine hex digits of its SHA-256 (the
    same for a call and its result)."""
    if len(call_id) == 9 and call_id.isascii() and call_id.isalnum():
        return call_id
    return hashlib.sha256(call_id.encode("utf-8")).hexdigest()[:9]


def template_tools(plan: ToolPlan) -> list[dict[str, Any]]:
    """The tools as ``transformers``' ``apply_chat_template(tools=...)`` takes them."""
    return [_function(t) for t in plan.tools]


# -- the schema of a call ------------------------------------------------------------------

#: Words whose values are data, not schemas (a ``$ref`` key in them is not a reference).
_DATA_WORDS = frozenset({"enum", "const", "default", "examples", "example"})
#: Words whose values map names to schemas.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions",
                          "dependentSchemas"})


def calls_schema(tools: Sequence[ToolSpec], *, key: str = "arguments") -> dict[str, Any]:
    """The JSON schema of one call of ``tools``: ``{"name": <const>, <key>: <the tool's
    parameters>}`` (``key``: ``arguments``, or ``llama3``'s ``parameters``), an ``anyOf``
    over the tools (told apart by the name, written first). Each tool's ``$defs`` /
    ``definitions`` move to the root as ``tool<i>.<name>`` and its references follow them
    (``#`` becomes the tool's own parameters), so tools written by Pydantic keep their
    references.

    :raises SchemaError: naming the tool, when its parameters are outside the subset of
        :mod:`._jsonschema`.
    """
    defs: dict[str, Any] = {}
    alternatives = []
    for position, spec in enumerate(tools):
        try:
            JsonMachine(spec.parameters)
        except SchemaError as exc:
            raise SchemaError(f"tools[{position}] ({spec.name}) parameters: {exc}") from None
        own = f"tool{position}"
        selfish: list[bool] = []

        def rename(target: str, own: str = own, selfish: list[bool] = selfish) -> str:
            if target == "#":
                selfish.append(True)
                return f"#/$defs/{own}"
            for word in ("$defs", "definitions"):
                if target.startswith(f"#/{word}/"):
                    return f"#/$defs/{own}.{target[len(word) + 3:]}"
            return target

        body = {k: v for k, v in spec.parameters.items() if k not in ("$defs", "definitions")}
        arguments = _rebased(body, rename)
        for word in ("$defs", "definitions"):
            for name, sub in spec.parameters.get(word, {}).items():
                defs[f"{own}.{name}"] = _rebased(sub, rename)
        if selfish:
            defs[own] = arguments
            arguments = {"$ref": f"#/$defs/{own}"}
        alternatives.append({
            "type": "object", "properties": {"name": {"const": spec.name}, key: arguments},
            "required": ["name", key], "additionalProperties": False})
    schema: dict[str, Any] = alternatives[0] if len(alternatives) == 1 \
        else {"anyOf": alternatives}
    return {**schema, "$defs": defs} if defs else schema


def _rebased(schema: Any, rename: Any) -> Any:
    """``schema`` with each ``$ref`` renamed (data words left alone)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for word, value in schema.items():
        if word in _DATA_WORDS:
            out[word] = value
        elif word == "$ref" and isinstance(value, str):
            out[word] = rename(value)
        elif word in _SCHEMA_MAPS and isinstance(value, dict):
            out[word] = {name: _rebased(sub, rename) for name, sub in value.items()}
        elif isinstance(value, list):
            out[word] = [_rebased(item, rename) for item in value]
        else:
            out[word] = _rebased(value, rename)
    return out


# -- from text to content and calls --------------------------------------------------------


def split_calls(text: str, plan: ToolPlan) -> tuple[str, tuple[ToolCall, ...]]:
    """The content and the tool calls of a generated text, each call with a fresh id:
    ``hermes``: the text before the first call (without trailing whitespace) and each
    ``<tool_call>`` block's call; ``llama3``: no content and the calls of a text that
    starts with ``{``; ``mistral``: the text before ``[TOOL_CALLS]`` (without trailing
    whitespace) and the calls of the array after it; ``mistral-v11``: the text before
    the first ``[TOOL_CALLS]`` and each call after one (with the id the model wrote after
    ``[CALL_ID]``, if any).

    A text whose calls do not all parse as calls of the plan's tools (cut by
    ``max_tokens`` or a stop string inside a call) is returned whole as content, with no
    calls: nothing the model wrote is lost.
    """
    if not plan.constrained:
        return text, ()
    if plan.format == "llama3":
        return _split_bare(text, plan)
    if plan.format == "mistral":
        return _split_marked(text, plan)
    if plan.format == "mistral-v11":
        return _split_named(text, plan)
    head, found, _ = text.partition(OPEN)
    if not found:
        return text, ()
    # Block by block, each call's JSON read as JSON: an argument may hold the tags' text.
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    position = len(head)
    while position < len(text):
        if not text.startswith(OPEN, position):
            return text, ()
        try:
            value, position = decoder.raw_decode(text, _blank(text, position + len(OPEN)))
        except ValueError:
            return text, ()
        call = _call(value, plan)
        position = _blank(text, position)
        if call is None or not text.startswith(CLOSE, position):
            return text, ()
        calls.append(call)
        position = _blank(text, position + len(CLOSE))
    return head.rstrip(), tuple(calls)


def _blank(text: str, position: int) -> int:
    # The position after the whitespace at ``position``.
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _split_bare(text: str, plan: ToolPlan) -> tuple[str, tuple[ToolCall, ...]]:
    if not text.startswith("{"):
        return text, ()
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    position = 0
    while True:
        try:
            value, position = decoder.raw_decode(text, position)
        except ValueError:
            return text, ()
        call = _call(value, plan)
        if call is None:
            return text, ()
        calls.append(call)
        if position == len(text):
            return "", tuple(calls)
        if text[position] != SEPARATOR[0]:
            return text, ()
        position += 2 if text.startswith(SEPARATOR, position) else 1


def _split_marked(text: str, plan: ToolPlan) -> tuple[str, tuple[ToolCall, ...]]:
    head, found, rest = text.partition(MARKER)
    if not found:
        return text, ()
    try:
        values = json.loads(rest)
    except ValueError:
        return text, ()
    calls = [_call(value, plan) for value in values] if isinstance(values, list) else []
    if not calls or any(call is None for call in calls):
        return text, ()
    return head.rstrip(), tuple(call for call in calls if call is not None)


def _split_named(text: str, plan: ToolPlan) -> tuple[str, tuple[ToolCall, ...]]:
    head, found, _ = text.partition(MARKER)
    if not found:
        return text, ()
    # Call by call, the arguments read as JSON: a string in them may hold the markers'
    # text (the automaton lets letters spell them), which must not split the call.
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    position = len(head)
    while position < len(text):
        if not text.startswith(MARKER, position):
            return text, ()
        end = text.find(ARGS, position + len(MARKER))
        if end < 0:
            return text, ()
        name, with_id, given = text[position + len(MARKER):end].partition(CALL_ID)
        try:
            value, position = decoder.raw_decode(text, _blank(text, end + len(ARGS)))
        except ValueError:
            return text, ()
        call = _call({"name": name, "arguments": value}, plan)
        if call is None or (with_id and not (len(given) == _ID_LENGTH and given.isascii()
                                             and given.isalnum())):
            return text, ()
        calls.append(attrs.evolve(call, id=given) if with_id else call)
        position = _blank(text, position)
    return head.rstrip(), tuple(calls)


def _call(value: Any, plan: ToolPlan) -> ToolCall | None:
    # A parsed call object of the plan's tools, or None.
    if not isinstance(value, dict) or value.get("name") not in {t.name for t in plan.callable} \
            or not isinstance(value.get(plan.key), dict):
        return None
    return ToolCall(id=_new_id(), name=value["name"], arguments=value[plan.key])


def _new_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class ToolText:
    """Streams the content of a generation whose calls are parsed at its end: text is
    released as it comes except, in the ``hermes`` format, from the first ``<tool_call>``
    on (and a tail that could be its beginning, held until it is not), in the
    Mistral formats from ``[TOOL_CALLS]`` on (the same way), and in the ``llama3``
    format all of a text that starts with ``{``.

    :param plan: the request's tool plan.
    """

    def __init__(self, plan: ToolPlan) -> None:
        self._plan = plan
        self._whole = ""
        # the text before the first call, a tail that could begin it held back (as a stop
        # string's is), then nothing
        self._before = StopBuffer((MARKER if plan.format in FORMAT_MARKERS else OPEN,))
        self._space = ""  # trailing whitespace held: it is not content if a call follows
        self._shown = 0

    def feed(self, piece: str) -> str:
        """Take a released piece of generated text; return what may be shown now."""
        self._whole += piece
        if self._plan.format == "llama3":  # text unless its first character opens calls
            if self._whole.startswith("{"):
                return ""
            shown = self._whole[self._shown:]
            self._shown = len(self._whole)
            return shown
        safe = self._space + self._before.feed(piece)
        shown = safe.rstrip()
        self._space = "" if self._before.stopped else safe[len(shown):]
        self._shown += len(shown)
        return shown

    def finish(self) -> tuple[str, tuple[ToolCall, ...]]:
        """At the end: the text not yet shown (all that was held back when the calls do not
        parse) and the calls."""
        content, calls = split_calls(self._whole, self._plan)
        rest = content[self._shown:] if calls else self._whole[self._shown:]
        self._shown += len(rest)
        return rest, calls
