"""When to retry and how long to wait: status rules, ``Retry-After`` and backoff."""

from __future__ import annotations

import datetime
import email.utils
import random
import re
import time
from collections.abc import Mapping

__all__ = ["RETRY_STATUSES", "backoff", "retry_after", "retryable_status"]

#: 4xx statuses that are worth another attempt (timeouts, conflicts, rate limits).
RETRY_STATUSES = frozenset({408, 409, 429})
#: A wait written as a number: RFC 9110's delta-seconds (ASCII digits), with a fraction
#: as some servers send (``1.5``); not Python's other float spellings (``1e3``, ``1_000``,
#: ``+3``, ``-0``, ``inf``, non-ASCII digits).
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def retryable_status(status: int) -> bool:
    """Whether an answer with ``status`` may be retried: 408, 409, 429 and every 5xx."""
    return status in RETRY_STATUSES or status >= 500


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The wait a server asked for, in seconds, or ``None`` when it asked for none.

    Reads ``retry-after-ms`` (OpenAI's, in milliseconds) and then ``Retry-After``, as
    seconds (ASCII digits, optionally with a fraction: ``1.5``) or as an HTTP date
    (RFC 9110 §10.2.3, any of its three forms, read as GMT); a date in the past is a wait
    of 0, a number too large for a float ``inf``.
    Unreadable values count as no request.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    millis = _number(lowered.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    seconds = _number(raw)
    if seconds is None:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):  # junk, or 10**20 hours
            return None
        if when.tzinfo is None:
            # An HTTP date is GMT even when written without a zone: the asctime form that
            # RFC 9110 §5.6.7 obliges recipients to accept ("Sun Nov  6 08:49:37 1994").
            when = when.replace(tzinfo=datetime.UTC)
        current = time.time() if now is None else now
        return max(0.0, when.timestamp() - current)
    return seconds


def _number(raw: str | None) -> float | None:
    """A header's count of seconds (or milliseconds): ASCII digits with an optional
    fraction (``"2"``, ``"1.5"``), else ``None``. Digits too many for a float (a valid
    but absurd ``Retry-After``) are ``inf``: a wait longer than any ``backoff_max``, never
    mistaken for no request (and a retry after the backoff)."""
    if raw is None or not _SECONDS.fullmatch(raw.strip()):
        return None
    return float(raw)  # ASCII digits only: never NaN, at worst inf


def backoff(attempt: int, *, base: float, cap: float,
            rng: random.Random | None = None) -> float:
    """The wait before retry number ``attempt`` (1-based): ``base * 2**(attempt-1)``, capped
    at ``cap``, with "equal jitter" (half fixed, half uniform) so clients that failed
    together do not retry together."""
    nominal = min(cap, base * (2.0 ** max(0, attempt - 1)))
    draw = (rng or random).random()
    return nominal / 2.0 + draw * nominal / 2.0
