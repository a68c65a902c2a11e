"""The texts of a whole conversation, for guards that redact more than the last user
message: each message's content and the string values of its tool calls' arguments, and
the conversation rebuilt from them with its structure (roles, ids, calls) kept."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
from aieng_hookspecs.types import Message, ToolCall

__all__ = ["Slot", "map_strings", "rebuild", "texts_of"]

#: Where a text sits: ``(message index, None)`` for a content, ``(message index, (call
#: index, leaf index))`` for the n-th string value of a call's arguments (depth first).
Slot = tuple[int, tuple[int, int] | None]


def map_strings(value: Any, change: Callable[[str], str]) -> Any:
    """``value`` (JSON: dicts, lists, scalars) with ``change`` applied to every string
    value, depth first (keys stay as they are)."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {key: map_strings(item, change) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [map_strings(item, change) for item in value]
    return value


def _leaves(value: Any) -> list[str]:
    found: list[str] = []

    def collect(text: str) -> str:
        found.append(text)
        return text

    map_strings(value, collect)
    return found


def texts_of(messages: Sequence[Message], *, skip_system: bool = True
             ) -> list[tuple[Slot, str]]:
    """Every text of the conversation with its place (system messages left out)."""
    out: list[tuple[Slot, str]] = []
    for i, message in enumerate(messages):
        if skip_system and message.role == "system":
            continue
        out.append(((i, None), message.content))
        for j, call in enumerate(message.tool_calls):
            out.extend(((i, (j, n)), leaf) for n, leaf in enumerate(_leaves(call.arguments)))
    return out


def rebuild(messages: Sequence[Message], changed: dict[Slot, str]) -> tuple[Message, ...]:
    """The conversation with the texts at ``changed``'s places replaced."""
    out: list[Message] = []
    # The messages whose calls' arguments changed, read once (not every change looked at
    # for every message: quadratic in a long conversation full of personal data).
    in_calls = {slot[0] for slot in changed if slot[1] is not None}
    for i, message in enumerate(messages):
        content = changed.get((i, None), message.content)
        calls = message.tool_calls
        if i in in_calls:
            calls = tuple(_call(call, j, i, changed) for j, call in enumerate(calls))
        if content != message.content or calls != message.tool_calls:
            message = attrs.evolve(message, content=content, tool_calls=calls)
        out.append(message)
    return tuple(out)


def _call(call: ToolCall, j: int, i: int, changed: dict[Slot, str]) -> ToolCall:
    counter = iter(range(1 << 62))

    def change(text: str) -> str:
        return changed.get((i, (j, next(counter))), text)

    arguments = map_strings(call.arguments, change)
    return call if arguments == call.arguments else attrs.evolve(call, arguments=arguments)
