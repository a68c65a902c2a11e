"""A circuit breaker per backend: closed → open → half-open → closed."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Literal

import attrs

from ._options import BreakerOptions

__all__ = ["CircuitBreaker", "CircuitState", "Clock", "Transition"]

CircuitState = Literal["closed", "open", "half_open"]
#: Seconds from any fixed origin (``time.monotonic``); tests inject a fake one.
Clock = Callable[[], float]
#: Runs remembered per breaker, to tell a late outcome of a call routed before the circuit
#: last closed from a fresh one.
_RUNS_REMEMBERED = 1024


@attrs.frozen
class Transition:
    """A change of a circuit's state, and why."""

    before: CircuitState
    after: CircuitState
    reason: str


class CircuitBreaker:
    """The state of one backend's circuit.

    ``closed``: calls go through; failures are counted. ``open``: the backend is skipped
    until ``cooldown_s`` has passed since it opened. ``half_open``: one trial is handed out
    by :meth:`acquire`; a success closes the circuit, a failure opens it again, and a trial
    that reports nothing within ``cooldown_s`` is handed out again. Outcomes reported while
    open (calls that started before it opened) change nothing; while half-open, when the
    trials were handed out to known runs, only an outcome of one of those runs decides: a
    late outcome of a call sent before the circuit opened changes nothing either. Once
    closed again, a late outcome of a run admitted before it closed (a slow request of the
    outage, or a lapsed trial) is not counted against the recovered circuit.

    A clock that goes backwards (an injected one may) never makes a wait negative or
    endless: the cool-down (or the trial's lapse) then counts from the time seen after the
    jump.

    :param options: the thresholds.
    :param clock: the time source (``time.monotonic``; a fake one in tests).
    """

    def __init__(self, options: BreakerOptions, clock: Clock) -> None:
        self.options = options
        self.clock = clock
        self.state: CircuitState = "closed"
        #: consecutive failures while closed
        self.consecutive = 0
        #: the outcomes of the last ``window`` calls while closed (True: failed)
        self.recent: deque[bool] = deque(maxlen=options.window)
        self.opened_at = 0.0
        #: when the half-open trial was handed out (``None``: not handed out)
        self.trial_at: float | None = None
        #: the runs the half-open trials went to (``None``: a trial went to an unknown run,
        #: so any outcome is taken as the trial's)
        self.trial_runs: set[str] | None = set()
        #: how many times the circuit closed again after opening
        self.closings = 0
        #: the runs admitted lately, with ``closings`` when each was admitted
        self._runs: OrderedDict[str, int] = OrderedDict()

    def _move(self, after: CircuitState, reason: str) -> Transition:
        before, self.state = self.state, after
        if after == "open":
            self.opened_at = self.clock()
            self.trial_at = None
        elif after == "closed":
            self.closings += 1
            self.consecutive = 0
            self.recent.clear()
            self.trial_at = None
        self.trial_runs = set()
        return Transition(before, after, reason)

    def wait_s(self) -> float:
        """Seconds until :meth:`acquire` would let a call through (``0.0``: now); it changes
        no state."""
        now = self.clock()
        if self.state == "closed":
            return 0.0
        # A clock that went back: count from now rather than wait for it to catch up.
        self.opened_at = min(self.opened_at, now)
        if self.trial_at is not None:
            self.trial_at = min(self.trial_at, now)
        since = self.opened_at if self.state == "open" else self.trial_at
        if since is None:
            return 0.0
        # The deadline, not the time elapsed: a clock moved on by exactly ``cooldown_s``
        # (``now = since + cooldown_s``) reaches it, where ``cooldown_s - (now - since)``
        # could leave a rounding residue (5.7e-11 s) and keep the circuit open.
        return max(0.0, (since + self.options.cooldown_s) - now)

    def available(self) -> bool:
        """Whether :meth:`acquire` would let a call through now (it changes no state)."""
        return self.wait_s() <= 0.0

    def acquire(self, run: str = "") -> tuple[bool, Transition | None]:
        """Ask to send a call: ``(allowed, transition)``; a half-open trial is taken.

        :param run: the run the call belongs to (empty: unknown); a half-open trial's
            outcome is then only taken from that run's reports.
        """
        if self.state == "closed":
            self._admitted(run)
            return True, None
        if not self.available():
            return False, None
        transition = None
        if self.state == "open":
            transition = self._move("half_open", f"cool-down of {self.options.cooldown_s:g} s "
                                                 "passed: one trial call")
        self.trial_at = self.clock()
        if self.trial_runs is not None:
            if run:
                self.trial_runs.add(run)
            else:
                self.trial_runs = None
        self._admitted(run)
        return True, transition

    def _admitted(self, run: str) -> None:
        if run:
            self._runs[run] = self.closings
            self._runs.move_to_end(run)
            if len(self._runs) > _RUNS_REMEMBERED:
                self._runs.popitem(last=False)

    def _before_closing(self, run: str) -> bool:
        """Whether ``run`` was admitted before the circuit last closed (its outcome is
        the outage's, not the recovered circuit's)."""
        admitted = self._runs.get(run) if run else None
        return admitted is not None and admitted < self.closings

    def _stray(self, run: str) -> bool:
        """Whether a half-open outcome of ``run`` is not a trial's (a call sent before the
        circuit opened, reporting late)."""
        return self.trial_runs is not None and run not in self.trial_runs

    def success(self, run: str = "") -> Transition | None:
        """Report a successful call (of ``run``, when known)."""
        if self.state == "half_open":
            if self._stray(run):
                return None
            return self._move("closed", "the trial call succeeded")
        if self.state == "closed" and not self._before_closing(run):
            self.consecutive = 0
            self.recent.append(False)
        return None

    def failure(self, run: str = "") -> Transition | None:
        """Report a failed call (an error or a timeout; of ``run``, when known)."""
        if self.state == "half_open":
            if self._stray(run):
                return None
            return self._move("open", "the trial call failed")
        if self.state == "open" or self._before_closing(run):
            return None
        self.consecutive += 1
        self.recent.append(True)
        limit = self.options.failures
        if limit and self.consecutive >= limit:
            return self._move("open", f"{self.consecutive} consecutive failures")
        rate = self.options.failure_rate
        if rate is not None and len(self.recent) == self.options.window:
            failed = sum(self.recent)
            if failed / len(self.recent) >= rate:
                # The counts, not a rounded share: 199 of 200 is not "100%".
                return self._move("open", f"{failed} of the last {len(self.recent)} "
                                          f"calls failed")
        return None
