"""A run's deltas as an async iterator (``async with pipeline.stream(q) as deltas``), for a
host that forwards them (a web app's server-sent events, a websocket, a terminal)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from aieng_hookspecs.types import Delta

from ._result import RunResult

if TYPE_CHECKING:
    from anyio.abc import ObjectReceiveStream

__all__ = ["RunStream", "open_stream"]

_Run = Callable[[Callable[[Delta], Coroutine[Any, Any, None]]], Coroutine[Any, Any, RunResult]]


class RunStream:
    """The deltas of one run, in order, then its :class:`RunResult` (:attr:`result`).

    The run waits for each delta to be taken (no buffer): a slow reader slows the model
    down instead of piling up text. Iteration ends when the run has finished; a run that
    failed raises its error there (a :class:`~aieng_core.HookError`, never an exception
    group), as :meth:`Pipeline.run` would.

    Keep the ``async with`` block in one task: an async generator that yields from inside
    it (``async def events(): async with pipeline.stream(q) as d: ... yield``) may be
    closed by another task when its consumer is cancelled, which the block's task group
    refuses ("cancel scope in a different task"); forward the deltas from the block itself.
    """

    def __init__(self, run_id: str, receive: ObjectReceiveStream[Delta]) -> None:
        #: the run's id, known before its first delta (a host's first event may carry it).
        self.run_id = run_id
        self._receive = receive
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        self._ended = anyio.Event()  # the run returned or raised
        self.exhausted = False  #: every delta was taken and the run ended

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> Delta:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            await self._ended.wait()
            self.exhausted = True
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None

    @property
    def result(self) -> RunResult:
        """The run's result, once every delta is taken (the run has ended).

        :raises RuntimeError: while the run has not finished.
        """
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise RuntimeError("the run has not finished: take every delta first "
                               "(async for), or read result after the block")
        return self._result


@asynccontextmanager
async def open_stream(run_id: str, run: _Run) -> AsyncIterator[RunStream]:
    """Start ``run(on_delta)`` (the run ``run_id``) in a task of its own; the stream of its
    deltas.

    Leaving the block before the deltas are all taken (a ``break``, the client gone, an
    error in the block) cancels the run; leaving it after waits for the run's end (its
    output checks, its judges) so that :attr:`RunStream.result` is there.
    """
    send, receive = anyio.create_memory_object_stream[Delta](0)
    stream = RunStream(run_id, receive)

    async def produce() -> None:
        try:
            async with send:
                stream._result = await run(send.send)
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:  # noqa: BLE001 - raised to the reader, not grouped
            stream._error = exc
        finally:
            stream._ended.set()

    failure: BaseException | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(produce)
        try:
            yield stream
        except BaseException as exc:  # noqa: BLE001 - raised after the group, ungrouped
            # (an exception leaving a task group's body comes out as an ExceptionGroup)
            failure = exc
        finally:
            if not stream.exhausted:
                group.cancel_scope.cancel()
            receive.close()
    if failure is not None:
        raise failure
    if stream._error is not None and not stream.exhausted:
        raise stream._error
