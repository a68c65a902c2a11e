"""The circuit breaker: its transitions, and a state-machine test against a reference
model (hypothesis drives outcomes, trials and the fake clock)."""

from __future__ import annotations

import attrs
import pytest
from aieng_router import BreakerOptions, CircuitBreaker
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from router_testing import FakeClock


def test_opens_after_consecutive_failures(clock: FakeClock) -> None:
    """Three consecutive failures open the circuit; a success in between resets the count."""
    breaker = CircuitBreaker(BreakerOptions(failures=3, cooldown_s=10), clock)
    assert breaker.failure() is None and breaker.failure() is None
    assert breaker.success() is None
    assert breaker.failure() is None and breaker.failure() is None
    opened = breaker.failure()
    assert opened is not None and (opened.before, opened.after) == ("closed", "open")
    assert "3 consecutive failures" in opened.reason
    assert breaker.acquire() == (False, None)


def test_half_open_after_cool_down_allows_one_trial(clock: FakeClock) -> None:
    """After the cool-down one trial goes through; a second waits; success closes."""
    breaker = CircuitBreaker(BreakerOptions(failures=1, cooldown_s=10), clock)
    breaker.failure()
    clock.advance(9.9)
    assert breaker.acquire() == (False, None)
    clock.advance(0.1)
    allowed, moved = breaker.acquire()
    assert allowed and moved is not None and moved.after == "half_open"
    assert breaker.acquire() == (False, None)  # the trial is out
    closed = breaker.success()
    assert closed is not None and closed.after == "closed"
    assert breaker.acquire() == (True, None)


def test_failed_trial_opens_again(clock: FakeClock) -> None:
    """A failed trial opens the circuit for a fresh cool-down."""
    breaker = CircuitBreaker(BreakerOptions(failures=1, cooldown_s=5), clock)
    breaker.failure()
    clock.advance(5)
    breaker.acquire()
    reopened = breaker.failure()
    assert reopened is not None and (reopened.before, reopened.after) == ("half_open", "open")
    clock.advance(4)
    assert not breaker.available()
    clock.advance(1)
    assert breaker.available()


def test_unreported_trial_is_handed_out_again(clock: FakeClock) -> None:
    """A trial that reports nothing (an unused fallback) lapses after the cool-down."""
    breaker = CircuitBreaker(BreakerOptions(failures=1, cooldown_s=5), clock)
    breaker.failure()
    clock.advance(5)
    assert breaker.acquire()[0]
    clock.advance(4.9)
    assert not breaker.acquire()[0]
    clock.advance(0.1)
    assert breaker.acquire() == (True, None) and breaker.state == "half_open"


def test_failure_rate_over_a_window(clock: FakeClock) -> None:
    """With failures=0, half of the last four calls failing opens the circuit, judged only
    once four calls were seen."""
    breaker = CircuitBreaker(BreakerOptions(failures=0, failure_rate=0.5, window=4), clock)
    assert breaker.failure() is None  # 1 of 1, but the window is not full
    assert breaker.success() is None
    assert breaker.failure() is None  # 2 of 3, the window still not full
    opened = breaker.failure()  # 3 of 4
    assert opened is not None and opened.after == "open"
    assert opened.reason == "3 of the last 4 calls failed"


def test_failure_rate_under_the_threshold_stays_closed(clock: FakeClock) -> None:
    """One failure in four stays under a rate of 0.5: the circuit stays closed."""
    breaker = CircuitBreaker(BreakerOptions(failures=0, failure_rate=0.5, window=4), clock)
    for failed in (False, False, False, True, False, False, False, True):
        breaker.failure() if failed else breaker.success()
    assert breaker.state == "closed"


def test_outcomes_while_open_change_nothing(clock: FakeClock) -> None:
    """Late results of calls sent before the circuit opened leave it open."""
    breaker = CircuitBreaker(BreakerOptions(failures=1, cooldown_s=5), clock)
    breaker.failure()
    assert breaker.success() is None and breaker.failure() is None
    assert breaker.state == "open"


def test_late_outcome_is_not_the_trials(clock: FakeClock) -> None:
    """A call of run ``a`` sent while closed reports after the circuit turned half-open
    with its trial handed to run ``t``: the late success and the late failure change
    nothing; the trial's own outcome decides."""
    breaker = CircuitBreaker(BreakerOptions(failures=1, cooldown_s=5), clock)
    assert breaker.acquire("a") == (True, None)  # the slow call, sent while closed
    breaker.failure("b")  # another run's failure opens the circuit
    clock.advance(5)
    allowed, moved = breaker.acquire("t")
    assert allowed and moved is not None and moved.after == "half_open"
    assert breaker.success("a") is None and breaker.state == "half_open"
    assert breaker.failure("a") is None and breaker.state == "half_open"
    assert breaker.success("") is None and breaker.state == "half_open"
    reopened = breaker.failure("t")
    assert reopened is not None and (reopened.before, reopened.after) == ("half_open", "open")


def test_lapsed_trials_run_still_decides(clock: FakeClock) -> None:
    """A trial handed out again after lapsing: the first trial's run still counts, and a
    trial handed to an unknown run lets any outcome decide (no run ids to tell apart)."""
    breaker = CircuitBreaker(BreakerOptions(failures=1, cooldown_s=5), clock)
    breaker.failure()
    clock.advance(5)
    assert breaker.acquire("t1")[0]
    clock.advance(5)
    assert breaker.acquire("t2")[0]
    closed = breaker.success("t1")
    assert closed is not None and closed.after == "closed"
    breaker.failure()
    clock.advance(5)
    assert breaker.acquire()[0]  # no run known
    closed = breaker.success("anything")
    assert closed is not None and closed.after == "closed"


def test_late_failure_after_recovery_does_not_count(clock: FakeClock) -> None:
    """Run ``slow`` was admitted while the circuit was closed; the circuit opened, and its
    trial closed it again. ``slow``'s late failure (and a lapsed trial's) then changes
    nothing: the recovered circuit starts from zero, and a fresh failure counts as usual."""
    breaker = CircuitBreaker(BreakerOptions(failures=2, cooldown_s=5), clock)
    assert breaker.acquire("slow") == (True, None)
    breaker.failure("b")
    breaker.failure("c")
    assert breaker.state == "open"
    clock.advance(5)
    assert breaker.acquire("t1")[0]
    clock.advance(5)
    assert breaker.acquire("t2")[0]
    closed = breaker.success("t2")
    assert closed is not None and closed.after == "closed"
    for late in ("slow", "t1"):
        assert breaker.failure(late) is None
    assert breaker.state == "closed" and breaker.consecutive == 0
    assert breaker.acquire("fresh") == (True, None)
    assert breaker.failure("fresh") is None and breaker.consecutive == 1
    assert breaker.success("slow") is None and breaker.consecutive == 1  # nor a late success
    reopened = breaker.failure("")  # an unknown run's failure counts
    assert reopened is not None and reopened.after == "open"


def test_late_failure_does_not_enter_the_failure_rate(clock: FakeClock) -> None:
    """With a failure-rate rule, late failures of runs admitted before the circuit closed
    stay out of the recovered circuit's window."""
    breaker = CircuitBreaker(BreakerOptions(failures=0, failure_rate=0.5, window=2,
                                            cooldown_s=5), clock)
    for run in ("a", "b"):
        breaker.acquire(run)
    breaker.failure("x")
    breaker.failure("y")
    assert breaker.state == "open"
    clock.advance(5)
    breaker.acquire("t")
    breaker.success("t")
    assert breaker.failure("a") is None and breaker.failure("b") is None
    assert breaker.state == "closed" and list(breaker.recent) == []


def test_clock_going_back_never_sticks_the_circuit_open(clock: FakeClock) -> None:
    """An injected clock that jumps back by an hour: the open circuit's cool-down counts
    from the time seen after the jump (no negative wait, no waiting an hour); the same
    holds for a half-open trial's lapse."""
    breaker = CircuitBreaker(BreakerOptions(failures=1, cooldown_s=10), clock)
    breaker.failure()
    clock.now -= 3600
    assert not breaker.available()
    clock.advance(9)
    assert not breaker.acquire()[0]
    clock.advance(1)
    assert breaker.acquire()[0] and breaker.state == "half_open"
    clock.now -= 3600
    assert not breaker.acquire()[0]
    clock.advance(10)
    assert breaker.acquire()[0]  # the unreported trial lapsed
    clock.now -= 50
    assert breaker.wait_s() == 10.0  # never negative, never more than the cool-down
    clock.advance(2.5)
    assert breaker.wait_s() == pytest.approx(7.5)


@pytest.mark.parametrize("bad", [{"failures": -1}, {"cooldown_s": 0}, {"window": 0},
                                 {"failure_rate": 1.5}, {"failures": True}])
def test_bad_options_are_refused(bad: dict[str, object]) -> None:
    """Negative, zero or mistyped thresholds fail with the option's name."""
    with pytest.raises((TypeError, ValueError), match=next(iter(bad))):
        BreakerOptions(**bad)  # type: ignore[arg-type]


@attrs.define
class Model:
    """The breaker's specification, written as plainly as possible."""

    failures: int
    rate: float | None
    window: int
    cooldown: float
    state: str = "closed"
    streak: int = 0
    history: list[bool] = attrs.Factory(list)
    opened: float = 0.0
    trial: float | None = None

    def open(self, now: float) -> None:
        self.state, self.opened, self.trial = "open", now, None

    def close(self) -> None:
        self.state, self.streak, self.history, self.trial = "closed", 0, [], None

    def acquire(self, now: float) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open":
            self.opened = min(self.opened, now)  # a clock that went back: wait from now
            if now - self.opened < self.cooldown:
                return False
            self.state = "half_open"
        elif self.trial is not None and now - min(self.trial, now) < self.cooldown:
            self.trial = min(self.trial, now)
            return False
        self.trial = now
        return True

    def report(self, failed: bool, now: float) -> None:
        if self.state == "half_open":
            self.open(now) if failed else self.close()
        elif self.state == "closed":
            self.streak = self.streak + 1 if failed else 0
            self.history = (self.history + [failed])[-self.window:]
            if failed and self.failures and self.streak >= self.failures or (failed and self.rate is not None and len(self.history) == self.window
                  and sum(self.history) / self.window >= self.rate):
                self.open(now)


class BreakerMachine(RuleBasedStateMachine):
    """Random sequences of outcomes, trials and clock moves: the breaker and the model
    agree on every answer and every state."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.breaker: CircuitBreaker | None = None
        self.model: Model | None = None

    @precondition(lambda self: self.breaker is None)
    @rule(failures=st.integers(0, 4), rate=st.none() | st.sampled_from([0.25, 0.5, 1.0]),
          window=st.integers(1, 5), cooldown=st.sampled_from([1.0, 2.5, 10.0]))
    def build(self, failures: int, rate: float | None, window: int, cooldown: float) -> None:
        options = BreakerOptions(failures=failures, failure_rate=rate, window=window,
                                 cooldown_s=cooldown)
        self.breaker = CircuitBreaker(options, self.clock)
        self.model = Model(failures, rate, window, cooldown)

    @precondition(lambda self: self.breaker is not None)
    @rule(failed=st.booleans())
    def report(self, failed: bool) -> None:
        assert self.breaker is not None and self.model is not None
        before = self.breaker.state
        moved = self.breaker.failure() if failed else self.breaker.success()
        self.model.report(failed, self.clock())
        assert (moved is not None) == (before != self.breaker.state)

    @precondition(lambda self: self.breaker is not None)
    @rule()
    def acquire(self) -> None:
        assert self.breaker is not None and self.model is not None
        assert self.breaker.available() == self.model.acquire(self.clock()) \
            == self.breaker.acquire()[0]

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.5, 10.0]))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(seconds=st.sampled_from([0.5, 3.0, 100.0]))
    def rewind(self, seconds: float) -> None:
        """The injected clock jumps back."""
        self.clock.now -= seconds

    @invariant()
    def same_state(self) -> None:
        if self.breaker is not None and self.model is not None:
            assert self.breaker.state == self.model.state
            if self.breaker.state == "closed":
                assert not self.breaker.options.failures or \
                    self.breaker.consecutive < self.breaker.options.failures


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=150, stateful_step_count=40,
                                       deadline=None)
