"""The event bus: typed events, one bounded stream per subscriber, never in a request's way.

``publish`` is synchronous and never waits: each matching subscriber has its own bounded
anyio memory stream; when one is full the event is dropped *for that subscriber only* and
counted. Callback subscribers are drained by a task in the kernel's task group, which takes
everything queued at each wake-up (so a hot loop of runs cannot starve it); what each one
missed is reported as a ``bus.dropped`` event and a warning log at most once a tick (0.25
s), however many events it drops, and once more when it is removed. A callback that raises
is logged with its name and counted; the request never sees it.
"""

from __future__ import annotations

import contextvars
import fnmatch
import inspect
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import attrs
import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aieng_hookspecs import loop_waker
from aieng_hookspecs.types import BusDropped, Event

__all__ = ["EventBus", "SubscriberStats", "Subscription", "Unsubscribe"]

log = structlog.get_logger(__name__)

Callback = Callable[[Event], "Awaitable[None] | None"]


@attrs.frozen
class SubscriberStats:
    """Delivery counters of one subscriber."""

    name: str
    pattern: str
    delivered: int
    dropped: int
    failed: int


class _Subscriber:
    __slots__ = ("name", "pattern", "pipeline", "source", "send", "receive", "delivered",
                 "dropped", "reported", "failed", "_matches", "ended", "summarized")

    def __init__(self, name: str, pattern: str, pipeline: str | None, buffer: int,
                 source: object | None = None) -> None:
        self.name = name
        self.pattern = pattern
        self.pipeline = pipeline
        self.source = source
        send, receive = anyio.create_memory_object_stream[Event](buffer)
        self.send: MemoryObjectSendStream[Event] = send
        self.receive: MemoryObjectReceiveStream[Event] = receive
        self.delivered = 0
        self.dropped = 0
        self.reported = 0
        self.failed = 0
        self._matches: dict[str, bool] = {}
        self.ended: anyio.Event | None = None  # a callback subscriber's task has ended
        self.summarized = False  # its exit summary is logged (once: a kernel re-entered)

    def wants(self, event: Event, source: object | None) -> bool:
        if self.source is not None and source is not None:
            if source is not self.source:  # another pipeline, perhaps of the same name
                return False
        elif self.pipeline is not None and event.pipeline != self.pipeline:
            return False
        name = event.name
        hit = self._matches.get(name)
        if hit is None:
            hit = self._matches[name] = fnmatch.fnmatchcase(name, self.pattern)
        return hit

    def stats(self) -> SubscriberStats:
        return SubscriberStats(self.name, self.pattern, self.delivered, self.dropped, self.failed)


class Subscription:
    """An async iterator over the events a ``subscribe`` call matched.

    ``dropped`` counts the events that did not fit its buffer while nobody read. After the
    ``subscribe`` block ends, the events still queued then stay readable: :meth:`pending`
    returns them and ``async for`` yields them, then ends.
    """

    def __init__(self, subscriber: _Subscriber) -> None:
        self._sub = subscriber
        # What was queued when the block ended, read from its start: a deque, as a list's
        # pop(0) moved every event behind it: 8 million moves to read a full 4,096 buffer.
        self._left: deque[Event] | None = None

    def _end(self) -> None:
        """Keep what is still queued and release the stream (it must not outlive the block:
        anyio warns about unclosed streams)."""
        left: deque[Event] = deque()
        while True:
            try:
                left.append(self._sub.receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        self._left = left
        self._sub.receive.close()

    @property
    def dropped(self) -> int:
        """Events that were published to this subscription but did not fit its buffer."""
        return self._sub.dropped

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._left is not None:
            if not self._left:
                raise StopAsyncIteration
            event = self._left.popleft()
        else:
            try:
                event = await self._sub.receive.receive()
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
        self._sub.delivered += 1
        return event

    def pending(self) -> list[Event]:
        """Take every event queued now without waiting (after the block: what was still
        queued when it ended, once)."""
        if self._left is not None:
            taken, self._left = list(self._left), deque()
            self._sub.delivered += len(taken)
            return taken
        taken = []
        while True:
            try:
                taken.append(self._sub.receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        self._sub.delivered += len(taken)
        return taken


class Unsubscribe:
    """What :meth:`EventBus.add_callback` returns: call it to unsubscribe; then await
    :meth:`drained` for the callback to have taken every event queued before."""

    __slots__ = ("_bus", "_sub")

    def __init__(self, bus: EventBus, sub: _Subscriber) -> None:
        self._bus = bus
        self._sub = sub

    def __call__(self) -> None:
        self._bus._remove(self._sub)

    async def drained(self) -> None:
        """Wait until the callback's task has ended (after an unsubscribe: once it took
        what was queued); at once when the bus is closed (the kernel drains it)."""
        if self._sub.ended is not None and self._bus._task_group is not None:
            await self._sub.ended.wait()


class EventBus:
    """Publish / subscribe for :class:`Event` values.

    :param buffer: events each subscriber may have queued before new ones are dropped.
    """

    #: How many removed subscribers :meth:`stats` keeps (the latest): a server subscribing
    #: per request must not keep every one it ever had.
    REMOVED_KEPT = 256

    def __init__(self, *, buffer: int = 4096) -> None:
        if buffer < 1:
            raise ValueError("buffer must be at least 1")
        self._buffer = buffer
        self._subscribers: list[_Subscriber] = []
        self._task_group: TaskGroup | None = None
        self._reporter_scope: anyio.CancelScope | None = None
        self._closed: deque[_Subscriber] = deque(maxlen=self.REMOVED_KEPT)
        self._context = contextvars.Context()  # the kernel's, taken when the bus starts
        self._loop_thread: int | None = None  # the thread of the loop the bus started in
        self._soon: Callable[..., object] | None = None  # calls soon on that loop, threadsafe

    def publish(self, event: Event, source: object | None = None) -> None:
        """Queue an event for every matching subscriber; never blocks, never raises.

        Safe from any thread: from one other than the event loop's (a ``@blocking`` impl),
        the event is handed to the loop, which queues it (the streams are not threadsafe).

        :param source: the pipeline object the event comes from, when known: a subscriber
            added for one pipeline object (:meth:`add_callback`'s ``source``) gets only its
            events, not those of another open pipeline of the same name.
        """
        if self._loop_thread is not None and threading.get_ident() != self._loop_thread:
            self._publish_from_thread(event, source)
            return
        for sub in self._subscribers:
            if sub.wants(event, source):
                try:
                    sub.send.send_nowait(event)
                except anyio.WouldBlock:
                    # A drop report that finds a full queue is not a drop: counting it
                    # would make the next report report it, and so on forever (two stuck
                    # subscribers of "*" would feed each other reports every tick).
                    if not isinstance(event, BusDropped):
                        sub.dropped += 1
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    pass

    def _publish_from_thread(self, event: Event, source: object | None) -> None:
        if self._soon is None:
            return
        try:
            self._soon(self.publish, event, source)
        except RuntimeError:  # the loop has closed: the kernel, and every subscriber, is gone
            pass

    def by_name(self, pipeline: str) -> bool:
        """Whether a subscriber takes events by that pipeline name alone (subscribed with
        ``pipeline=`` and no source): it gets those of every open pipeline so named."""
        return any(sub.pipeline == pipeline and sub.source is None for sub in self._subscribers)

    def listening(self, name: str) -> bool:
        """Whether any subscriber would receive an event of this name (to skip costly ones)."""
        return any(fnmatch.fnmatchcase(name, sub.pattern) for sub in self._subscribers)

    # -- callback subscribers (run in the kernel's task group) ----------------------------

    async def start(self, task_group: TaskGroup, *, report_every: float = 0.25) -> None:
        """Attach to the kernel's task group; callback subscribers run there, and a reporter
        publishes ``bus.dropped`` for every subscriber that missed events (a stuck callback
        or an unread subscription included) every ``report_every`` seconds."""
        self._task_group = task_group
        # Subscribers run in the context the bus started in, not in that of whoever adds
        # them: a pipeline built while handling a request (or during a run) must not have
        # its subscribers log with that request's bound ids, or emit into that run.
        self._context = contextvars.copy_context()
        self._loop_thread = threading.get_ident()
        self._soon = loop_waker()
        await task_group.start(self._reporter, report_every, name="aieng-bus-reporter")

    async def _reporter(self, interval: float, *,
                        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                        ) -> None:
        with anyio.CancelScope() as scope:
            self._reporter_scope = scope
            task_status.started()
            while True:
                await anyio.sleep(interval)
                for sub in list(self._subscribers):
                    self._report_drops(sub)

    def add_callback(
        self,
        callback: Callback,
        *,
        name: str,
        pattern: str = "*",
        pipeline: str | None = None,
        source: object | None = None,
    ) -> Unsubscribe:
        """Deliver matching events to ``callback`` (sync or async) from its own task.

        :param name: the subscriber's name, used in logs and stats (the plugin's name).
        :param pattern: shell-style pattern on event names (``"backend.*"``).
        :param pipeline: only events of this pipeline, when given.
        :param source: with ``pipeline``, the pipeline object itself: of the events
            published with a source, only its own (another open pipeline of the same name
            keeps its events); those published without one go by ``pipeline``.
        :returns: a function that unsubscribes (the task drains what is queued, then ends;
            ``await unsubscribe.drained()`` waits for that).
        """
        if self._task_group is None:
            raise RuntimeError("the bus is not running: it starts and closes with the kernel "
                               "('async with Kernel()')")
        sub = _Subscriber(name, pattern, pipeline, self._buffer, source)
        sub.ended = anyio.Event()
        group = self._task_group
        self._context.copy().run(
            lambda: group.start_soon(self._pump, sub, callback, name=f"aieng-subscriber:{name}"))
        self._subscribers.append(sub)
        return Unsubscribe(self, sub)

    async def _pump(self, sub: _Subscriber, callback: Callback) -> None:
        try:
            await self._deliver(sub, callback)
        finally:
            if sub.ended is not None:
                sub.ended.set()

    async def _deliver(self, sub: _Subscriber, callback: Callback) -> None:
        is_async = inspect.iscoroutinefunction(callback)
        async with sub.receive:
            while True:
                try:
                    first = await sub.receive.receive()
                except anyio.EndOfStream:
                    break
                batch = [first]
                while True:  # drain everything queued per wake-up
                    try:
                        batch.append(sub.receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                for event in batch:
                    try:
                        if is_async:
                            await callback(event)  # type: ignore[misc]
                        else:
                            # An object with an async __call__, or a lambda calling a
                            # coroutine function, returns an awaitable: await it.
                            returned = callback(event)
                            if inspect.isawaitable(returned):
                                await returned
                        sub.delivered += 1
                    except Exception as exc:  # a subscriber's fault never reaches a request
                        sub.failed += 1
                        log.warning("bus.subscriber_failed", subscriber=sub.name,
                                    event_name=event.name, run_id=event.run_id,
                                    pipeline=event.pipeline,
                                    error=f"{type(exc).__name__}: {exc}")
                # Its drops are the reporter's, once a tick: reported here after each
                # batch, a slow subscriber with a small buffer logged a warning (and
                # published a bus.dropped) for nearly every event it took.

    def _report_drops(self, sub: _Subscriber) -> None:
        missed = sub.dropped - sub.reported
        if missed > 0:
            sub.reported = sub.dropped
            log.warning("bus.dropped", subscriber=sub.name, dropped=missed, total=sub.dropped)
            self.publish(BusDropped(subscriber=sub.name, dropped=missed))

    def _remove(self, sub: _Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)
            # Its drops are reported now: the reporter only looks at current subscribers.
            self._report_drops(sub)
            self._closed.append(sub)
            # Kept for stats alone: not the pipeline object it was added for (a host that
            # builds a pipeline per tenant would keep the latest REMOVED_KEPT pipelines
            # alive, with their components: indexes, models, connections).
            sub.source = None
            sub.send.close()

    # -- iterator subscribers (read by the caller's own code) -----------------------------

    @asynccontextmanager
    async def subscribe(
        self, pattern: str = "*", *, pipeline: str | None = None, name: str = "subscription"
    ) -> AsyncIterator[Subscription]:
        """Receive matching events by iterating: ``async with bus.subscribe("stage.*") as s``.

        The buffer is bounded; events published while it is full are counted in
        ``s.dropped``. Leaving the block unsubscribes; what was queued then stays readable
        (``s.pending()``).
        """
        sub = _Subscriber(name, pattern, pipeline, self._buffer)
        self._subscribers.append(sub)
        subscription = Subscription(sub)
        try:
            yield subscription
        finally:
            self._remove(sub)
            subscription._end()

    def stats(self) -> list[SubscriberStats]:
        """Counters of every current subscriber and of the latest removed ones
        (:attr:`REMOVED_KEPT`)."""
        return [s.stats() for s in (*self._subscribers, *self._closed)]

    def close(self) -> None:
        """Stop accepting events; callback subscribers drain their queues and end."""
        self._task_group = None  # no callback may start in a group that is ending
        if self._reporter_scope is not None:
            self._reporter_scope.cancel()
        for sub in list(self._subscribers):
            self._report_drops(sub)
        for sub in list(self._subscribers):
            self._remove(sub)
        for sub in self._closed:
            if sub.dropped and not sub.summarized:
                sub.summarized = True
                log.warning("bus.subscriber_summary", subscriber=sub.name,
                            delivered=sub.delivered, dropped=sub.dropped, failed=sub.failed)
