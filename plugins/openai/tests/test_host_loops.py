"""The backend in a host program's event loops: trio as well as asyncio (generate, stream,
embed, retries after ``Retry-After``, timeouts, cancellation), and one backend used by
one event loop after another (a script's or notebook's second ``asyncio.run``)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from _openai_double import CHAT_MODEL, OpenAIServerDouble, Scripted
from aieng_hookspecs.types import Message, Request
from aieng_openai import OpenAIBackend, OpenAIError

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]


def ask(text: str = "hello") -> Request:
    return Request(messages=(Message("user", text),), max_tokens=8)


def chunk(content: str | None = None, finish: str | None = None) -> str:
    delta = {} if content is None else {"content": content}
    return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}]})


async def test_generate_embed_and_models(double: OpenAIServerDouble, make_backend: Any) -> None:
    """A chat completion, embeddings and the model list, on either backend."""
    backend: OpenAIBackend = make_backend()
    try:
        completion = await backend.aieng_generate(ask())
        vectors = await backend.aieng_embed(["a", "b"], None)
        models = await backend.list_models()
    finally:
        await backend.aclose()
    assert completion is not None and completion.text == "You said: hello"
    assert vectors is not None and len(vectors) == 2 and len(vectors[0]) == 32
    assert CHAT_MODEL in models


async def test_a_stream_and_one_left_early(double: OpenAIServerDouble,
                                          make_backend: Any) -> None:
    """Server-sent events become deltas; a stream left after its first delta releases its
    connection and the backend keeps answering."""
    double.script("chat/completions", Scripted(sse=(
        chunk("Hel"), "", chunk("lo", finish="stop"), "", "data: [DONE]", "")))
    backend: OpenAIBackend = make_backend()
    try:
        stream = backend.aieng_stream(ask())
        assert stream is not None
        texts = [delta.text async for delta in stream]
        early = backend.aieng_stream(ask("a b c d"))
        assert early is not None
        first = await anext(aiter(early))
        await early.aclose()  # type: ignore[attr-defined]
        again = await backend.aieng_generate(ask("z"))
    finally:
        await backend.aclose()
    assert "".join(texts) == "Hello" and first.index == 0
    assert again is not None and again.text == "You said: z"


async def test_retry_after_then_success_and_a_timeout(double: OpenAIServerDouble,
                                                      make_backend: Any) -> None:
    """A 429 with ``Retry-After`` is waited out (on the running backend's clock) and
    retried; a stalled answer is an ``OpenAIError`` of kind ``timeout``."""
    double.script("chat/completions",
                  Scripted(status=429, headers={"Retry-After": "0.1"}, body="{}"))
    backend: OpenAIBackend = make_backend()
    try:
        completion = await backend.aieng_generate(ask())
        double.script("chat/completions", Scripted(hang=True))
        slow: OpenAIBackend = make_backend(read_timeout=0.2, max_retries=0)
        try:
            with pytest.raises(OpenAIError) as caught:
                await slow.aieng_generate(ask())
        finally:
            await slow.aclose()
    finally:
        await backend.aclose()
    assert completion is not None and len(double.calls_to("chat/completions")) == 3
    assert caught.value.kind == "timeout"


async def test_a_host_cancel_scope_cancels_the_call(double: OpenAIServerDouble,
                                                   make_backend: Any) -> None:
    """A host's cancel scope, cancelled while the call waits on the server (which got
    it), ends the call, and the backend answers the next call."""
    double.script("chat/completions", Scripted(hang=True))
    backend: OpenAIBackend = make_backend()
    try:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(backend.aieng_generate, ask())
                with anyio.fail_after(60):  # the server has the call (no race with a delay)
                    while not double.calls_to("chat/completions"):
                        await anyio.sleep(0.01)
                scope.cancel()
        completion = await backend.aieng_generate(ask("after"))
    finally:
        await backend.aclose()
    assert scope.cancelled_caught
    assert completion is not None and completion.text == "You said: after"


def test_one_backend_in_one_event_loop_after_another(double: OpenAIServerDouble,
                                                     make_backend: Any,
                                                     anyio_backend: str) -> None:
    """A backend used in an event loop that then ended, without closing it, answers in
    the next loop (asyncio or trio) instead of failing with "Event loop is closed"."""
    backend: OpenAIBackend = make_backend(max_retries=0)
    texts = [anyio.run(backend.aieng_generate, ask(str(n)), backend=loop).text
             for n, loop in enumerate([anyio_backend, "asyncio", "trio", "asyncio"])]
    anyio.run(backend.aclose, backend="asyncio")
    assert texts == [f"You said: {n}" for n in range(4)]
