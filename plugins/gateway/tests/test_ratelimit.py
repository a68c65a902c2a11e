"""Token buckets: requests and tokens per minute, Retry-After, reconciliation."""

from __future__ import annotations

import math

import pytest
from aieng_gateway import Limits, TokenBucket, parse_size
from hypothesis import given
from hypothesis import strategies as st

from aieng_core.testing import ManualClock


def test_bucket_refills_continuously() -> None:
    """60 per minute: empty after 60 takes, one more each second."""
    clock = ManualClock(0.0)
    bucket = TokenBucket(60, clock=clock)
    assert all(bucket.take(1) == 0 for _ in range(60))
    assert bucket.take(1) == pytest.approx(1.0)
    clock.now = 1.0
    assert bucket.take(1) == 0


@given(st.integers(1, 50), st.lists(st.tuples(st.floats(0, 5), st.integers(0, 30)),
                                    max_size=60))
def test_admitted_never_exceeds_the_limit(rpm: int, steps: list[tuple[float, int]]) -> None:
    """Over any schedule, admitted requests <= rpm + elapsed x rpm / 60."""
    clock = ManualClock(0.0)
    limits = Limits(clock=clock)
    admitted = 0
    for advance, burst in steps:
        clock.now += advance
        for _ in range(burst):
            wait = limits.admit("k", rpm, None, 0)
            admitted += wait == 0
            assert wait >= 0 and isinstance(wait, int)
    assert admitted <= rpm + clock.now * rpm / 60 + 1e-9


def test_tokens_reserved_then_reconciled() -> None:
    """A reservation blocks; the refund of unused tokens frees them at once."""
    clock = ManualClock(0.0)
    limits = Limits(clock=clock)
    assert limits.admit("k", None, 100, 90) == 0
    assert limits.admit("k", None, 100, 20) > 0
    limits.reconcile("k", 100, reserved=90, used=10)
    assert limits.admit("k", None, 100, 20) == 0
    with pytest.raises(ValueError, match="lower max_tokens"):
        limits.admit("k", None, 100, 101)


def test_refused_request_takes_nothing() -> None:
    """A request refused by the token bucket does not use up a request slot."""
    limits = Limits(clock=ManualClock(0.0))
    assert limits.admit("k", 2, 10, 10) == 0
    assert limits.admit("k", 2, 10, 5) > 0
    limits.reconcile("k", 10, 10, 0)
    assert limits.admit("k", 2, 10, 5) == 0


def test_parse_size() -> None:
    """Sizes in bytes, decimal and binary units; nonsense refused."""
    assert parse_size("1MB") == 1_000_000 and parse_size("512KiB") == 524_288
    assert parse_size("2048") == 2048 and parse_size("1.5 kb") == 1500
    for bad in ("lots", "0", "-1MB", "1XB"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_parse_size_of_a_long_blank_run() -> None:
    """A size followed by 20,000 blanks and a stray letter is refused at once (two blank
    runs side by side were retried against each other: quadratic, seconds); blanks around
    a size are still allowed."""
    with pytest.raises(ValueError, match="not a size"):
        parse_size("1" + " \r\n" * 20_000 + "x")
    assert parse_size(" 2 " + " " * 20_000 + "KiB \n") == 2048


def test_a_request_reserving_no_tokens_ignores_a_bucket_in_debt() -> None:
    """A usage over its reservation leaves the token bucket in debt: requests that spend
    tokens wait for it; one that reserves none (listing models, a feedback signal) passes
    at once, and still counts against the request rate."""
    limits = Limits(clock=ManualClock(0.0))
    assert limits.admit("k", 2, 100, 50) == 0
    limits.reconcile("k", 100, reserved=50, used=130)  # 30 in debt
    assert limits.admit("k", 2, 100, 1) == math.ceil(31 / (100 / 60))
    assert limits.admit("k", 2, 100, 0) == 0
    assert limits.admit("k", 2, 100, 0) > 0  # the second request of 2 per minute
