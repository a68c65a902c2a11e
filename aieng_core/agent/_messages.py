"""The conversation an agent's model sees: the task as messages, recalled memory and the
plan added to its leading system message, and tool call ids made unique."""

from __future__ import annotations

import json
from collections.abc import Sequence

import attrs
from aieng_hookspecs.types import AgentAction, MemoryItem, Message, Request, ToolCall

from ._reflect import PLAN_HEADER

__all__ = ["MEMORY_HEADER", "TaskInput", "as_request", "fit", "size", "swap_plan", "unique_ids",
           "with_memory", "with_system"]

TaskInput = str | Request | Sequence[Message]
MEMORY_HEADER = "Relevant memory:"


def as_request(task: TaskInput) -> Request:
    """The task as a request: a text is one user message, messages are the conversation."""
    if isinstance(task, Request):
        return task
    if isinstance(task, str):
        return Request(messages=(Message("user", task),))
    if isinstance(task, Sequence) and all(isinstance(m, Message) for m in task):
        return Request(messages=tuple(task))
    raise TypeError(f"cannot run an agent on {type(task).__name__}; give a str, a Request "
                    "or a list of Message")


def with_memory(messages: Sequence[Message], items: Sequence[MemoryItem],
                limit: int) -> tuple[Message, ...]:
    """The conversation with the recalled items added to its system text (:func:`with_system`),
    cut to ``limit`` characters (not kept in the transcript)."""
    if not items:
        return tuple(messages)
    lines = [MEMORY_HEADER]
    used = len(MEMORY_HEADER)
    for item in items:
        line = "- " + " ".join(item.text.split())
        if used + 1 + len(line) > limit:
            room = limit - used - 2
            if room > 3:
                lines.append(line[:room - 1] + "…")
            break
        lines.append(line)
        used += 1 + len(line)
    if len(lines) == 1:
        return tuple(messages)
    return with_system(messages, "\n".join(lines))


def with_system(messages: Sequence[Message], text: str) -> tuple[Message, ...]:
    """The conversation with ``text`` added to its system text: appended, after a blank
    line, to the last of its leading system messages, or as a system message put first
    when it has none. Chat templates that take one system message, first, and then strict
    user / assistant turns (Llama 2, Mistral) refuse a second system message."""
    at = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
    if at == 0:
        return (Message("system", text), *messages)
    last = messages[at - 1]
    joined = f"{last.content}\n\n{text}" if last.content.strip() else text
    return (*messages[:at - 1], attrs.evolve(last, content=joined), *messages[at:])


def swap_plan(messages: Sequence[Message], old: str, new: str) -> tuple[Message, ...]:
    """The conversation with the plan ``old`` replaced by ``new`` in its system text (where
    :func:`with_system` put it), or ``new`` added there when ``old`` is not found."""
    was, now = f"{PLAN_HEADER}\n{old}", f"{PLAN_HEADER}\n{new}"
    at = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
    for i in range(at - 1, -1, -1):
        if old and was in messages[i].content:
            content = messages[i].content.replace(was, now, 1)
            return (*messages[:i], attrs.evolve(messages[i], content=content),
                    *messages[i + 1:])
    return with_system(messages, now)


def unique_ids(action: AgentAction) -> AgentAction:
    """Tool call ids made unique within the step (``id``, ``id-2``, ...): each tool message
    must answer exactly one call."""
    seen: set[str] = set()
    calls: list[ToolCall] = []
    changed = False
    for call in action.tool_calls:
        new, n = call.id, 1
        while new in seen:
            n += 1
            new = f"{call.id}-{n}"
        seen.add(new)
        if new != call.id:
            changed = True
            call = attrs.evolve(call, id=new)
        calls.append(call)
    return attrs.evolve(action, tool_calls=tuple(calls)) if changed else action



def size(message: Message) -> int:
    """A message's characters as the context budget counts them: its text and its tool
    calls' names and JSON arguments."""
    calls = sum(len(c.name) + len(json.dumps(c.arguments, ensure_ascii=False, default=str))
                for c in message.tool_calls)
    return len(message.content) + calls


def fit(messages: Sequence[Message], limit: int | None) -> tuple[Message, ...]:
    """The conversation cut to about ``limit`` characters (:func:`size`) for the model,
    without dropping a message (every call keeps its tool message, roles stay in order):
    the texts of older turns are replaced by a short mark saying what was left out, oldest
    first, tool results before the assistant's and the runner's texts. The leading system
    messages, the first user turn and the latest step (from the last assistant turn on)
    are never cut; when they alone pass ``limit`` the conversation goes as it is."""
    total = sum(map(size, messages))
    if limit is None or total <= limit:
        return tuple(messages)
    head = next((i for i, m in enumerate(messages) if m.role == "user"), len(messages)) + 1
    tail = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=head)
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    out = list(messages)
    middle = range(head, max(head, tail))
    for roles in (("tool",), ("assistant", "user")):
        for i in middle:
            if total <= limit:
                return tuple(out)
            message = out[i]
            if message.role not in roles:
                continue
            if message.role == "tool":
                what = f"the result of {names.get(message.tool_call_id or '', 'a tool')}"
            else:
                what = f"an earlier {message.role} turn"
            mark = f"[left out to fit the context: {what}, {len(message.content)} characters]"
            if len(mark) >= len(message.content):
                continue
            total -= len(message.content) - len(mark)
            out[i] = attrs.evolve(message, content=mark)
    return tuple(out)
