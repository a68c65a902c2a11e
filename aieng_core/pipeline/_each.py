"""Components' lifecycle hooks: a pipeline's plugin manager, calling a hook of each
component concurrently (knowing which calls succeeded), closing a build that failed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import pluggy
import structlog

from aieng_hookspecs import PROJECT
from aieng_hookspecs.specs import ROLE_MODULES

from .._errors import HookError
from ..dispatch import Dispatcher, StagePolicy, concurrently
from ..registry import spec_names

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["CLOSE_POLICY", "ROLE_SPECS", "InUse", "call_each", "failed_build_closer",
           "role_plugin_manager", "threads_ended"]

log = structlog.get_logger("aieng_core.pipeline._pipeline")

CLOSE_POLICY = StagePolicy(timeout=None, on_error="fallback")

#: The role hooks' names: a component's method named like one must be ``@hookimpl``.
ROLE_SPECS = spec_names(ROLE_MODULES)


#: The :class:`InUse` counters the current task holds (a run inside a run: both).
_HOLDING: ContextVar[tuple[InUse, ...]] = ContextVar("aieng_in_use", default=())


class InUse:
    """Counts a pipeline's runs and index calls in flight (``with in_use.held():``), so
    that closing waits for them: a stage in flight must never call a closed component."""

    def __init__(self) -> None:
        self.count = 0
        self._idle: anyio.Event | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Count the block as in flight."""
        self.count += 1
        token = _HOLDING.set((*_HOLDING.get(), self))
        try:
            yield
        finally:
            _HOLDING.reset(token)
            self.count -= 1
            if not self.count and self._idle is not None:
                self._idle.set()

    async def ended(self) -> None:
        """Wait until none is in flight; at once when called from inside one of them (a
        run closing its own pipeline would wait for itself for ever)."""
        if self in _HOLDING.get():
            return
        while self.count:
            self._idle = anyio.Event()
            await self._idle.wait()


async def threads_ended(dispatcher: Dispatcher, pipeline: str, limit: float) -> None:
    """Wait, up to ``limit`` seconds, for the worker threads of ``@blocking`` calls whose
    caller left (a host's deadline, a stage's timeout) to end: a component closed under a
    thread still using it may fail there or lose what it writes. Past the limit, log a
    warning naming them and go on (a thread cannot be stopped from outside)."""
    threads = dispatcher.threads
    if not len(threads):
        return
    with anyio.move_on_after(limit):
        await threads.idle()
    if len(threads):
        log.warning("pipeline.closing_under_threads", pipeline=pipeline,
                    threads=dict(threads.labels), waited_s=limit,
                    hint="a @blocking impl still runs after its caller left: have it call "
                         "aieng_hookspecs.stop_if_cancelled() (anyio's check_cancelled) "
                         "between its steps")


def role_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with every role's hook specs: a pipeline's components go in one."""
    pm = pluggy.PluginManager(PROJECT)
    for module in ROLE_MODULES:
        pm.add_hookspecs(module)
    return pm


def failed_build_closer(
    kernel: Kernel, name: str, components: Sequence[tuple[str, object]]
) -> Callable[[], Coroutine[Any, Any, None]] | None:
    """What closes the components of a pipeline whose build failed (``aieng_pipeline_close``,
    gathered and shielded as in :meth:`Pipeline.aclose`); ``None`` when none closes."""
    pm = role_plugin_manager()
    for component, instance in components:
        try:
            pm.register(instance, name=component)
        except (ValueError, pluggy.PluginValidationError):
            # Its hooks do not validate, so none of them can be called, close included.
            log.warning("component.close_skipped", pipeline=name, component=component,
                        reason="invalid hook impl")
    dispatcher = Dispatcher(pm, emit=kernel.publish, limiter=lambda: kernel.thread_limiter)
    dispatcher.pipeline = name
    if not dispatcher.impls("aieng_pipeline_close"):
        return None

    async def close() -> None:
        with anyio.CancelScope(shield=True):
            await dispatcher.gather("aieng_pipeline_close", {}, stage="close",
                                    policy=CLOSE_POLICY)

    return close


async def call_each(
    dispatcher: Dispatcher,
    hook: str,
    kwargs: Callable[[str], Mapping[str, Any]],
    names: Iterable[str],
    *,
    stage: str,
    policy: StagePolicy,
    done: set[str],
) -> list[HookError]:
    """Call ``hook`` of each named component concurrently (as ``Dispatcher.gather`` does)
    with ``kwargs(name)``, adding the name of each whose call succeeded to ``done``.

    :returns: the failures under ``fallback``, whose components are left out of ``done``.
    :raises HookError: the first failure under ``fail`` / ``skip`` (the calls still running
        are cancelled; those that finished are in ``done``).
    """
    failures: list[HookError] = []

    async def one(name: str) -> None:
        try:
            await dispatcher.first(hook, kwargs(name), stage=stage, policy=policy,
                                   only=[name])
        except HookError as exc:
            if policy.on_error != "fallback":
                raise
            failures.append(exc)
            return
        done.add(name)

    await concurrently(partial(one, name) for name in names)
    return failures
