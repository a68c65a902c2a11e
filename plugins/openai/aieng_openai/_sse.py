"""Server-sent events: the ``data`` of each event of a stream of lines.

Follows the WHATWG event-stream rules that matter for OpenAI-compatible servers: a field
is ``name: value`` or ``name:value`` (one leading space dropped), ``data`` lines of one
event join with newlines, a blank line ends an event, ``:`` starts a comment (keep-alive
pings), ``event``, ``id`` and ``retry`` fields are read and ignored, and a byte-order mark
at the start is dropped. A last event that the stream ends without a blank line after is
still delivered. Lines end at CRLF, LF or CR only (:func:`sse_lines`): not at the other
breaks ``str.splitlines`` knows (U+2028, U+0085...), which JSON strings may hold raw.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterable, AsyncIterator

__all__ = ["MAX_EVENT_CHARS", "sse_data", "sse_lines", "utf8_text"]

#: The largest event accepted: a server that never ends an event must not eat the memory.
MAX_EVENT_CHARS = 8 * 1024 * 1024


class SSETooLarge(ValueError):
    """A line or an event grew past its limit (:data:`MAX_EVENT_CHARS` by default)."""


#: An event stream's line endings (WHATWG: CRLF, LF or CR), and nothing else.
_BREAK = re.compile(r"\r\n|\r|\n")


async def utf8_text(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """The text of a stream of bytes decoded as UTF-8, as an event stream always is
    (WHATWG), whatever ``charset`` its Content-Type names; a character cut between two
    chunks comes whole, bytes that are not UTF-8 become U+FFFD."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    async for chunk in chunks:
        text = decoder.decode(chunk)
        if text:
            yield text
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


async def sse_lines(chunks: AsyncIterable[str], *,
                    limit: int = MAX_EVENT_CHARS) -> AsyncIterator[str]:
    """The lines of a stream of text chunks, without their line breaks: split at CRLF, LF
    or CR only (httpx's ``aiter_lines`` also splits at U+2028, U+2029, U+0085 and more,
    which would cut an event's JSON in two), a CRLF split between two chunks included.

    :raises SSETooLarge: when a line grows past ``limit`` characters.
    """
    buffer = ""
    async for chunk in chunks:
        scanned = max(0, len(buffer) - 1)  # the buffer held no break but a last CR
        buffer += chunk
        # A CR at the end may be the first half of a CRLF: it waits for the next chunk.
        end = len(buffer) - 1 if buffer.endswith("\r") else len(buffer)
        start = 0
        for found in _BREAK.finditer(buffer, scanned, end):
            yield buffer[start:found.start()]
            start = found.end()
        buffer = buffer[start:]
        if len(buffer) > limit:
            raise SSETooLarge(f"a line passed {limit} characters without ending")
    if buffer:
        yield buffer.removesuffix("\r")


async def sse_data(lines: AsyncIterable[str], *,
                   limit: int = MAX_EVENT_CHARS) -> AsyncIterator[str]:
    """The ``data`` of each event in ``lines`` (lines without their line breaks).

    :raises SSETooLarge: when an event's data grows past ``limit`` characters.
    """
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
        if size > limit:
            raise SSETooLarge(f"an event passed {limit} characters without ending")
        data.append(value)
    if data:
        yield "\n".join(data)
