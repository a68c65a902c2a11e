"""``Pipeline.stream``: a run's deltas as an async iterator for a host that forwards them
(server-sent events, a websocket), then its result; on asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Delta, Request

from aieng_core import HookError, Kernel, RunStream
from aieng_core.testing.doubles import ScriptedBackend

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

ANSWER = "one two three four five six seven eight"


def _kernel() -> Kernel:
    return Kernel(env={}, entry_points=[], default_embedder=None)


class Counting:
    """A streaming backend double that counts the deltas it has produced, and whether its
    stream was ended early (closed by a cancellation)."""

    def __init__(self, words: int = 50) -> None:
        self.words = words
        self.produced = 0
        self.finished = False
        self.closed_early = False

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Delta]:
        try:
            for index in range(self.words):
                self.produced += 1
                yield Delta(text=f" w{index}", index=index)
                await anyio.lowlevel.checkpoint()
            yield Delta(text="", index=self.words, finish_reason="stop")
            self.finished = True
        except BaseException:
            self.closed_early = True
            raise


async def test_the_deltas_then_the_result() -> None:
    """The deltas come in order and add up to the answer; the result is the run's."""
    async with _kernel() as kernel:
        pipeline = kernel.compose({"llm": ScriptedBackend([ANSWER])})
        async with pipeline.stream("q") as drawn:
            first_id = drawn.run_id
            assert "".join([delta.text async for delta in drawn]) == ANSWER
        assert drawn.result.run_id == first_id  # known before the first delta
        async with pipeline.stream("q", run_id="r-1") as deltas:
            assert isinstance(deltas, RunStream) and deltas.run_id == "r-1"
            with pytest.raises(RuntimeError, match="has not finished"):
                deltas.result  # noqa: B018 - the property raises
            texts = [delta.text async for delta in deltas]
        assert "".join(texts) == ANSWER
        result = deltas.result
        assert (result.run_id, result.status, result.answer) == ("r-1", "ok", ANSWER)
        alone = await pipeline.run("q")
        assert alone.answer == result.answer


async def test_the_run_waits_for_its_reader() -> None:
    """No buffer: a reader that takes one delta and dawdles has the model wait (two
    deltas produced at most: the one taken and the one being handed over)."""
    backend = Counting()
    async with _kernel() as kernel:
        pipeline = kernel.compose({"llm": backend})
        async with pipeline.stream("q") as deltas:
            first = await deltas.__anext__()
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
            assert first.text == " w0" and backend.produced <= 2
            rest = [delta async for delta in deltas]
        assert len(rest) == backend.words and backend.finished


async def test_leaving_early_cancels_the_run() -> None:
    """A reader that stops (a client gone: ``break``) ends the model's stream there, and
    the pipeline serves the next run."""
    backend = Counting(words=1000)
    async with _kernel() as kernel:
        pipeline = kernel.compose({"llm": backend})
        async with pipeline.stream("q") as deltas:
            async for delta in deltas:
                if delta.index == 3:
                    break
        assert backend.closed_early and not backend.finished
        assert backend.produced < 10
        with pytest.raises(RuntimeError, match="has not finished"):
            deltas.result  # noqa: B018
        backend.words = 2
        again = await pipeline.run("again", on_delta=lambda delta: None)
        assert again.answer == " w0 w1"


async def test_a_failed_run_raises_its_error_not_a_group() -> None:
    """A run that fails raises its ``HookError`` itself (never an exception group) from
    the iteration, or when the block exits if the deltas were not read."""
    async with _kernel() as kernel:
        pipeline = kernel.compose({"llm": ScriptedBackend([ANSWER],
                                                          fail_with=RuntimeError("down"))})
        with pytest.raises(HookError, match="down"):
            async with pipeline.stream("q") as deltas:
                async for _ in deltas:
                    pass
        with pytest.raises(HookError, match="down"):
            async with kernel.bus.subscribe("run.finished") as finished, \
                    pipeline.stream("q") as deltas:
                await anext(finished)  # the run fails meanwhile; nothing read
                # (a fixed sleep lost the race on a busy machine: the block left before
                # the run failed, cancelling it)
        with pytest.raises(HookError, match="down"):
            deltas.result  # noqa: B018


async def test_the_hosts_deadline_cancels_the_stream() -> None:
    """A host's cancel scope around the block cancels the run like any of its awaits: its
    deadline passes once the host has had three deltas (a fixed deadline from the start
    may pass before the first on a busy machine)."""
    backend = Counting(words=10**6)
    async with _kernel() as kernel:
        pipeline = kernel.compose({"llm": backend})
        got: list[Any] = []
        with anyio.move_on_after(3600) as scope:
            async with pipeline.stream("q") as deltas:
                async for delta in deltas:
                    got.append(delta)
                    if len(got) == 3:
                        scope.deadline = anyio.current_time()  # the deadline passes now
        assert scope.cancelled_caught and len(got) == 3 and backend.closed_early


async def test_the_hosts_own_error_in_the_block_comes_out_as_itself() -> None:
    """An error of the host's code in the block (a socket gone while forwarding) cancels
    the run and comes out as itself, not inside an exception group."""
    backend = Counting(words=1000)
    async with _kernel() as kernel:
        pipeline = kernel.compose({"llm": backend})
        with pytest.raises(ConnectionResetError, match="client gone"):
            async with pipeline.stream("q") as deltas:
                async for delta in deltas:
                    if delta.index == 2:
                        raise ConnectionResetError("client gone")
        assert backend.closed_early and not backend.finished
