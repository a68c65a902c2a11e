"""A host's deadline around a local model's call: the call ends at once, its worker thread
stops at its next forward pass (it cannot be killed), and the next call is served right
after; the dynamic batcher never waits on a caller's event loop. Synchronised on events,
never on sleeps: a deadline is a cancel scope (``anyio.fail_after`` is one with a clock),
so the tests cancel the scope at a known point of the work."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from _tiny import CHAIN_TEXT
from aieng_hookspecs.types import Message, Request
from aieng_transformers import MiniLMEmbedder, MiniLMOptions, SmolLM2Backend, SmolLM2Options
from aieng_transformers._batching import Abandoned, Batcher, Ticket, stop_when
from aieng_transformers._causal import Generation
from aieng_transformers.testing import PassGate, cancel_when

pytestmark = pytest.mark.anyio

#: How long a test waits for something that happens at once unless the code hangs.
HANG = 30.0


async def lock_is_free(lock: Any) -> None:
    """Wait (in a thread) until ``lock`` can be taken: the abandoned work has let go."""
    assert await anyio.to_thread.run_sync(lock.acquire, True, HANG)
    lock.release()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("max_batch", [1, 64])
async def test_a_deadline_ends_an_embed_call_within_one_pass(
        bert_dir: Path, max_batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deadline landing in the first of ten passes of an ``aieng_embed`` call (alone, or
    through the dynamic batcher) ends the call, and its worker thread runs no other pass:
    the encoder's lock is free and the next call is served."""
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir), batch_size=2,
                                            max_batch=max_batch))
    await embedder.aieng_pipeline_open()
    encoder = embedder.load()
    name = "_packed" if encoder.packed else "_padded"
    gate = PassGate(getattr(encoder, name))
    monkeypatch.setattr(encoder, name, gate)
    texts = [f"text number {i} of the call" for i in range(20)]
    await cancel_when(gate.entered, lambda: embedder.aieng_embed(texts, None))
    gate.release.set()
    await lock_is_free(encoder.lock)
    assert gate.passes == 1
    vectors = await embedder.aieng_embed(["the next call"], None)
    assert vectors is not None and vectors.shape[0] == 1
    await embedder.aieng_pipeline_close()


def held_back() -> Request:
    """A greedy request on the chain model whose whole text is held back as a possible
    stop string: its one step runs every forward pass, releasing no text until the end."""
    return Request(messages=(Message("user", "hi"),), stop=(CHAIN_TEXT + "!",))


def signal_on_return(work: Any, returned: threading.Event) -> Any:
    """``work``, setting ``returned`` each time it returns or raises."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return work(*args, **kwargs)
        finally:
            returned.set()

    return wrapped


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_deadline_ends_a_generation_within_one_pass(
        chain_backend: SmolLM2Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deadline landing in a forward pass of a generation, inside a step that has
    released no text yet, ends the call; its worker thread runs no other pass (the step
    returns after the pass in flight) and the next request is served."""
    lm = chain_backend.load()
    gate = PassGate(lm.model)
    monkeypatch.setattr(lm, "model", gate)
    returned = threading.Event()
    monkeypatch.setattr(Generation, "step", signal_on_return(Generation.step, returned))
    await cancel_when(gate.entered, lambda: chain_backend.aieng_generate(held_back()))
    gate.release.set()
    assert await anyio.to_thread.run_sync(returned.wait, HANG)
    assert gate.passes == 1
    completion = await chain_backend.aieng_generate(held_back())
    assert completion is not None and completion.text == CHAIN_TEXT


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_deadline_drops_a_request_from_its_batch(
        chain_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With dynamic batching, a deadline landing in the first pass of a batch drops that
    request's row at the next step: a batch of it alone ends there, and the next request
    is served."""
    backend = SmolLM2Backend(SmolLM2Options(path=str(chain_dir), model="chain", max_batch=4))
    await backend.aieng_pipeline_open()
    lm = backend.load()
    gate = PassGate(lm.model)
    monkeypatch.setattr(lm, "model", gate)
    batcher = backend.batcher()
    returned = threading.Event()
    monkeypatch.setattr(batcher, "_work", signal_on_return(batcher._work, returned))
    await cancel_when(gate.entered, lambda: backend.aieng_generate(held_back()))
    gate.release.set()
    assert await anyio.to_thread.run_sync(returned.wait, HANG)
    assert gate.passes == 1
    completion = await backend.aieng_generate(held_back())
    assert completion is not None and completion.text == CHAIN_TEXT
    await backend.aieng_pipeline_close()


def test_stop_when_needs_every_flag() -> None:
    """The checkpoint raises only once every caller of the work has gone."""
    first, second = threading.Event(), threading.Event()
    checkpoint = stop_when(first, second)
    first.set()
    checkpoint()
    second.set()
    with pytest.raises(Abandoned):
        checkpoint()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_stuck_event_loop_does_not_hold_up_other_callers(backend: str) -> None:
    """The batcher posts a caller's wake-up to its event loop without waiting for it: a
    host whose loop is blocked (or has stopped) when its batch ends delays nobody else's
    batch; it gets its own result once its loop runs again."""
    started, release = threading.Event(), threading.Event()

    def work(tickets: Sequence[Ticket[int, int]]) -> list[int | BaseException]:
        if tickets[0].item == 1:
            started.set()
            release.wait(HANG)
        return [2 * t.item for t in tickets]

    batcher: Batcher[int, int] = Batcher(work, max_batch=1, max_wait_ms=0, name="stuck")
    stuck, unstick = threading.Event(), threading.Event()
    got: dict[int, int] = {}

    async def stuck_host() -> None:
        async def submit() -> None:
            got[1] = await batcher.submit(1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(submit)
            assert await anyio.to_thread.run_sync(started.wait, HANG)
            stuck.set()
            unstick.wait(HANG)  # blocks this loop's thread: no callback of its runs

    host = threading.Thread(target=anyio.run, args=(stuck_host,), kwargs={"backend": backend})
    host.start()

    async def other_host() -> int:
        assert await anyio.to_thread.run_sync(stuck.wait, HANG)
        release.set()  # item 1's batch ends while its caller's loop is blocked
        with anyio.fail_after(10):  # turns a hang into a failure
            return await batcher.submit(2)

    try:
        assert anyio.run(other_host, backend=backend) == 4
    finally:
        unstick.set()
        host.join(HANG)
    assert got == {1: 2}
    batcher.stop()
    assert not batcher.running
