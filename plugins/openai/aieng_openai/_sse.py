"""Server-sent events: the ``data`` of each event of a stream of lines.

Follows the WHATWG event-stream rules that matter for OpenAI-compatible servers: a field
is ``name: value`` or ``name:value`` (one leading space dropped), ``data`` lines of one
event join with newlines, a blank line ends an event, ``:`` starts a comment (keep-alive
pings), ``event``, ``id`` and ``retry`` fields are read and ignored, and a byte-order mark
at the start is dropped. A last event that the stream ends without a blank line after is
still delivered.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

__all__ = ["MAX_EVENT_CHARS", "sse_data"]

#: The largest event accepted: a server that never ends an event must not eat the memory.
MAX_EVENT_CHARS = 8 * 1024 * 1024


class SSETooLarge(ValueError):
    """An event grew past :data:`MAX_EVENT_CHARS` without a blank line."""


async def sse_data(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """The ``data`` of each event in ``lines`` (lines without their line breaks)."""
    data: list[str] = []
    size = 0
    first = True
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if first:  # a byte-order mark before the first line is not part of it
            line, first = line.removeprefix("\ufeff"), False
        if not line:
            if data:
                yield "\n".join(data)
            data, size = [], 0
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if not colon:
            name, value = line, ""
        elif value.startswith(" "):
            value = value[1:]
        if name != "data":
            continue
        size += len(value) + 1
        if size > MAX_EVENT_CHARS:
            raise SSETooLarge(f"an event passed {MAX_EVENT_CHARS} characters without ending")
        data.append(value)
    if data:
        yield "\n".join(data)
