"""The breaker's numbers: it opens after exactly ``failures`` failures (or exactly the
``failure_rate`` share of a full window), turns half-open at exactly the cool-down, and
says the counts it acted on (hypothesis, against a ManualClock)."""

from __future__ import annotations

import math
from fractions import Fraction

from aieng_router import BreakerOptions, CircuitBreaker
from hypothesis import given
from hypothesis import strategies as st

from aieng_core.testing import ManualClock

_STARTS = st.floats(min_value=0.0, max_value=1e7, allow_nan=False)
_COOLDOWNS = st.floats(min_value=0.001, max_value=1e4, allow_nan=False)


@given(start=_STARTS, cooldown=_COOLDOWNS, failures=st.integers(1, 30))
def test_opens_after_exactly_n_and_half_opens_at_exactly_the_cool_down(
        start: float, cooldown: float, failures: int) -> None:
    """``failures - 1`` failures leave it closed, the ``failures``-th opens it; a clock
    moved on by exactly ``cooldown_s`` lets the trial through (wait 0), one ulp earlier
    does not."""
    clock = ManualClock(start)
    breaker = CircuitBreaker(BreakerOptions(failures=failures, cooldown_s=cooldown), clock)
    for _ in range(failures - 1):
        assert breaker.failure() is None
    opened = breaker.failure()
    assert opened is not None and opened.after == "open"
    assert opened.reason == f"{failures} consecutive failures"
    deadline = start + cooldown
    # (start + cooldown) - start is cooldown up to the rounding of the sum
    assert abs(breaker.wait_s() - cooldown) <= 2 * math.ulp(deadline)
    clock.now = math.nextafter(deadline, -math.inf)
    assert breaker.wait_s() > 0.0 and not breaker.available()
    clock.now = deadline
    assert breaker.wait_s() == 0.0
    allowed, moved = breaker.acquire()
    assert allowed and moved is not None and moved.after == "half_open"
    # The trial out: the next one waits a whole cool-down again, from now.
    assert abs(breaker.wait_s() - cooldown) <= 2 * math.ulp(deadline + cooldown)


@given(window=st.integers(1, 300), data=st.data())
def test_failure_rate_opens_at_exactly_the_share_and_says_the_counts(
        window: int, data: st.DataObject) -> None:
    """A full window of ``failed`` failures opens the circuit when ``failed / window`` is
    at least ``failure_rate`` (compared exactly, as fractions), and the reason names the
    counts, never a rounded share (199 of 200 is not "100%")."""
    failed = data.draw(st.integers(0, window))
    rate = data.draw(st.floats(min_value=0.001, max_value=1.0))
    options = BreakerOptions(failures=0, failure_rate=rate, window=window)
    breaker = CircuitBreaker(options, ManualClock())
    moves = [breaker.success() for _ in range(window - failed)]
    moves += [breaker.failure() for _ in range(failed)]
    *before, last = moves
    assert all(move is None for move in before)  # the window was not full before
    expected = Fraction(failed, window) >= Fraction(rate)
    if expected:
        assert last is not None and last.after == "open"
        assert last.reason == f"{failed} of the last {window} calls failed"
    else:
        assert last is None and breaker.state == "closed"


def test_a_rate_reason_does_not_round_199_of_200_up_to_all() -> None:
    """199 failures of 200 with a rate of 0.99: the reason says 199, not "100%"."""
    breaker = CircuitBreaker(BreakerOptions(failures=0, failure_rate=0.99, window=200),
                             ManualClock())
    breaker.success()
    moves = [breaker.failure() for _ in range(199)]
    assert moves[-1] is not None
    assert moves[-1].reason == "199 of the last 200 calls failed"
