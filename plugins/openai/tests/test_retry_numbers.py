"""The retry numbers: ``Retry-After`` read as the seconds it says (decimal, huge, HTTP
dates, ``retry-after-ms``), the backoff within its documented bounds, and exactly
``max_retries + 1`` attempts, against the loopback server."""

from __future__ import annotations

import email.utils
import time
from fractions import Fraction
from typing import Any

import pytest
import structlog
from _openai_double import OpenAIServerDouble, Scripted
from aieng_hookspecs.types import Message, Request
from aieng_openai import OpenAIBackend, OpenAIError, retry_after
from aieng_openai._payload import ProtocolError, vectors_from
from hypothesis import given
from hypothesis import strategies as st


def ask() -> Request:
    return Request(messages=(Message("user", "hello"),), max_tokens=8)


def fail(status: int, **headers: str) -> Scripted:
    return Scripted(status=status, headers=headers,
                    body='{"error": {"message": "scripted failure"}}')


# -- the header, without a server --------------------------------------------------------


@given(whole=st.integers(0, 10**12), fraction=st.none() | st.from_regex(r"[0-9]{1,6}",
                                                                         fullmatch=True))
def test_seconds_and_millis_are_the_number_written(whole: int, fraction: str | None) -> None:
    """``Retry-After: N`` or ``N.DDD`` is that many seconds, ``retry-after-ms`` that many
    thousandths (checked as exact fractions, to a float's rounding)."""
    text = str(whole) if fraction is None else f"{whole}.{fraction}"
    exact = Fraction(text)
    seconds = retry_after({"Retry-After": text})
    assert seconds is not None and abs(Fraction(seconds) - exact) <= exact * Fraction(2, 2**53)
    millis = retry_after({"retry-after-ms": text, "Retry-After": "7"})
    assert millis is not None
    assert abs(Fraction(millis) - exact / 1000) <= exact / 1000 * Fraction(4, 2**53)


def test_a_huge_delta_seconds_is_an_endless_wait_not_no_request() -> None:
    """400 digits are valid delta-seconds: a wait longer than any backoff_max (``inf``),
    not "no request" (which would retry after the backoff)."""
    huge = "9" * 400
    assert retry_after({"Retry-After": huge}) == float("inf")
    assert retry_after({"retry-after-ms": huge}) == float("inf")


@pytest.mark.parametrize("junk", ["1e3", "1_000", "+3", "-0", "-1", ".5", "5.", "0x10",
                                  "infinity", "NaN", "\uff11\uff10", "\u0663", "1 000"])
def test_other_float_spellings_are_no_request(junk: str) -> None:
    """Only ASCII digits (with a fraction) are a number of seconds: Python's other float
    spellings (an exponent, underscores, a sign, non-ASCII digits) are unreadable, so no
    request; in ``retry-after-ms`` they leave ``Retry-After`` to decide."""
    assert retry_after({"Retry-After": junk}) is None
    assert retry_after({"retry-after-ms": junk, "Retry-After": "3"}) == 3.0


_FORMS = [lambda t: email.utils.formatdate(t, usegmt=True),
          lambda t: time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(t)),
          lambda t: time.asctime(time.gmtime(t))]


@given(now=st.integers(1_600_000_000, 1_900_000_000), offset=st.integers(-10**6, 10**6),
       form=st.sampled_from(range(len(_FORMS))), fraction=st.floats(0.0, 0.999))
def test_an_http_date_is_the_seconds_until_it_never_negative(
        now: int, offset: int, form: int, fraction: float) -> None:
    """Each of RFC 9110's date forms is a wait of (the date - now) seconds, 0 for a date
    in the past (the date has whole seconds; ``now`` may not)."""
    header = _FORMS[form](now + offset)
    wait = retry_after({"Retry-After": header}, now=now + fraction)
    assert wait == pytest.approx(max(0.0, offset - fraction), abs=1e-6)
    assert wait is not None and wait >= 0.0


# -- against the server ------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_huge_retry_after_is_not_awaited_nor_retried(
        double: OpenAIServerDouble, make_backend: Any) -> None:
    """A 429 asking for 10^400 seconds gets no retry (it is longer than backoff_max); the
    error keeps the wait (``inf``) and says why."""
    double.script("chat/completions", fail(429, **{"Retry-After": "1" + "0" * 400}))
    backend: OpenAIBackend = make_backend(backoff_max=5.0)
    with pytest.raises(OpenAIError) as caught:
        await backend.aieng_generate(ask())
    await backend.aclose()
    assert len(double.calls_to("chat/completions")) == 1
    assert caught.value.retry_after == float("inf") and caught.value.attempts == 1
    assert "more than backoff_max (5 s)" in caught.value.hint


@pytest.mark.anyio
async def test_attempts_are_max_retries_plus_one_with_waits_in_their_bounds(
        double: OpenAIServerDouble, make_backend: Any) -> None:
    """Every answer a 503: exactly ``max_retries + 1`` requests reach the server, and the
    wait before retry n lies in [½, 1] of ``backoff_base · 2^(n-1)`` capped at
    ``backoff_max``; a ``retry-after-ms`` is awaited as the milliseconds it says."""
    double.script("chat/completions", *[fail(503)] * 4)
    backend: OpenAIBackend = make_backend(max_retries=3, backoff_base=0.01,
                                          backoff_max=0.03)
    with structlog.testing.capture_logs() as logs, pytest.raises(OpenAIError) as caught:
        await backend.aieng_generate(ask())
    assert len(double.calls_to("chat/completions")) == 4 and caught.value.attempts == 4
    waits = [entry["wait_s"] for entry in logs if entry["event"] == "openai.retry"]
    assert [entry["attempt"] for entry in logs if entry["event"] == "openai.retry"] \
        == [1, 2, 3]
    for nominal, wait in zip((0.01, 0.02, 0.03), waits, strict=True):
        assert nominal / 2 - 0.0005 <= wait <= nominal + 0.0005
    double.reset()
    double.script("chat/completions", fail(429, **{"retry-after-ms": "20",
                                                   "Retry-After": "9"}))
    with structlog.testing.capture_logs() as logs:
        assert await backend.aieng_generate(ask()) is not None
    await backend.aclose()
    assert [entry["wait_s"] for entry in logs if entry["event"] == "openai.retry"] == [0.02]
    assert len(double.calls_to("chat/completions")) == 2


# -- embeddings: input order whatever the answer's -----------------------------------------


@given(data=st.data(), count=st.integers(1, 40))
def test_embeddings_are_in_input_order_whatever_the_answers_order(
        data: st.DataObject, count: int) -> None:
    """``data`` items in any order, each ``index`` an integer or the whole float a proxy
    writes (``3.0``): vector ``i`` is the one whose index is ``i``."""
    order = data.draw(st.permutations(range(count)))
    floats = data.draw(st.lists(st.booleans(), min_size=count, max_size=count))
    items = [{"index": float(i) if as_float else i, "embedding": [float(i), 1.0]}
             for i, as_float in zip(order, floats, strict=True)]
    assert vectors_from({"data": items}, count) == [[float(i), 1.0] for i in range(count)]


@pytest.mark.parametrize("index", [True, 0.5, 2.0, -1, "0", None])
def test_an_index_that_is_not_a_position_is_refused(index: object) -> None:
    """A boolean, a fraction, a number out of range, a string or null as ``index`` is a
    protocol error naming it, never a vector put in some position."""
    items = [{"index": 0, "embedding": [1.0]}, {"index": index, "embedding": [2.0]}]
    with pytest.raises(ProtocolError, match="bad or repeated index"):
        vectors_from({"data": items}, 2)
