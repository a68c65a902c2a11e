"""Per-key token buckets: requests per minute and tokens per minute."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["Limits", "TokenBucket"]


class TokenBucket:
    """``capacity`` units, refilled continuously at ``capacity`` per ``period`` seconds.

    A bucket may go into debt (:meth:`charge` after the fact): the next takes wait for it.

    :param clock: monotonic seconds (injectable for tests); one that goes back never
        holds a key back, one that jumps ahead refills the bucket at most to full.
    """

    __slots__ = ("capacity", "clock", "level", "rate", "stamp")

    def __init__(self, capacity: int, *, period: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / period
        self.clock = clock
        self.level = float(capacity)
        self.stamp = clock()

    def _fill(self) -> None:
        now = self.clock()
        # A clock that went back (an injected one may: a wall clock stepped by NTP) adds
        # nothing and takes nothing: subtracting would hold the key back for as long as
        # it jumped (an hour), and the refill counts from the time seen after the jump.
        # A jump forward refills at most to ``capacity``: never a burst past it.
        self.level = min(self.capacity, self.level + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` units are available (0: now)."""
        self._fill()
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, amount: float) -> float:
        """Take ``amount`` units if available and return 0; else take nothing and return
        the seconds to wait."""
        wait = self.wait_for(amount)
        if wait == 0.0:
            self.level -= amount
        return wait

    def charge(self, amount: float) -> None:
        """Adjust by ``amount`` after the fact (negative: a refund), debt allowed."""
        self._fill()
        self.level = min(self.capacity, self.level - amount)


class Limits:
    """The buckets of every key, built on first use from its ``rpm`` / ``tpm``.

    Tokens are reserved up front (an estimate: prompt characters / 4 plus ``max_tokens``)
    and reconciled with the usage the backend reports once the request ends.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}

    def _bucket(self, table: dict[str, TokenBucket], key_id: str, limit: int) -> TokenBucket:
        bucket = table.get(key_id)
        if bucket is None or bucket.capacity != limit:
            bucket = table[key_id] = TokenBucket(limit, clock=self.clock)
        return bucket

    def admit(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int, *,
              counted: str = "prompt estimate plus max_tokens",
              remedy: str = "lower max_tokens") -> int:
        """Admit one request reserving ``tokens``: 0, or the whole seconds to wait
        (``Retry-After``). Nothing is taken from either bucket when refused.

        :param counted, remedy: what ``tokens`` counts and what to do when it is over
            ``tpm``, for the error (an embeddings request counts its input).
        :raises ValueError: when ``tokens`` exceeds the whole ``tpm`` (it could never pass).
        """
        if tpm is not None and tokens > tpm:
            raise ValueError(f"this request may use up to {tokens} tokens ({counted}), more "
                             f"than the key's limit of {tpm} per minute: {remedy}")
        # A request that reserves no tokens (GET /v1/models, a feedback signal) neither
        # takes from the token bucket nor waits for it: a bucket in debt (a usage over its
        # reservation) holds back only the requests that would spend tokens.
        waits = []
        if rpm is not None:
            waits.append(self._bucket(self._requests, key_id, rpm).wait_for(1))
        if tpm is not None and tokens > 0:
            waits.append(self._bucket(self._tokens, key_id, tpm).wait_for(tokens))
        wait = max(waits, default=0.0)
        if wait > 0:
            return max(1, math.ceil(wait))
        if rpm is not None:
            self._requests[key_id].take(1)
        if tpm is not None and tokens > 0:
            self._tokens[key_id].take(tokens)
        return 0

    def reconcile(self, key_id: str, tpm: int | None, reserved: int, used: int) -> None:
        """Replace the reservation by the tokens actually used."""
        if tpm is not None and key_id in self._tokens:
            self._tokens[key_id].charge(used - reserved)
