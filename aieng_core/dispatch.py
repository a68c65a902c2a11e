"""The dispatcher: the only place role hooks are called.

pluggy's own call loop never runs them: its ``firstresult`` would take an un-awaited
coroutine for a result. The dispatcher walks a hook's impls in pluggy's order (tryfirst,
then last-registered first, then trylast), passes each only the arguments it declares, and
awaits it with the declared mode (first, gather or chain), a timeout and an error policy.
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from functools import partial
from typing import Any, Literal, cast

import anyio
import attrs
import pluggy
import structlog
from pluggy import HookImpl

from aieng_hookspecs import PROJECT
from aieng_hookspecs.types import ErrorEvent, Event, HookCalled

from ._errors import HookError, concurrently, first_hook_error
from ._scope import CURRENT_RUN
from ._steps import DeadlinePassed, Resumed, Steps
from ._threads import NO_THREAD_HINT, Running, Slot, run_in_worker

__all__ = ["Check", "Dispatcher", "HookMonitor", "ImplCall", "StagePolicy", "concurrently",
           "expect", "first_hook_error"]

log = structlog.get_logger(__name__)

OnError = Literal["fail", "skip", "fallback"]
ON_ERROR: tuple[str, ...] = ("fail", "skip", "fallback")


@attrs.frozen
class StagePolicy:
    """How a stage treats its impls' failures.

    :param timeout: seconds each impl call may take (``None``: no limit), measured on the
        event loop's monotonic clock. A plain sync impl that runs inline cannot be
        interrupted; mark it ``@blocking`` to make it cancellable.
    :param on_error: ``fail`` raises :class:`HookError`; ``skip`` raises too, and the
        pipeline then skips the stage with an ``error`` event; ``fallback`` moves on to the
        next impl (first), drops the failed result (gather) or passes the previous value on
        (chain), with an ``error`` event each time.
    :param option: the setting the timeout came from (``[stage.generate] timeout``), named
        in a timeout's hint (not part of equality).
    """

    timeout: float | None = attrs.field(default=30.0)
    on_error: OnError = attrs.field(default="fail", validator=attrs.validators.in_(ON_ERROR))
    option: str = attrs.field(default="", eq=False, validator=attrs.validators.instance_of(str))

    @timeout.validator
    def _positive(self, attribute: attrs.Attribute[float | None], value: float | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not value > 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, "
                             f"got {value!r}")

    def raise_hint(self) -> str:
        """How to give the impls more time: the setting to raise, when known."""
        if self.option:
            return f"raise {self.option} (seconds; inf for no limit)"
        return "raise the stage's timeout"


DEFAULT_POLICY = StagePolicy()


@attrs.frozen
class ImplCall:
    """What a hook monitor sees of one impl call."""

    hook: str
    plugin: str
    stage: str
    kwargs: Mapping[str, Any]
    outcome: str  # ok | none | error | timeout
    result: Any
    error: BaseException | None
    duration_s: float


HookMonitor = Callable[[ImplCall], None]
#: Checks an impl's (non-``None``) return value: ``""`` when it is right, else what is wrong
#: (``"returned str, expected Completion"``). A wrong value is a failure of that impl.
Check = Callable[[Any], str]
_WRONG_TYPE_HINT = "return the aieng_hookspecs.types value the spec names"

_SYNC, _ASYNC, _BLOCKING = 0, 1, 2


class Dispatcher:
    """Calls the role hooks of one plugin manager (a pipeline's components).

    :param pm: the plugin manager holding the component instances.
    :param emit: publishes an event (``error``, ``hook.called``).
    :param labels: maps a plugin name to ``(name, distribution label)`` for error messages.
    :param monitors: callables told about every impl call (the testing kit's recorder).
    :param trace_hooks: whether to emit a ``hook.called`` event per impl call.
    :param limiter: returns the limiter bounding the worker threads of ``@blocking`` impls.
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        *,
        emit: Callable[[Event], None],
        labels: Callable[[str], str] = lambda name: "",
        monitors: Sequence[HookMonitor] = (),
        trace_hooks: bool = False,
        limiter: Callable[[], anyio.CapacityLimiter | None] = lambda: None,
    ) -> None:
        self._pm = pm
        self._emit = emit
        self._labels = labels
        self._monitors = monitors
        self.trace_hooks = trace_hooks
        self._limiter = limiter
        self._kinds: dict[Callable[..., Any], int] = {}
        #: impls in flight: token -> (plugin.hook label, start), read by the loop watchdog.
        self.active: dict[int, tuple[str, float]] = {}
        #: recently finished impl calls (or steps of suspended async impls): (label, start,
        #: end), for the loop watchdog.
        self.recent: deque[tuple[str, float, float]] = deque(maxlen=1024)
        #: ``@blocking`` calls whose threads still run (their callers may have left).
        self.threads = Running()
        self.pipeline = ""

    def _publish(self, make: Callable[[str, str], Event]) -> None:
        scope = CURRENT_RUN.get()
        if scope is None:
            self._emit(make("", self.pipeline))
        else:
            scope.emit(make(scope.run_id, scope.pipeline))

    # -- the three modes -----------------------------------------------------------------

    def impls(self, hook: str, only: Sequence[str] | None = None) -> list[HookImpl]:
        """The hook's impls in call order, optionally only those of the named plugins."""
        caller = getattr(self._pm.hook, hook)
        # pluggy stores impls in reverse call order; wrappers have no meaning here.
        found = [i for i in reversed(caller.get_hookimpls()) if not (i.wrapper or i.hookwrapper)]
        if only is not None:
            by_name = {i.plugin_name: i for i in found}
            found = [by_name[name] for name in only if name in by_name]
        return found

    async def first(
        self,
        hook: str,
        kwargs: Mapping[str, Any],
        *,
        stage: str = "",
        policy: StagePolicy = DEFAULT_POLICY,
        only: Sequence[str] | None = None,
        check: Check | None = None,
        before: Callable[[str], object] | None = None,
    ) -> tuple[Any, str] | None:
        """Await impls in order until one returns a value that is not ``None``.

        :param check: validates each value; a wrong one is that impl's failure.
        :param before: told each impl's plugin name as it is called (a model call's clock).
        :returns: ``(value, plugin name)``, or ``None`` when every impl returned ``None``.
        :raises HookError: on an impl failure (``fail`` / ``skip``), or under ``fallback``
            when every impl failed or returned ``None`` after at least one failure.
        """
        failure: HookError | None = None
        for impl in self.impls(hook, only):
            if before is not None:
                before(impl.plugin_name)
            try:
                value = await self._call(impl, hook, kwargs, stage, policy, check)
            except HookError as exc:
                if policy.on_error != "fallback":
                    raise
                failure = exc
                continue
            if value is not None:
                return value, impl.plugin_name
        if failure is not None:
            raise failure
        return None

    async def gather(
        self,
        hook: str,
        kwargs: Mapping[str, Any],
        *,
        stage: str = "",
        policy: StagePolicy = DEFAULT_POLICY,
        check: Check | None = None,
        all_failed_raises: bool = False,
    ) -> list[tuple[Any, str]]:
        """Run every impl concurrently; return ``(value, plugin)`` pairs in impl order.

        ``None`` results are left out. Under ``fallback`` failed impls (and those whose
        value fails ``check``) are left out too; otherwise the first failure cancels the
        others and raises :class:`HookError`.

        :param all_failed_raises: under ``fallback``, raise the last failure when every impl
            failed (a write that no index took, a search that no retriever answered),
            instead of returning nothing.
        """
        impls = self.impls(hook)
        failed: list[HookError] = []
        results: list[Any] = [None] * len(impls)

        async def run(index: int, impl: HookImpl) -> None:
            results[index] = await self._gather_one(impl, hook, kwargs, stage, policy, check,
                                                    failed)

        if len(impls) == 1:  # the common case needs no task group
            await run(0, impls[0])
        elif impls:
            await concurrently(partial(run, index, impl)
                               for index, impl in enumerate(impls))
        if all_failed_raises and failed and len(failed) == len(impls):
            raise failed[-1]
        return [(r, i.plugin_name) for r, i in zip(results, impls) if r is not None]

    async def _gather_one(
        self, impl: HookImpl, hook: str, kwargs: Mapping[str, Any], stage: str,
        policy: StagePolicy, check: Check | None, failed: list[HookError],
    ) -> Any:
        try:
            return await self._call(impl, hook, kwargs, stage, policy, check)
        except HookError as exc:
            if policy.on_error == "fallback":
                failed.append(exc)
                return None
            raise

    async def chain(
        self,
        hook: str,
        kwargs: Mapping[str, Any],
        fold: Callable[[dict[str, Any], Any, str], dict[str, Any] | None],
        *,
        stage: str = "",
        policy: StagePolicy = DEFAULT_POLICY,
        check: Check | None = None,
    ) -> dict[str, Any]:
        """Run impls in order, each receiving what ``fold`` made of the previous output.

        :param fold: ``fold(kwargs, value, plugin)`` returns the next impl's kwargs, or
            ``None`` to stop the chain (a guard's block). ``None`` values skip the fold.
        :param check: validates each value before the fold; a wrong one is that impl's
            failure (under ``fallback`` the previous value is passed on).
        :returns: the last kwargs.
        """
        current = dict(kwargs)
        for impl in self.impls(hook):
            try:
                value = await self._call(impl, hook, current, stage, policy, check)
            except HookError:
                if policy.on_error != "fallback":
                    raise
                continue
            if value is None:
                continue
            folded = fold(current, value, impl.plugin_name)
            if folded is None:
                break
            current = folded
        return current

    @contextmanager
    def tracking(self, label: str) -> Iterator[None]:
        """Mark work done outside ``_call`` as in flight under ``label`` (watchdog)."""
        token = object()
        start = time.perf_counter()
        self.active[id(token)] = (label, start)
        try:
            yield
        finally:
            del self.active[id(token)]
            self.recent.append((label, start, time.perf_counter()))

    async def stepped(self, awaitable: Awaitable[Any], label: str) -> Any:
        """Await ``awaitable`` (a stream's next delta) in flight under ``label`` only while
        one of its steps runs, as ``_call`` tracks an impl: a waiting stream holds no loop."""
        if not isinstance(awaitable, Coroutine):
            with self.tracking(label):
                return await awaitable
        token = object()  # alive until the call returns: its id stays unique
        steps = Steps(self.active, self.recent, id(token), label)
        began = steps.begin()
        try:
            yielded = awaitable.send(None)
        except StopIteration as done:
            return done.value
        finally:
            steps.end(began)
        return await Resumed(awaitable, yielded, steps)

    # -- one impl ------------------------------------------------------------------------

    def _kind(self, function: Callable[..., Any]) -> int:
        kind = self._kinds.get(function)
        if kind is None:
            if inspect.iscoroutinefunction(function):
                kind = _ASYNC
            elif getattr(function, f"{PROJECT}_blocking", False):
                kind = _BLOCKING
            else:
                kind = _SYNC
            self._kinds[function] = kind
        return kind

    async def _call(
        self,
        impl: HookImpl,
        hook: str,
        kwargs: Mapping[str, Any],
        stage: str,
        policy: StagePolicy,
        check: Check | None = None,
    ) -> Any:
        function: Callable[..., Any] = impl.function
        args = [kwargs[name] for name in impl.argnames]
        kind = self._kind(function)
        label = f"{impl.plugin_name}.{hook}"
        token = id(args)
        start = time.perf_counter()
        on_loop = kind != _BLOCKING  # a worker thread cannot hold the loop: never blame it
        if on_loop:
            self.active[token] = (label, start)
        outcome, value, hint, slot = "ok", None, "", None
        error: Exception | None = None
        try:
            if kind == _SYNC:
                value = function(*args)
            elif kind == _ASYNC:
                value = await self._bounded(function(*args), policy.timeout, token)
            else:
                slot = Slot()
                value = await self._bounded(
                    run_in_worker(partial(function, *args), self._limiter(), slot,
                                  self.threads, label),
                    policy.timeout)
            if kind != _ASYNC and inspect.isawaitable(value):  # a plain impl's coroutine
                value = await self._bounded(value, policy.timeout, token)
        except DeadlinePassed:
            outcome, error = "timeout", TimeoutError(f"timed out after {policy.timeout} s")
            if slot is not None and slot.waiting:  # it never ran: no thread was free
                error = TimeoutError(f"no worker thread free within {policy.timeout} s")
                hint = NO_THREAD_HINT
        except Exception as exc:  # the plugin's fault: wrap it, never let it escape raw
            # An impl's own TimeoutError lands here too: the kernel's deadline did not fire.
            outcome, error = "error", exc
        finally:
            end = time.perf_counter()
            # An async impl that suspended was tracked step by step (Steps) instead.
            if on_loop and self.active.pop(token, None) is not None:
                self.recent.append((label, start, end))
        if outcome == "ok":
            if value is None:
                outcome = "none"
            elif check is not None:
                problem = check(value)
                if problem:  # a wrong value fails like a raise: the policy applies
                    outcome, error, hint = "error", TypeError(problem), _WRONG_TYPE_HINT
        if self._monitors or self.trace_hooks:
            self._observe(hook, impl.plugin_name, stage, kwargs, outcome, value, error, end - start)
        if error is not None:
            raise self.failure(impl.plugin_name, hook, stage, policy, error, outcome,
                               message=str(error) if hint else "", hint=hint)
        return value

    async def _bounded(self, awaitable: Awaitable[Any], timeout: float | None,
                       token: int | None = None) -> Any:
        """Await under the deadline. A coroutine of an impl on the loop (``token`` of its
        ``active`` entry) counts as in flight only while it runs, not while it waits: an
        impl awaiting its I/O did not hold the loop when something else stalled it."""
        if not isinstance(awaitable, Coroutine):
            if timeout is None:
                return await awaitable
            with anyio.move_on_after(timeout):
                return await awaitable
            raise DeadlinePassed
        if timeout is None:
            try:
                yielded = awaitable.send(None)
            except StopIteration as done:
                return done.value
            return await Resumed(awaitable, yielded, self._suspended(token))
        # A timeout can only fire at a suspension point, and most cheap async impls (cache
        # hits, in-memory lookups) never suspend; arming a deadline costs more than the
        # call. So: enter a scope *without* a deadline (cheap), run the coroutine's first
        # step inside it, and arm the deadline only if the coroutine suspended. The scope
        # is entered before the coroutine runs, so scopes the coroutine opens nest inside
        # it; the deadline still counts from the start of the call.
        deadline = anyio.current_time() + timeout
        with anyio.CancelScope() as scope:
            try:
                yielded = awaitable.send(None)
            except StopIteration as done:
                return done.value
            scope.deadline = deadline
            return await Resumed(awaitable, yielded, self._suspended(token))
        # Only reached when the scope swallowed its own cancellation: the deadline passed.
        raise DeadlinePassed

    def _suspended(self, token: int | None) -> Steps | None:
        """The impl of ``token`` just suspended for the first time: end its first step and
        track the steps that follow."""
        if token is None:
            return None
        label, start = self.active.pop(token)
        self.recent.append((label, start, time.perf_counter()))
        return Steps(self.active, self.recent, token, label)

    def _observe(self, hook: str, plugin: str, stage: str, kwargs: Mapping[str, Any],
                 outcome: str, value: Any, error: BaseException | None,
                 duration: float) -> None:
        call = ImplCall(hook, plugin, stage, kwargs, outcome, value, error, duration)
        for monitor in self._monitors:
            monitor(call)
        if self.trace_hooks:
            self._publish(lambda run_id, pipeline: HookCalled(
                run_id=run_id, pipeline=pipeline, hook=hook, plugin=plugin, stage=stage,
                outcome=outcome, duration_s=duration))

    def failure(self, plugin: str, hook: str, stage: str, policy: StagePolicy,
                error: BaseException, outcome: str, *, message: str = "",
                hint: str = "") -> HookError:
        """Log and publish an impl's failure (an ``error`` event); return the HookError.

        The dispatcher calls it for every failed call; a stage calls it for failures it
        sees itself (a stream that breaks while being consumed).

        :param outcome: ``"timeout"`` or ``"error"``.
        :param message: replaces the default message (the timeout, or the error's text).
        :param hint: replaces the default hint.
        """
        if outcome == "timeout":
            message = message or f"timed out after {policy.timeout} s"
            hint = hint or f"{policy.raise_hint()}, or make the impl async / @blocking"
        elif isinstance(error, TimeoutError) and not message:
            # The impl's own deadline (asyncio.wait_for, anyio.fail_after, a client's
            # timeout), not the stage's: saying "timed out after N s" would send the user
            # to the wrong setting.
            limit = f"{policy.timeout} s " if policy.timeout is not None else ""
            detail = f": {error}" if str(error) else ""
            message = (f"TimeoutError raised by the impl itself, not the stage's {limit}"
                       f"timeout{detail}")
            hint = hint or "the impl's own deadline passed (its client or wait_for timeout)"
        else:
            message = message or f"{type(error).__name__}: {error}"
        # run_id and pipeline come from structlog's contextvars, bound by Pipeline.run.
        log.warning("hook.failed", hook=hook, plugin=plugin, stage=stage, error=message,
                    policy=policy.on_error)
        self._publish(lambda run_id, pipeline: ErrorEvent(
            run_id=run_id, pipeline=pipeline, stage=stage, hook=hook, plugin=plugin,
            error_type=type(error).__name__, message=message, policy=policy.on_error))
        failure = HookError(hook=hook, plugin=plugin, distribution=self._labels(plugin),
                            stage=stage, cause=error, hint=hint, message=message)
        failure.__cause__ = error
        return failure


def expect(kind: type | tuple[type, ...], *, items: type | None = None) -> Check:
    """A :data:`Check` that a value is an instance of ``kind`` and, with ``items``, that
    every item of it is an instance of ``items``."""
    names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)

    def check(value: Any) -> str:
        if not isinstance(value, kind):
            return f"returned {type(value).__name__}, expected {names}"
        if items is not None:
            for item in cast("Iterable[Any]", value):
                if not isinstance(item, items):
                    return f"returned {type(item).__name__}, expected {items.__name__}"
        return ""

    return check
