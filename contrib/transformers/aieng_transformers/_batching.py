"""Dynamic batching: concurrent calls coalesce into one batch run by a batcher thread.

A caller :meth:`Batcher.submit` s an item and waits on an ``anyio.Event``; the batcher
thread takes the first waiting item, gathers more until the batch holds ``max_batch``
units or ``max_wait_ms`` has passed since it took the first (on the monotonic clock: a
wall clock set back or forward neither holds a batch open nor closes it early), runs the
batch (a blocking function of the whole list: one padded forward pass, one batched
decode), and wakes each caller in its own event loop with its own result or its own
error. The wake-up is posted to the caller's loop without waiting for it to run: a
caller's loop that is busy, blocked or shutting down delays that caller only, never the
next batch (waiting for it would leave every other caller waiting, for ever when the
loop has stopped).

- **Errors**: when the batch function raises, each item of the batch is run again alone,
  so a bad item fails its own caller only (items whose caller stopped waiting meanwhile
  are not rerun); the function may also return an exception in an item's place.
- **Cancellation**: a caller that stops waiting (cancelled, timed out) marks its ticket;
  a ticket not yet run is dropped from its batch, one being run may watch
  :attr:`Ticket.cancelled` (a batched decode drops the row; an embedding batch stops
  between passes once all its callers are gone: :func:`stop_when`) and its result is
  discarded. The other callers of the batch are not affected.
- **Lifecycle**: the thread starts on the first submit (components start it when their
  pipeline opens) and :meth:`Batcher.stop` ends it after the batches in hand (the
  components stop it when their pipeline closes); items still queued then fail with
  ``RuntimeError``. A later submit starts a new thread.

The thread is a thread, not an event-loop task, because a component's open hook returns
before the pipeline runs: no task group of the kernel outlives it, and the batch work is
blocking anyway.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import attrs
import structlog
from aieng_hookspecs import loop_waker

__all__ = ["Abandoned", "Batcher", "Checkpoint", "EmbedBatcher", "Ticket", "checked_texts",
           "stop_when"]

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: What blocking work calls between its steps (forward passes): returns, or raises
#: :class:`Abandoned` to end the work because nobody waits for it any more.
Checkpoint = Callable[[], None]


class Abandoned(RuntimeError):
    """Raised in a worker thread by work whose callers have all stopped waiting (cancelled,
    timed out): nobody reads its result, so it stops between two steps instead of running
    to its end holding the model's lock."""


def stop_when(*flags: threading.Event) -> Checkpoint:
    """A :data:`Checkpoint` raising :class:`Abandoned` once every one of ``flags`` is set
    (each set by a caller that stopped waiting)."""

    def checkpoint() -> None:
        if all(flag.is_set() for flag in flags):
            raise Abandoned("every caller of this work stopped waiting for it")

    return checkpoint


def _waker() -> Callable[..., object]:
    # The running loop's way to post a call from another thread without waiting for it
    # (a stuck caller's loop must not hold up the batch); called in the loop's thread.
    soon = loop_waker()
    if soon is not None:
        return soon
    token = anyio.lowlevel.current_token()  # pragma: no cover - no other anyio backend

    def waiting(func: Callable[..., object], *args: object) -> object:  # pragma: no cover
        return anyio.from_thread.run_sync(func, *args, token=token)

    return waiting  # pragma: no cover


@attrs.define(eq=False)
class Ticket(Generic[T, R]):
    """One caller's item in the batcher: what it asked, and where its answer goes.

    :param item: the caller's item.
    :param size: the units it adds to a batch (texts of an embed call; 1 per request).
    """

    item: T
    size: int
    #: Schedules a call in the caller's event loop from another thread, without waiting.
    wake: Callable[..., object]
    done: anyio.Event
    #: Set when the caller stopped waiting: skip or abandon the item.
    cancelled: threading.Event = attrs.field(factory=threading.Event)
    result: R | None = None
    error: BaseException | None = None


Work = Callable[[Sequence[Ticket[T, R]]], Sequence["R | BaseException"]]


class Batcher(Generic[T, R]):
    """Coalesces concurrent :meth:`submit` calls into batches run by ``work``.

    :param work: the blocking batch function: tickets in, one result (or exception) per
        ticket out, in order.
    :param max_batch: the most units per batch (an item larger than that runs alone).
    :param max_wait_ms: how long a batch waits for more items after its first.
    :param name: the thread's name (and the log events').
    """

    def __init__(self, work: Work[T, R], *, max_batch: int, max_wait_ms: float, name: str) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if not 0 <= max_wait_ms < math.inf:  # NaN too: it fails every comparison
            raise ValueError(f"max_wait_ms must be a finite number of milliseconds, at least "
                             f"0, not {max_wait_ms}")
        self._work = work
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.name = name
        self._queue: queue.SimpleQueue[Ticket[T, R] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        #: Batches run and items run (for logs and tests).
        self.batches = 0
        self.items = 0

    @property
    def running(self) -> bool:
        """Whether the batcher thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the batcher thread (no-op when it runs)."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        # Under the lock.
        if not self.running:
            self._stopping = threading.Event()
            self._thread = threading.Thread(
                target=self._loop, args=(self._stopping,), name=self.name, daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """End the batcher thread after the batch in hand (blocking: call it in a worker
        thread); items queued behind it fail with ``RuntimeError``."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None and thread.is_alive():
                self._stopping.set()
                self._queue.put(None)  # wakes the thread if it waits for a first item
        if thread is not None:
            thread.join()

    async def submit(self, item: T, size: int = 1) -> R:
        """Queue ``item`` and wait for its result.

        :raises BaseException: the error the batch function gave this item.
        """
        ticket: Ticket[T, R] = Ticket(item, size, _waker(), anyio.Event())
        # Started and queued under the lock: a stop() (a close, in a worker thread) between
        # the two would end the thread before the ticket is queued, and leave its caller
        # waiting forever. Now the ticket is queued ahead of the stop's wake-up (and run or
        # failed), or after it, for a thread of its own.
        with self._lock:
            self._start()
            self._queue.put(ticket)
        try:
            await ticket.done.wait()
        except BaseException:
            ticket.cancelled.set()
            raise
        if ticket.error is not None:
            raise ticket.error
        return ticket.result  # type: ignore[return-value]

    # -- the thread ----------------------------------------------------------------------

    def _loop(self, stopping: threading.Event) -> None:
        carry: Ticket[T, R] | None = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is None or stopping.is_set():
                if first is not None:
                    self._fail([first])
                self._drain()
                return
            batch, size, halt = [first], first.size, False
            deadline = time.monotonic() + self.max_wait
            while size < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    following = (
                        self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if following is None:
                    halt = True
                    break
                if size + following.size > self.max_batch:
                    carry = following
                    break
                batch.append(following)
                size += following.size
            live = [t for t in batch if not t.cancelled.is_set()]
            if live:
                self._run(live)
            if halt or stopping.is_set():
                if carry is not None:
                    self._fail([carry])
                self._drain()
                return

    def _run(self, tickets: list[Ticket[T, R]]) -> None:
        self.batches += 1
        self.items += len(tickets)
        try:
            results = list(self._work(tickets))
            if len(results) != len(tickets):
                raise RuntimeError(
                    f"{self.name}: the batch function returned {len(results)} "
                    f"results for {len(tickets)} items"
                )
        except Exception as error:  # noqa: BLE001 - delivered to the callers below
            if all(ticket.cancelled.is_set() for ticket in tickets):
                return  # nobody waits (the work may have stopped for that: Abandoned)
            if len(tickets) == 1:
                results = [error]
            else:
                log.info(
                    "batch.isolating", batcher=self.name, items=len(tickets), error=repr(error)
                )
                for ticket in tickets:  # one bad item fails its own caller only
                    if not ticket.cancelled.is_set():  # nobody reads a gone caller's rerun
                        self._run([ticket])
                return
        for ticket, result in zip(tickets, results, strict=True):
            if isinstance(result, BaseException):
                ticket.error = result
            else:
                ticket.result = result
        self._wake(tickets)

    def _fail(self, tickets: list[Ticket[T, R]]) -> None:
        for ticket in tickets:
            ticket.error = RuntimeError(
                f"{self.name} stopped before this call ran (its pipeline closed)"
            )
        self._wake(tickets)

    def _drain(self) -> None:
        left: list[Ticket[T, R]] = []
        while True:
            try:
                ticket = self._queue.get_nowait()
            except queue.Empty:
                break
            if ticket is not None:
                left.append(ticket)
        self._fail(left)

    @staticmethod
    def _wake(tickets: list[Ticket[T, R]]) -> None:
        # One call into each caller's event loop per batch, not one per ticket; posted,
        # not waited for: a loop that is slow to run it (busy, blocked, stopped without
        # being closed) must not hold up the next batch, nor the other loops' callers.
        loops: dict[Any, list[Ticket[T, R]]] = {}
        for ticket in tickets:  # one loop's bound scheduling methods compare equal
            loops.setdefault(ticket.wake, []).append(ticket)
        for wake, group in loops.items():
            try:
                wake(_set_all, group)
            except RuntimeError:  # that caller's event loop has ended: nobody waits
                continue


def _set_all(tickets: list[Ticket[Any, Any]]) -> None:
    for ticket in tickets:
        ticket.done.set()


def checked_texts(texts: Sequence[object]) -> list[str]:
    """``texts`` as a list of strings; checked before a call joins a batch, so a caller
    passing something else fails alone, with its own error.

    :raises TypeError: for one string instead of a sequence of them (it would embed each
        character), or naming the first item that is not a string.
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"aieng_embed takes a sequence of strings, not one {type(texts).__name__}: "
            f"wrap it in a list ({texts!r:.40})"
        )
    for value in texts:
        if not isinstance(value, str):
            raise TypeError(
                f"aieng_embed takes strings, not {type(value).__name__}: {value!r:.80}"
            )
    return list(texts)  # type: ignore[arg-type]


class EmbedBatcher(Batcher[list[str], "Vectors"]):
    """Dynamic batching of embed calls: the texts of concurrent calls go to ``encode`` as
    one list (one tokenizer call, the encoder's own passes over all of them) and each
    caller gets its own rows, copied out of the batch's array.

    :param encode: blocking: texts in, one row per text out, in order; it calls its
        :data:`Checkpoint` before each pass, which stops it once every caller of the
        batch has stopped waiting.
    """

    def __init__(
        self,
        encode: Callable[[list[str], Checkpoint], Vectors],
        *,
        max_batch: int,
        max_wait_ms: float,
        name: str,
    ) -> None:
        super().__init__(
            self._encode_batch, max_batch=max_batch, max_wait_ms=max_wait_ms, name=name
        )
        self._encode = encode

    def _encode_batch(self, tickets: Sequence[Ticket[list[str], Vectors]]) -> list[Vectors]:
        vectors = self._encode([text for ticket in tickets for text in ticket.item],
                               stop_when(*(ticket.cancelled for ticket in tickets)))
        out: list[Vectors] = []
        start = 0
        for ticket in tickets:
            out.append(vectors[start : start + len(ticket.item)].copy())
            start += len(ticket.item)
        return out
