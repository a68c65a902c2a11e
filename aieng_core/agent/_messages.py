"""The conversation an agent's model sees: the task as messages, recalled memory and the
plan added to its leading system message, and tool call ids made unique."""

from __future__ import annotations

import json
from collections.abc import Sequence

import attrs
import structlog
from aieng_hookspecs.types import AgentAction, MemoryItem, Message, Request, ToolCall

from ._reflect import PLAN_HEADER

__all__ = ["MEMORY_HEADER", "ContextLimitError", "TaskInput", "as_request", "cut_note", "fit",
           "left_out_note", "size", "swap_plan", "unique_ids", "with_memory", "with_system"]

TaskInput = str | Request | Sequence[Message]
MEMORY_HEADER = "Relevant memory:"

log = structlog.get_logger(__name__)


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



class ContextLimitError(ValueError):
    """What :func:`fit` never leaves out (the system text, the first and the latest user
    turn, the latest step) is longer than the context limit on its own."""


def size(message: Message) -> int:
    """A message's characters as the context budget counts them: its text and its tool
    calls' names and JSON arguments."""
    calls = sum(len(c.name) + len(json.dumps(c.arguments, ensure_ascii=False, default=str))
                for c in message.tool_calls)
    return len(message.content) + calls


def fit(messages: Sequence[Message], limit: int | None, *, keep: Message | None = None,
        left_out: tuple[int, int] = (0, 0)) -> tuple[Message, ...]:
    """The conversation cut to at most ``limit`` characters (:func:`size`) for the model.

    The texts of older turns are replaced by a short mark saying what was left out, oldest
    first, tool results before the assistant's and the runner's texts. When marks alone
    cannot make it fit, the fewest oldest turns that make it fit are left out whole (an
    assistant turn with its tool results and the notes after it: a tool call never loses
    its result), a note of how many messages and characters were left out is added to the
    system text (:func:`with_system`), and marks cut what is left as needed. Roles stay in
    order. The leading system messages, the first and the latest user turn, ``keep`` (the
    task, found by identity: the last message of a chat's conversation) and the latest step
    (from the last assistant turn after ``keep`` on) are never left out or marked; when
    they alone pass ``limit`` (or would with the note that leaving older turns out adds),
    the latest step's tool results are cut, each to the same length (200 characters at
    the least), with a note of how many characters were cut.

    :param left_out: the messages and characters of earlier turns the caller already let
        go of (a chat's window): the note counts them with those ``fit`` leaves out, one
        note, added (and budgeted) even when nothing else is left out. When what is never
        left out leaves no room for it, the conversation is fitted as without them.
    :raises ContextLimitError: when those pass ``limit`` even so (it names the sizes).
    """
    if left_out[0] > 0:
        try:
            return _fit(messages, limit, keep, left_out)
        except ContextLimitError:  # what is never left out takes the room: no note
            pass
    return _fit(messages, limit, keep, (0, 0))


def _fit(messages: Sequence[Message], limit: int | None, keep: Message | None,
         left_out: tuple[int, int]) -> tuple[Message, ...]:
    sizes = [size(m) for m in messages]
    total = sum(sizes)
    base = left_out_note(*left_out) if left_out[0] > 0 else ""
    if limit is None or total + _room(base) <= limit:
        return with_system(messages, base) if base else tuple(messages)
    n = len(messages)
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    head = min(n, users[0] + 1 if users else n)
    at = next((i for i, m in enumerate(messages) if m is keep), -1)
    kept = {at, *users[-1:]} - {-1}
    tail = max((i for i, m in enumerate(messages) if m.role == "assistant" and i > at),
               default=n - 1)
    middle = range(head, max(head, tail))
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    marks = {i: mark for i in middle if i not in kept
             and (mark := _mark(messages[i], names)) is not None}
    saved = {i: sizes[i] - size(mark) for i, mark in marks.items()}
    if total - sum(saved.values()) + _room(base) <= limit:
        out = _marked(messages, marks, saved, total + _room(base), limit)
        return with_system(out, base) if base else tuple(out)
    gone, note = _left_out(messages, sizes, saved, middle, kept, total, limit, left_out)
    dropped = sum(sizes[i] for i in gone)
    out = _marked(messages, {i: m for i, m in marks.items() if i not in gone}, saved,
                  total - dropped + _room(note), limit)
    result = [m for i, m in enumerate(out) if i not in gone]
    if note:
        result = list(with_system(result, note))
    if gone:
        log.info("context.left_out", messages=len(gone), characters=dropped, limit=limit)
    if (now := sum(map(size, result))) > limit and (cut := _cut_latest(result, limit)):
        result, now = cut, sum(map(size, cut))
        log.info("context.results_cut", characters=sum(map(size, result)), limit=limit)
    if now > limit:
        system = sum(sizes[:next((i for i, m in enumerate(messages) if m.role != "system"),
                                 n)])
        parts = [f"the system text {system}", f"the first user turn {sizes[users[0]]}"
                 if users else "", f"the latest user turn {sizes[users[-1]]}"
                 if len(users) > 1 else "", f"the latest step {sum(sizes[tail:])}"]
        raise ContextLimitError(
            f"the conversation does not fit the context limit of {limit} characters: what "
            f"is never left out comes to {now} of its {total} ("
            + ", ".join(p for p in parts if p) + "); raise the limit (context_chars, "
            "--context-chars) or shorten those (AgentOptions.tool_result_chars cuts long "
            "tool results)")
    return tuple(result)


def _cut_latest(messages: list[Message], limit: int) -> list[Message] | None:
    """``messages`` with the tool results of their latest step cut (each to the same
    length, at least :data:`_MIN_RESULT` characters, with a note of what was cut), the
    least that makes them fit ``limit``; ``None`` when that cannot."""
    last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    lengths = {i: len(messages[i].content) for i in range(last + 1, len(messages))
               if messages[i].role == "tool" and len(messages[i].content) > _MIN_RESULT}
    if not lengths:
        return None
    room = limit - sum(size(m) for i, m in enumerate(messages) if i not in lengths)

    def cost(cap: int) -> int:  # never falls as cap grows: a note loses a digit at most
        return sum(n if n <= cap else cap + len(cut_note(n - cap)) for n in lengths.values())

    low, high = _MIN_RESULT, max(lengths.values())
    if cost(low) > room:
        return None
    while low < high:  # the largest cap that fits
        middle = (low + high + 1) // 2
        low, high = (middle, high) if cost(middle) <= room else (low, middle - 1)
    out = list(messages)
    for i, n in lengths.items():
        if n > low:
            out[i] = attrs.evolve(out[i], content=out[i].content[:low] + cut_note(n - low))
    return out


#: The fewest characters a tool result of the latest step keeps when it is cut to fit.
_MIN_RESULT = 200


def cut_note(characters: int, why: str = " to fit the context") -> str:
    """What ends a text cut short: how many characters went, and why (a tool result past
    ``tool_result_chars``, a latest result cut to fit ``context_chars``)."""
    return f"\n… [{characters} more characters cut{why}]"


def _mark(message: Message, names: dict[str, str]) -> Message | None:
    """The message with its text replaced by a mark, or ``None`` when a mark is no
    shorter."""
    if message.role == "tool":
        what = f"the result of {names.get(message.tool_call_id or '', 'a tool')}"
    elif message.role in ("assistant", "user"):
        what = f"an earlier {message.role} turn"
    else:
        return None
    mark = f"[left out to fit the context: {what}, {len(message.content)} characters]"
    return attrs.evolve(message, content=mark) if len(mark) < len(message.content) else None


def _marked(messages: Sequence[Message], marks: dict[int, Message], saved: dict[int, int],
            total: int, limit: int) -> list[Message]:
    """``messages`` with marks put in, oldest first, tool results first, until ``total``
    (their size, less what the marks save) is within ``limit``."""
    out = list(messages)
    order = sorted(marks, key=lambda i: (out[i].role != "tool", i))
    for i in order:
        if total <= limit:
            break
        out[i] = marks[i]
        total -= saved[i]
    return out


def left_out_note(messages: int, characters: int) -> str:
    """The note :func:`fit` adds to the system text: how many earlier messages (and their
    characters) were left out."""
    return (f"[left out to fit the context: {messages} earlier messages, {characters} "
            "characters]")


def _room(note: str) -> int:
    """What adding ``note`` to the system text costs at most (:func:`with_system`: a blank
    line and the note)."""
    return len(note) + 2 if note else 0


def _left_out(messages: Sequence[Message], sizes: list[int], saved: dict[int, int],
              middle: range, kept: set[int], total: int, limit: int,
              before: tuple[int, int]) -> tuple[set[int], str]:
    """The oldest turns of ``middle`` left out whole, the fewest that let the rest fit
    with its tool results marked, and the note saying so (counting ``before``, what the
    caller let go of: ``""`` when there is nothing to say). A turn is an assistant message
    and what follows it up to the next one; a turn holding a kept message, or a tool
    call or result whose other half is outside it, stays."""
    group: dict[int, int] = {}
    count = 0
    for i in middle:
        if messages[i].role == "assistant" and group:
            count += 1
        group[i] = count
    fixed = {group[i] for i in kept if i in group} | _crossed(messages, group)
    tools = sum(s for i, s in saved.items() if messages[i].role == "tool")
    gone: set[int] = set()
    note, dropped = left_out_note(*before) if before[0] > 0 else "", 0
    members: dict[int, list[int]] = {}
    for i in middle:
        members.setdefault(group[i], []).append(i)
    for g, indices in members.items():
        if g in fixed:
            continue
        gone.update(indices)
        dropped += sum(sizes[i] for i in indices)
        tools -= sum(saved.get(i, 0) for i in indices if messages[i].role == "tool")
        note = left_out_note(before[0] + len(gone), before[1] + dropped)
        if total - dropped - tools + _room(note) <= limit:
            break
    return gone, note


def _crossed(messages: Sequence[Message], group: dict[int, int]) -> set[int]:
    """The groups holding a tool call or a tool result whose other half is in another
    group, or outside them all (a result answers the latest call with its id before it)."""
    crossed: set[int] = set()
    called: dict[str, int] = {}
    for i, message in enumerate(messages):
        for call in message.tool_calls:
            called[call.id] = i
        at = called.get(message.tool_call_id or "") if message.role == "tool" else None
        if at is not None and group.get(at) != group.get(i):
            crossed.update(g for g in (group.get(at), group.get(i)) if g is not None)
    return crossed
