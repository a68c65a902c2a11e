"""Deadlines around the context builder: a host's ``fail_after`` (or the stage's timeout)
ends a build in its worker thread at the next text it counts, and a long input is built
off the event loop.

No timing here: a count is held until the caller is cancelled, then the counts made are
counted."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from aieng_context import ContextBuilder, ContextOptions, _builder
from aieng_hookspecs.types import Message, Query, Request
from context_helpers import ask, make_hits

pytestmark = pytest.mark.anyio

WORDS = " ".join(f"word{i}" for i in range(60))


class GatedCounter:
    """A token counter (one per word) that holds its first call until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.threads: set[int] = set()
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, text: str) -> int:
        self.calls += 1
        self.threads.add(threading.get_ident())
        if self.calls == 1:
            self.started.set()
            assert self.release.wait(60), "never released"
        return len(text.split())


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_deadline_ends_a_build_at_its_next_count() -> None:
    """A build with a tokenizer runs in a worker thread; cancelled while it counts (a
    host's deadline), it stops before its next count instead of counting every passage and
    turn first (shielded, it ran to its end). The builder works as before afterwards."""
    counter = GatedCounter()
    builder = ContextBuilder(ContextOptions(max_prompt_tokens=100_000, max_context_tokens=50_000),
                             count_tokens=counter)
    history = tuple(Message(role, f"{WORDS} {n}") for n in range(40)
                    for role in ("user", "assistant"))
    request = Request((*history, Message("user", "What is it?")))
    hits = make_hits(*(f"{WORDS} passage {n}" for n in range(40)))
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(builder.aieng_context_build, Query("What is it?"), hits, request)
            assert await anyio.to_thread.run_sync(counter.started.wait, 60)
            scope.cancel()  # the scope is cancelled at once: the thread sees it
            counter.release.set()
    assert scope.cancelled_caught
    assert counter.calls == 1
    built = await builder.aieng_context_build(Query("What is it?"), hits, request)
    assert len(built.metadata["context"]) == 40 and counter.calls > 80


async def test_a_long_input_is_built_off_the_event_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With the approximate counter a short input is built inline (microseconds), a long
    one (long passages, a long conversation) in a worker thread: counting megabytes on the
    event loop stalled every other task, and no deadline could end it."""
    seen: set[int] = set()
    real = _builder.approximate_tokens

    def approximate(text: str) -> Any:
        seen.add(threading.get_ident())
        return real(text)

    monkeypatch.setattr(_builder, "approximate_tokens", approximate)
    builder = ContextBuilder(ContextOptions(max_context_tokens=100))
    loop = threading.get_ident()
    await builder.aieng_context_build(Query("q"), make_hits("a short passage"), ask())
    assert seen == {loop}
    seen.clear()
    long_hits = make_hits(*(WORDS * 10 for _ in range(8)))  # ~50,000 characters
    built = await builder.aieng_context_build(Query("q"), long_hits, ask())
    assert seen and loop not in seen
    assert built.metadata["context_build"]["context_tokens"] <= 100
