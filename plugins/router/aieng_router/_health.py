"""What a router learns of its backends from the event bus: latency and error-rate
moving averages, and a circuit breaker each."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import structlog
from aieng_hookspecs import PipelineContext, closest
from aieng_hookspecs.types import ErrorEvent, Event, ModelCall, Route

from ._breaker import CircuitBreaker, Clock, Transition
from ._events import CircuitChanged
from ._options import BreakerOptions

__all__ = ["BackendStats", "CircuitOpenError", "Health"]

log = structlog.get_logger(__name__)

#: The hooks whose failures count against a backend.
_BACKEND_HOOKS = frozenset({"aieng_generate", "aieng_stream"})
#: The most one latency sample counts for, in multiples of the average it joins: a call
#: that took an hour because the process was suspended (a laptop asleep, a VM paused, a
#: debugger) moves the average by at most ``alpha * (SPIKE - 1)`` of itself (x1.9 at the
#: default alpha), instead of making a backend look slow until it is tried again (which,
#: once it looks slow, the cost-router stops doing). A backend that really slowed down
#: gets there in a few calls (x1.9 each).
SPIKE = 4.0
#: The average latency the cap is taken from at least, in seconds: a backend averaging 0 s
#: (a cache in front of it) still learns a real latency.
_SPIKE_FLOOR_S = 0.01


@attrs.define
class BackendStats:
    """Moving averages of one backend (``None`` until observed)."""

    latency_s: float | None = None
    error_rate: float = 0.0
    completion_tokens: float | None = None
    calls: int = 0
    failures: int = 0


class CircuitOpenError(RuntimeError):
    """Every candidate backend's circuit is open, and the breaker fails fast
    (``breaker = { fail_fast = true }``).

    An HTTP server answering for the run (the gateway) reads ``status`` (503: Service
    Unavailable) and ``retry_after`` (its ``Retry-After``), as it reads an HTTP backend's.

    :param router: the router's name.
    :param waits: each open backend, with the seconds until it allows a trial call.
    """

    #: the HTTP status of "no backend can serve now, retry later"
    status = 503

    def __init__(self, router: str, waits: Mapping[str, float]) -> None:
        self.router = router
        self.waits = dict(waits)
        #: the first backend to allow a trial, and the seconds until it does
        self.first, self.retry_after_s = min(self.waits.items(), key=lambda item: item[1])
        #: the same seconds, under the name HTTP errors carry them
        self.retry_after = self.retry_after_s
        super().__init__(
            f"{router}: every candidate backend's circuit is open "
            f"({', '.join(self.waits)}); failing fast (breaker.fail_fast): the first, "
            f"{self.first!r}, allows a trial call in {round(self.retry_after_s, 1):g} s")

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[str, dict[str, float]]]:
        # Picklable (a run's error sent back from a worker process): Exception's own
        # reduce would call __init__ with the message alone.
        return type(self), (self.router, self.waits)


def _ewma(old: float | None, new: float, alpha: float) -> float:
    return new if old is None else alpha * new + (1.0 - alpha) * old


class Health:
    """Backend statistics and circuit breakers, fed with ``backend.call`` and ``error``
    events.

    A ``backend.call`` event (:class:`ModelCall`) is a success of its ``component``, with
    its ``duration_s`` as the latency: the answering backend's own, on the kernel's
    monotonic clock (never the events' wall-clock ``ts``, which a clock step moves), each
    sample counted for at most :data:`SPIKE` times the average it joins. An ``error`` event
    of ``aieng_generate`` or ``aieng_stream`` is a failure (a timeout included) of its
    ``plugin``.

    :param router: the router's name, for events and logs.
    :param breaker: the breaker thresholds.
    :param alpha: the weight of the newest observation in the moving averages.
    :param clock: the breakers' time source.
    """

    def __init__(self, router: str, breaker: BreakerOptions, *, alpha: float = 0.3,
                 clock: Clock = time.monotonic) -> None:
        self.router = router
        self.breaker_options = breaker
        self.alpha = alpha
        self.clock = clock
        self.stats: dict[str, BackendStats] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.context: PipelineContext | None = None
        #: also told about every transition (tests, applications without a pipeline)
        self.listeners: list[Callable[[CircuitChanged], None]] = []
        #: backends named by the options that were not candidates, warned about once each
        self.unknown: set[str] = set()

    def check_named(self, named: Iterable[tuple[str, str]], context: PipelineContext) -> None:
        """Fail the opening when an option names a backend the pipeline does not have.

        :param named: ``(where, backend)`` for each backend the options name (``where``
            says which option, for the message).
        :param context: the pipeline's context; with no backend at all there is nothing
            to check against (the generate stage reports a pipeline without backends).
        :raises ValueError: naming the option, the pipeline's backends and the closest one.
        """
        backends = tuple(context.backends)
        if not backends:
            return
        for where, name in named:
            if name in backends:
                continue
            close = closest(name, backends)
            hint = f"; did you mean {close!r}?" if close is not None else ""
            raise ValueError(
                f"router {context.component!r}: {where} names backend {name!r}, which "
                f"pipeline {context.pipeline!r} does not have (its backends: "
                f"{', '.join(backends)}){hint}")

    def breaker(self, backend: str) -> CircuitBreaker:
        """The backend's breaker (created closed)."""
        found = self.breakers.get(backend)
        if found is None:
            found = self.breakers[backend] = CircuitBreaker(self.breaker_options, self.clock)
        return found

    def of(self, backend: str) -> BackendStats:
        """The backend's statistics (created empty)."""
        found = self.stats.get(backend)
        if found is None:
            found = self.stats[backend] = BackendStats()
        return found

    # -- observing -----------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        """Learn from one bus event; other events are ignored."""
        if isinstance(event, ModelCall):
            # duration_s is the answering backend's own (the kernel restarts its clock for
            # each backend it tries): the time of a backend that failed before it in the
            # run is not in it, and the events' wall-clock ts are never subtracted.
            self.succeeded(event.component, event.duration_s, event.usage.completion_tokens,
                           run_id=event.run_id)
        elif isinstance(event, ErrorEvent) and event.hook in _BACKEND_HOOKS and event.plugin:
            self.failed(event.plugin, event.error_type, run_id=event.run_id)

    def succeeded(self, backend: str, latency_s: float, completion_tokens: int = 0, *,
                  run_id: str = "") -> None:
        """Record a successful call of ``backend`` that took ``latency_s`` (in run
        ``run_id``, when known: see :meth:`CircuitBreaker.acquire`); the sample counts for
        at most :data:`SPIKE` times the average (a suspended process's hour is no
        backend's latency)."""
        stats = self.of(backend)
        stats.calls += 1
        if stats.latency_s is not None:
            latency_s = min(latency_s, SPIKE * max(stats.latency_s, _SPIKE_FLOOR_S))
        stats.latency_s = _ewma(stats.latency_s, latency_s, self.alpha)
        stats.error_rate = _ewma(stats.error_rate, 0.0, self.alpha)
        if completion_tokens:
            stats.completion_tokens = _ewma(stats.completion_tokens, completion_tokens,
                                            self.alpha)
        self._changed(backend, self.breaker(backend).success(run_id))

    def failed(self, backend: str, error_type: str = "", *, run_id: str = "") -> None:
        """Record a failed call (an error or a timeout) of ``backend`` (in run ``run_id``,
        when known)."""
        stats = self.of(backend)
        stats.calls += 1
        stats.failures += 1
        stats.error_rate = _ewma(stats.error_rate if stats.calls > 1 else None, 1.0,
                                 self.alpha)
        self._changed(backend, self.breaker(backend).failure(run_id))

    def _changed(self, backend: str, transition: Transition | None) -> None:
        if transition is None:
            return
        failures = self.breaker(backend).consecutive
        log.warning("router.circuit", router=self.router, backend=backend,
                    before=transition.before, after=transition.after,
                    reason=transition.reason, failures=failures)
        event = CircuitChanged(router=self.router, backend=backend, before=transition.before,
                               after=transition.after, reason=transition.reason,
                               failures=failures)
        for listener in self.listeners:
            listener(event)
        if self.context is not None:
            self.context.emit(event)

    # -- routing -------------------------------------------------------------------------

    def admit(self, order: Iterable[str], candidates: Sequence[str], *,
              run_id: str | None = None) -> list[str]:
        """The backends of ``order`` that are candidates and whose circuit lets a call
        through, each once, in order; half-open trials are taken here, for ``run_id``
        (default: the run bound in ``structlog.contextvars`` by the pipeline, if any), so
        that only that run's outcome decides the trial."""
        if run_id is None:
            bound = structlog.contextvars.get_contextvars().get("run_id")
            run_id = bound if isinstance(bound, str) else ""
        allowed = set(candidates)
        admitted: list[str] = []
        for name in order:
            if name not in allowed or name in admitted:
                continue
            ok, transition = self.breaker(name).acquire(run_id)
            self._changed(name, transition)
            if ok:
                admitted.append(name)
        return admitted

    def fail_fast(self, candidates: Sequence[str]) -> None:
        """With ``breaker.fail_fast``, raise :class:`CircuitOpenError` when no candidate's
        circuit lets a call through now (nothing is taken: no trial is handed out)."""
        if not self.breaker_options.fail_fast or not candidates:
            return
        waits: dict[str, float] = {}
        for name in dict.fromkeys(candidates):
            breaker = self.breakers.get(name)
            wait = 0.0 if breaker is None else breaker.wait_s()
            if wait <= 0.0:
                return
            waits[name] = wait
        log.warning("router.fail_fast", router=self.router, open=sorted(waits))
        raise CircuitOpenError(self.router, waits)

    def route(self, order: Iterable[str], candidates: Sequence[str], reason: str,
              score: float | None = None) -> Route | None:
        """A route over the admitted backends of ``order``, or ``None`` when none is
        (:class:`CircuitOpenError` instead, with ``breaker.fail_fast``, when no candidate
        at all is admitted)."""
        order = list(order)
        self._warn_unknown(order, candidates)
        admitted = self.admit(order, candidates)
        skipped = [n for n in order if n in candidates and n not in admitted]
        if not admitted:
            if skipped:
                self.fail_fast(candidates)
                log.warning("router.all_open", router=self.router, skipped=skipped)
            return None
        if skipped:
            reason = f"{reason}; circuit open: {', '.join(dict.fromkeys(skipped))}"
        return Route(target=admitted[0], reason=reason, score=score,
                     fallbacks=tuple(admitted[1:]))

    def _warn_unknown(self, order: Sequence[str], candidates: Sequence[str]) -> None:
        """Warn once per name of ``order`` that is not a candidate (a typo in the options,
        or a backend the pipeline does not have): such a name is never routed to."""
        for name in order:
            if name not in candidates and name not in self.unknown:
                self.unknown.add(name)
                log.warning("router.unknown_backend", router=self.router, backend=name,
                            candidates=list(candidates),
                            hint="the router's options name a backend that is not a "
                                 "candidate: it is never routed to (check its spelling "
                                 "against the pipeline's backend components)")

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every backend's averages and circuit state, for inspection and metrics."""
        names = sorted(set(self.stats) | set(self.breakers))
        return {name: {**attrs.asdict(self.of(name)), "circuit": self.breaker(name).state}
                for name in names}
