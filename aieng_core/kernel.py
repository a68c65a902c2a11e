"""The kernel: a registry of plugins, an event bus, and the pipelines built from them."""

from __future__ import annotations

import contextlib
import importlib.metadata as metadata
import math
import os
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog
from anyio.abc import TaskGroup

from aieng_hookspecs.types import Event

from .bus import EventBus
from .dispatch import Dispatcher, HookMonitor
from .logs import configure_logging, configure_stdlib_logging, logging_configured
from .pipeline import INSTANCE, Pipeline, PipelineConfig
from .registry import Registry
from .watchdog import watch_loop

__all__ = ["Kernel"]

log = structlog.get_logger(__name__)


def _seconds(value: object, name: str, *, zero: bool = False, none: str = "") -> float:
    """``value`` as seconds: a finite number, positive (or ``>= 0`` with ``zero``).

    :raises ValueError: naming the option, its unit and what it got (a string with a unit
        such as ``"30s"`` included: the option takes a number of seconds).
    """
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        least = ">= 0" if zero else "> 0"
        alternative = f", or {none}" if none else ""
        raise ValueError(f"{name} takes a finite number of seconds {least}{alternative}; "
                         f"got {value!r}")
    return float(number)


def _count(value: object, name: str) -> int:
    """``value`` as a count: an integer >= 1.

    :raises ValueError: naming the option and what it got.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} takes an integer >= 1; got {value!r}")
    return value


class Kernel:
    """Everything hangs off a kernel: no module-level state, nothing done at import time.

    Use it as an async context manager; the event bus's subscribers and the loop watchdog
    run in its task group::

        async with Kernel() as kernel:
            pipeline = kernel.load_pipeline("qa.toml")
            result = await pipeline.run("What is RRF?")

    :param env: environment for ``AIENG_PLUGINS`` / ``AIENG_DISABLE_PLUGINS``
        (``os.environ`` by default).
    :param entry_points: entry points to load instead of the installed ones (tests).
    :param builtins: load the kernel's built-in components.
    :param bus_buffer: events each subscriber may have queued before drops (an integer
        >= 1).
    :param loop_block_threshold: report a ``loop.blocked`` event when the event loop stalls
        longer than this many seconds (a positive finite number; ``None``: no watchdog).
        The time the loop's thread waited for a CPU on a busy machine does not count,
        where the system says it (Linux).
    :param worker_threads: the most ``@blocking`` impls running in threads at once (an
        integer >= 1).
    :param default_embedder: the registered component that embeds for pipelines that have
        no embedding component of their own (``None``: none).
    :raises ValueError: for a value out of its range or of the wrong type, naming it.

    Logging: a program that configured structlog keeps its set-up; one that configured
    only the standard library's ``logging`` (handlers on the root logger) gets the kernel's
    lines through ``logging``, under the modules' logger names (``aieng_core.dispatch``),
    so its handlers, levels and format apply; one that configured neither gets JSON lines
    on standard error, ``WARNING`` and above (``$AIENG_LOG_LEVEL``). Decided when the first
    kernel is made.
    """

    #: How many pipelines open at once (built, not closed) make the kernel warn, and again
    #: at each doubling: a host building one per request and never closing them.
    OPEN_PIPELINES_WARN = 1_000

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        entry_points: Iterable[metadata.EntryPoint] | None = None,
        builtins: bool = True,
        bus_buffer: int = 4096,
        loop_block_threshold: float | None = 0.25,
        worker_threads: int = 8,
        default_embedder: str | None = "minilm",
    ) -> None:
        bus_buffer = _count(bus_buffer, "Kernel(bus_buffer=...)")
        worker_threads = _count(worker_threads, "Kernel(worker_threads=...)")
        if loop_block_threshold is not None:
            loop_block_threshold = _seconds(
                loop_block_threshold, "Kernel(loop_block_threshold=...)",
                none="None for no watchdog")
        if not structlog.is_configured():
            # structlog unconfigured prints every level to standard output, debug lines in
            # a program's output; a program that configures structlog keeps its own set-up.
            if logging_configured():  # the host's own handlers: its levels and format
                configure_stdlib_logging()
            else:
                try:
                    configure_logging(level=os.environ.get("AIENG_LOG_LEVEL") or "WARNING",
                                      default=True)
                except ValueError:  # a bad level: the CLI reports it; a library keeps going
                    configure_logging(level="WARNING", default=True)
        self.registry = Registry(env=os.environ if env is None else env,
                                 entry_points=entry_points, builtins=builtins)
        self.bus = EventBus(buffer=bus_buffer)
        self.hook_monitors: list[HookMonitor] = []
        self._threshold = loop_block_threshold
        self._workers = worker_threads
        self._limiter: anyio.CapacityLimiter | None = None
        self._task_group: TaskGroup | None = None
        self._pipelines: list[Pipeline] = []  # built and not closed yet
        self._open_warned = 0  # how many were open at the latest kernel.pipelines_open
        # closers of failed builds' components, waiting for the kernel to start
        self._unbuilt: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._watchdog: anyio.CancelScope | None = None
        self._plugin_subscriptions: dict[str, Callable[[], None]] = {}
        self.default_embedder_name = default_embedder
        self._embedder: Pipeline | None = None
        self._embedder_lock = anyio.Lock()
        self._loaded = False
        self._home: tuple[int, int] = (0, 0)  # (process, thread) the kernel runs in
        self._drain_timeout = 5.0

    @property
    def drain_timeout(self) -> float:
        """Seconds subscribers get to drain their queues when the kernel exits, and a
        closing pipeline waits for worker threads its runs left behind (5 by default; a
        finite number >= 0).

        :raises ValueError: when set to anything else, naming it.
        """
        return self._drain_timeout

    @drain_timeout.setter
    def drain_timeout(self, value: float) -> None:
        self._drain_timeout = _seconds(value, "Kernel.drain_timeout", zero=True)

    def load(self) -> Kernel:
        """Load the plugins (once). Called by ``__aenter__`` and the CLI."""
        if not self._loaded:
            self._loaded = True
            self.registry.load()
        return self

    @property
    def thread_limiter(self) -> anyio.CapacityLimiter | None:
        """The limiter of worker threads (created when the kernel starts)."""
        return self._limiter

    def _check_caller(self) -> None:
        """Refuse a call from where the running kernel does not live: a process forked from
        the one it runs in, or another thread's event loop (its locks, events and streams
        belong to its own loop: a waiter elsewhere is never woken, or fails deep inside).

        :raises RuntimeError: saying what to do instead.
        """
        if self._task_group is None:
            return
        process, thread = self._home
        if os.getpid() != process:
            raise RuntimeError(
                f"this kernel was started in process {process} and this is a child forked "
                f"from it ({os.getpid()}): a running kernel (its event loop, threads and "
                "connections) does not survive a fork; create the Kernel and its pipelines "
                "in the child (a pool's initializer), or use the 'spawn' or 'forkserver' "
                "start method")
        if threading.get_ident() != thread:
            raise RuntimeError(
                "this kernel runs in another thread's event loop, and its pipelines belong "
                "to that loop: call them there (anyio.from_thread.run from a thread it "
                "started, or a blocking portal), or use a kernel of this loop's own")

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("a Kernel cannot be pickled: create one in the other process (from "
                        "the same env and pipeline configs, which pickle)")

    async def __aenter__(self) -> Kernel:
        self._check_caller()  # entered again in a forked child: say why it cannot
        if self._task_group is not None:
            # A second entry would replace the task group and the bus's while the first
            # still runs, and leave that group never exited.
            raise RuntimeError("this kernel is already running: enter 'async with kernel' "
                               "once at a time (entering it again after it exits is fine)")
        self.load()
        self._home = (os.getpid(), threading.get_ident())
        # Of this entry's loop: one made in an earlier loop (a Kernel() made inside a first
        # asyncio.run) fails deep inside on trio ("no running event loop").
        self._embedder_lock = anyio.Lock()
        self._limiter = anyio.CapacityLimiter(self._workers)
        group = self._task_group = anyio.create_task_group()
        await group.__aenter__()
        try:  # the only awaits: nothing else has started when one is cancelled
            await self.bus.start(group)
            if self._threshold is not None:
                await group.start(self._watch, self._threshold, name="aieng-watchdog")
        except BaseException:
            # A cancellation pending as the kernel starts: the group must be left, or the
            # caller's cancel scopes break and the kernel stays "already running".
            self._task_group = None
            self.bus.close()
            group.cancel_scope.cancel()
            with contextlib.suppress(anyio.get_cancelled_exc_class()):
                await group.__aexit__(None, None, None)
            raise
        for impl in self.registry.plugin_manager.hook.aieng_on_event.get_hookimpls():
            self._subscribe_plugin(impl.plugin_name, impl.function)
        # Plugins registered while running (the kit's register_plugin) subscribe too.
        self.registry.on_change(self._plugin_changed)
        for pipeline in self._pipelines:  # built before the kernel started
            pipeline._open()
        unbuilt, self._unbuilt = self._unbuilt, []
        for close in unbuilt:  # components of builds that failed before the kernel started
            group.start_soon(close)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._task_group is None:
            raise RuntimeError("the kernel is not running: use 'async with kernel'")
        try:
            # The default embedder last: the others may embed with it until they are closed.
            # Each one closes whatever another's closing raised (a cancelled wait for a hung
            # run); the first such exception is raised once all are closed.
            failure: BaseException | None = None
            for pipeline in sorted(self._pipelines, key=lambda p: p is self._embedder):
                try:
                    await pipeline.aclose()
                except BaseException as exc:  # noqa: BLE001 - raised once all are closed
                    failure = failure or exc
            if failure is not None:
                raise failure
        finally:
            self._embedder = None  # closed above: a later entry builds it afresh
            if self._watchdog is not None:
                self._watchdog.cancel()
            self.registry.on_change(None)
            self.bus.close()  # callback subscribers drain what is queued, then end
            # A subscriber stuck in its callback must not hang shutdown forever.
            self._task_group.cancel_scope.deadline = anyio.current_time() + self.drain_timeout
            group, self._task_group = self._task_group, None
            # The body's own exception propagates as it is: the group is told the body ended
            # cleanly so it does not wrap that exception in an ExceptionGroup. Its children
            # (subscribers, watchdog) never raise, and end once the bus is closed.
            await group.__aexit__(None, None, None)

    async def _watch(self, threshold: float, *,
                     task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.CancelScope() as scope:
            self._watchdog = scope
            task_status.started()
            await watch_loop(threshold, self._dispatchers, self.publish)

    def _subscribe_plugin(self, name: str, function: Callable[..., Any]) -> None:
        self._plugin_subscriptions[name] = self.bus.add_callback(function, name=name)

    def _plugin_changed(self, name: str, loaded: bool) -> None:
        if self._task_group is None:
            return
        if not loaded:
            unsubscribe = self._plugin_subscriptions.pop(name, None)
            if unsubscribe is not None:
                unsubscribe()
            return
        for impl in self.registry.plugin_manager.hook.aieng_on_event.get_hookimpls():
            if impl.plugin_name == name:
                self._subscribe_plugin(name, impl.function)

    def _close_later(self, close: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Close the components of a failed build: now, in the kernel's task group, or when
        the kernel starts (closing may be async, and building is not)."""
        if self._task_group is not None:
            self._task_group.start_soon(close)
        else:
            self._unbuilt.append(close)

    def _forget(self, pipeline: Pipeline) -> None:
        """Drop a closed pipeline: it never runs again, so there is nothing to close."""
        if pipeline in self._pipelines:
            self._pipelines.remove(pipeline)

    def publish(self, event: Event, source: object | None = None) -> None:
        """Publish an event on the kernel's bus (``source``: the pipeline object it comes
        from, when known)."""
        self.bus.publish(event, source)

    def _dispatchers(self) -> list[Dispatcher]:
        return [p.dispatcher for p in self._pipelines]

    # -- pipelines -----------------------------------------------------------------------

    def pipeline(self, config: PipelineConfig | Mapping[str, Any], *,
                 trace_hooks: bool = False) -> Pipeline:
        """Build a pipeline from a config (or its dict form) on this kernel.

        :param trace_hooks: emit a ``hook.called`` event for every impl call.
        :raises ConfigError: when the config is invalid or a component fails to start.
        """
        self.load()
        if not isinstance(config, PipelineConfig):
            config = PipelineConfig.from_dict(config, self.registry)
        return self._keep(Pipeline(self, config, trace_hooks=trace_hooks))

    def load_pipeline(self, path: str | Path, *, trace_hooks: bool = False) -> Pipeline:
        """Load a TOML pipeline file and build it.

        :raises ConfigError: naming the file, the key path, the expected type and choices.
        """
        self.load()
        return self.pipeline(PipelineConfig.load(path, self.registry), trace_hooks=trace_hooks)

    def compose(
        self,
        components: Mapping[str, object],
        *,
        name: str = "composed",
        stages: Iterable[str] | None = None,
        timeout: float | None = 30.0,
        on_error: str = "fail",
        stage: Mapping[str, Mapping[str, Any]] | None = None,
        trace_hooks: bool = False,
        stream: str = "guarded",
        single_flight: bool = False,
    ) -> Pipeline:
        """Build a pipeline from component *instances* (tests, notebooks, embedding apps).

        The same validation as a file applies to the stages and policies; the components
        skip the registry, since they are already built. The keyword arguments are the
        ``[pipeline]`` table's keys, ``stage`` its ``[stage.NAME]`` tables.
        """
        self.load()
        instances = dict(components)
        head: dict[str, Any] = {"name": name, "on_error": on_error, "stream": stream,
                                "single_flight": single_flight}
        if stages is not None:
            head["stages"] = list(stages)
        head["timeout"] = math.inf if timeout is None else timeout
        data = {"pipeline": head, "stage": {k: dict(v) for k, v in (stage or {}).items()},
                "components": {n: {"use": INSTANCE} for n in instances}}
        config = PipelineConfig.from_dict(data, self.registry, source=f"<compose {name}>")
        return self._keep(Pipeline(self, config, trace_hooks=trace_hooks, instances=instances))

    def _keep(self, pipeline: Pipeline) -> Pipeline:
        """Keep a pipeline just built (subscribed now if the kernel runs), warning when it
        shares its name with another open one while a subscription takes events by that
        name (``bus.subscribe(pipeline=NAME)``): it gets both pipelines' events (a monitor
        counting twice). Components' own subscribers get their pipeline's alone."""
        shared = [p for p in self._pipelines if p.name == pipeline.name]
        if shared and self.bus.by_name(pipeline.name):
            log.warning("pipeline.name_shared", pipeline=pipeline.name, open=len(shared) + 1,
                        hint="a subscription to this pipeline name gets the events of every "
                             "open pipeline so named: give each pipeline its own name")
        if self._task_group is not None:
            pipeline._open()
        self._pipelines.append(pipeline)
        held = len(self._pipelines)
        if held >= max(self.OPEN_PIPELINES_WARN, 2 * self._open_warned):  # once a doubling
            self._open_warned = held
            log.warning("kernel.pipelines_open", open=held,
                        hint="the kernel keeps each pipeline it built, with its components, "
                             "until it is closed or the kernel exits: close each one when "
                             "done ('await pipeline.aclose()', or 'async with "
                             "kernel.pipeline(...) as pipeline')")
        return pipeline

    async def default_embedder(self) -> Pipeline | None:
        """The one-component pipeline of the default embedder, built and opened on first
        use; ``None`` when no installed plugin offers it."""
        name = self.default_embedder_name
        if name is None:
            return None
        async with self._embedder_lock:
            if self._embedder is None or self._embedder._closed:  # closed by its user
                self.load()
                if name not in self.registry.components:
                    return None
                info = self.registry.component(name)
                instance = info.build()
                self._embedder = self.compose({name: instance}, name=f"default-embedder:{name}")
            await self._embedder.open()
        return self._embedder

    def add_hook_monitor(self, monitor: HookMonitor) -> Callable[[], None]:
        """Tell ``monitor`` about every impl call of every pipeline; returns the remover."""
        self.hook_monitors.append(monitor)
        return lambda: self.hook_monitors.remove(monitor)
