"""``react``: an agent policy for models without native tool calling (ReAct prompting).

Each step renders the agent's tools (``state.tools``) and its conversation into a ReAct
prompt, generates through the pipeline's backends (``context.generate``) and parses the
reply: ``Action:`` / ``Action Input:`` become a tool call, ``Final Answer:`` an answer.
A reply in neither form is sent back once (``retries``) with a note saying what was wrong;
if it is still malformed, its raw text becomes the answer.
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from typing import Any

import attrs
import structlog
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import AgentAction, AgentState, Message, Request, ToolCall, ToolSpec

__all__ = ["ReActFormatError", "ReActOptions", "ReActPolicy", "parse_react", "render_messages"]

log = structlog.get_logger(__name__)

_INSTRUCTIONS = """\
Answer the user's request. You can use these tools:

{tools}

Use this format:

Thought: what you think about, and what to do next
Action: the tool to use, one of [{names}]
Action Input: the tool's arguments, as one JSON object
Observation: the tool's result (given to you; never write it yourself)
... (Thought / Action / Action Input / Observation can repeat)
Thought: I now know the final answer
Final Answer: the answer to the user's request

Write either an Action with its Action Input, or a Final Answer; then stop."""

_NO_TOOLS = """\
Answer the user's request. Use this format:

Thought: what you think about
Final Answer: the answer to the user's request"""

_LABEL = r"(?im)^[ \t*]*{}[ \t*]*:[ \t*]*"
_ACTION = re.compile(_LABEL.format(r"action"))
_INPUT = re.compile(_LABEL.format(r"action[ \t_]*input"))
_FINAL = re.compile(_LABEL.format(r"final[ \t_]*answer"))
_THOUGHT = re.compile(_LABEL.format(r"thought"))
_OBSERVATION = re.compile(_LABEL.format(r"observation"))
# A label that ends the Action Input: the model went on to another part of the format.
_NEXT = re.compile(_LABEL.format(r"(?:thought|action|final[ \t_]*answer)"))
# An opening fence (with its language); the closing one is cut by hand (:func:`_unfence`):
# as a pattern ``\s*```\s*$`` is tried at every character of a run of whitespace, each
# try reading to its end (quadratic on a model stuck writing spaces).
_FENCE = re.compile(r"\A```[a-zA-Z]*\s*")


class ReActFormatError(ValueError):
    """A reply in neither ReAct form; the message is the note the model is sent back."""


@attrs.frozen
class ReActOptions:
    """Options of the ``react`` policy.

    :param model: the model to ask (empty: the backend's default).
    :param temperature: the sampling temperature (0: greedy).
    :param max_tokens: the most tokens of one reply.
    :param retries: how many times a malformed reply is sent back with a correction note
        before its raw text is taken as the answer (0 to 3).
    :param instructions: extra instructions put after the ReAct format in the system prompt.
    """

    model: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    temperature: float = attrs.field(
        default=0.0, validator=[attrs.validators.instance_of((int, float)),
                                attrs.validators.ge(0.0), attrs.validators.le(2.0)])
    max_tokens: int = attrs.field(default=512, validator=[attrs.validators.instance_of(int),
                                                          attrs.validators.ge(1)])
    retries: int = attrs.field(default=1, validator=[attrs.validators.instance_of(int),
                                                     attrs.validators.ge(0),
                                                     attrs.validators.le(3)])
    instructions: str = attrs.field(default="", validator=attrs.validators.instance_of(str))


def _tool_line(spec: ToolSpec) -> str:
    schema = json.dumps(spec.parameters.get("properties", {}), ensure_ascii=False,
                        sort_keys=True)
    required = spec.parameters.get("required", [])
    line = f"- {spec.name}: {spec.description or '(no description)'}\n  arguments: {schema}"
    return line + (f"; required: {', '.join(map(str, required))}" if required else "")


def render_system(tools: tuple[ToolSpec, ...], extra: str = "") -> str:
    """The system prompt: the ReAct format, the tools and their arguments."""
    if tools:
        text = _INSTRUCTIONS.format(tools="\n".join(_tool_line(t) for t in tools),
                                    names=", ".join(t.name for t in tools))
    else:
        text = _NO_TOOLS
    return f"{text}\n\n{extra}" if extra else text


def render_messages(state: AgentState, extra: str = "") -> list[Message]:
    """The conversation as a text model reads it: the system prompt first (the agent's own
    system messages after the format), the assistant's tool calls written as ReAct
    actions and the tool results given back as ``Observation:`` user messages."""
    system = render_system(state.tools, extra)
    own = [m.content for m in state.messages if m.role == "system" and m.content.strip()]
    messages = [Message(role="system", content="\n\n".join([system, *own]))]
    observations: list[str] = []
    for message in state.messages:
        if message.role == "tool":
            observations.append(f"Observation: {message.content}")
            continue
        if observations:  # the results of one step's calls, given back together
            messages.append(Message(role="user", content="\n".join(observations)))
            observations = []
        if message.role == "system":
            continue
        if message.role == "assistant" and message.tool_calls:
            thought = message.content.strip()
            parts = [f"Thought: {thought}"] if thought else []
            for call in message.tool_calls:
                parts.append(f"Action: {call.name}\nAction Input: "
                             f"{json.dumps(call.arguments, ensure_ascii=False)}")
            messages.append(Message(role="assistant", content="\n".join(parts)))
        else:
            messages.append(Message(role=message.role, content=message.content))
    if observations:
        messages.append(Message(role="user", content="\n".join(observations)))
    return messages


def _python_dict(raw: str) -> dict[str, Any] | None:
    """A Python dict literal as small models write arguments (``{'a': '1'}``), when it is
    a JSON object in Python's spelling (string keys, JSON values), chatter after it
    ignored; else ``None``."""
    ends = [n + 1 for n, char in enumerate(raw) if char == "}"][:20]
    for end in ends:  # the shortest text up to a "}" that is a literal: the dict
        try:
            found = ast.literal_eval(raw[:end])  # literals only: never runs code
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        return _json_like(found)
    return None


def _json_like(found: object) -> dict[str, Any] | None:
    """``found`` when it is a dict of JSON values with string keys; else ``None``."""
    if not isinstance(found, dict):
        return None
    try:
        same = json.loads(json.dumps(found, allow_nan=False)) == found
    except (TypeError, ValueError):
        return None
    return found if same else None


def _arguments(text: str, spec: ToolSpec | None) -> dict[str, Any]:
    """The arguments an Action Input gives, as JSON carries them (:func:`_carried`)."""
    return _carried(_read_arguments(text, spec))


def _carried(arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` when JSON can carry them to a tool or an API; Python's JSON reader
    takes ``NaN``, ``Infinity``, ``1e999`` and ``"\\ud800"``, which no strict reader does."""
    try:
        json.dumps(arguments, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise _too_deep() from None
    except ValueError:  # UnicodeEncodeError included
        raise ReActFormatError(
            "the Action Input holds a value JSON cannot carry (NaN, Infinity, a number too "
            "large, or half of a UTF-16 pair): write finite numbers and whole characters"
        ) from None
    return arguments


def _too_deep() -> ReActFormatError:
    """The error of an Action Input nested past what Python's readers take (a
    ``RecursionError`` otherwise: the agent run would fail)."""
    return ReActFormatError("the Action Input is nested too deeply: write one flat JSON "
                            "object of the tool's arguments")


def _unfence(text: str) -> str:
    """``text`` (stripped) without the code fences around it, stripped."""
    return _FENCE.sub("", text, count=1).removesuffix("```").strip()


def _read_arguments(text: str, spec: ToolSpec | None) -> dict[str, Any]:
    stripped = text.strip()
    raw = _unfence(stripped)
    fenced = raw != stripped
    if len(raw) > 1 and raw[0] == raw[-1] == "`":  # inline code: `{"a": 1}`
        raw = raw.strip("`").strip()
    if raw in ("", "{}", "None", "none", "null"):
        return {}
    # A bare value ("2 + 3" for a calculator) is its first line, unless fenced: what
    # follows it is the model's chatter.
    bare = raw if fenced else raw.split("\n", 1)[0].strip()
    value: Any = bare
    try:
        found, end = json.JSONDecoder().raw_decode(raw)
    except RecursionError:
        raise _too_deep() from None
    except json.JSONDecodeError:
        if raw.startswith("{") and (found := _python_dict(raw)) is not None:
            return found
    else:
        if isinstance(found, dict):
            return found  # chatter after the object is ignored
        if not raw[end:].strip():
            value = found  # a whole JSON value: "2 + 3" quoted, 42
    properties = list((spec.parameters.get("properties") or {}) if spec else {})
    if len(properties) == 1:  # one argument: a bare value is that argument
        schema = spec.parameters["properties"][properties[0]] if spec else {}
        if isinstance(schema, dict) and schema.get("type") == "string":
            value = value if isinstance(value, str) else bare  # 42 for a string: "42"
        return {properties[0]: value}
    if spec is not None and not properties:  # no arguments: "Action Input: N/A"
        return {}
    raise ReActFormatError("the Action Input must be one JSON object of the tool's arguments, "
                           f"such as {{\"{properties[0] if properties else 'name'}\": ...}}")


def parse_react(text: str, tools: tuple[ToolSpec, ...], *, step: int = 0) -> AgentAction:
    """The action a ReAct reply asks for: the first of a ``Final Answer`` and an ``Action``
    (with its ``Action Input``) in the text; anything after an ``Observation:`` the model
    wrote itself is ignored.

    :raises ReActFormatError: when the reply has neither, or names an unknown tool.
    """
    seen = _OBSERVATION.search(text)
    if seen is not None:
        text = text[: seen.start()]
    final = _FINAL.search(text)
    action = _ACTION.search(text)
    if final is not None and (action is None or final.start() < action.start()):
        return AgentAction(kind="answer", text=text[final.end():].strip())
    if action is None:
        raise ReActFormatError("the reply has neither an 'Action:' with an 'Action Input:' "
                               "nor a 'Final Answer:'")
    thought = text[: action.start()]
    mark = _THOUGHT.search(thought)
    thought = (thought[mark.end():] if mark is not None else thought).strip()
    rest = text[action.end():]
    given = _INPUT.search(rest)
    name = (rest[: given.start()] if given is not None else rest).strip()
    name = name.splitlines()[0].strip().strip("`'\"*[]") if name else ""
    by_name = {spec.name: spec for spec in tools}
    folded = [known for known in by_name if known.casefold() == name.casefold()]
    if name not in by_name and len(folded) == 1:
        name = folded[0]  # "Calculate" for calculate
    if name not in by_name:
        known = ", ".join(by_name) or "none: write a Final Answer"
        raise ReActFormatError(f"there is no tool {name!r}; the tools are: {known}")
    given_text = rest[given.end():] if given is not None else ""
    after = _NEXT.search(given_text, 1)  # a later Thought, Action or Final Answer line
    arguments = _arguments(given_text[: after.start()] if after else given_text, by_name[name])
    call = ToolCall(id=f"react-{step}-{uuid.uuid4().hex[:12]}", name=name, arguments=arguments)
    return AgentAction(kind="tool_calls", text=thought, tool_calls=(call,))


class ReActPolicy:
    """Decides an agent's steps by ReAct prompting a model without native tool calling.

    The tools are those of the agent's state (``state.tools``: the runner fills it with the
    specs the pipeline's tool components list). The policy generates through its pipeline,
    so it must be opened by one (``aieng_pipeline_open``).

    :param options: the typed options (defaults when omitted).
    """

    def __init__(self, options: ReActOptions | None = None) -> None:
        self.options = options if options is not None else ReActOptions()
        self._context: PipelineContext | None = None

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Keep the pipeline's context, to generate through it."""
        self._context = context

    @hookimpl
    async def aieng_agent_step(self, state: AgentState) -> AgentAction:
        """Generate a ReAct reply and parse it into tool calls or an answer."""
        if self._context is None:
            raise RuntimeError("the react policy generates through its pipeline, which opens "
                               "it first (Pipeline.open or a run)")
        messages = render_messages(state, self.options.instructions)
        text = ""
        for attempt in range(self.options.retries + 1):
            completion = await self._context.generate(Request(
                messages=messages, model=self.options.model or None,
                temperature=self.options.temperature, max_tokens=self.options.max_tokens,
                stop=("\nObservation:",)))
            text = completion.text
            try:
                return parse_react(text, state.tools, step=state.step)
            except ReActFormatError as exc:
                log.info("react.malformed", attempt=attempt, error=str(exc))
                messages = [*messages, Message(role="assistant", content=text),
                            Message(role="user", content=(
                                f"Your reply did not follow the format: {exc}. Reply again "
                                "with 'Action:' and 'Action Input:' lines, or with "
                                "'Final Answer:'."))]
        # Still malformed: the model may simply have answered without the format.
        return AgentAction(kind="answer", text=text.strip())
