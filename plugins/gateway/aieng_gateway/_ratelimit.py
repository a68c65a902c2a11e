"""Per-key token buckets: requests per minute and tokens per minute."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["Limits", "TokenBucket"]

#: Seconds (on the limits' clock) between two sweeps of the idle buckets; a sweep also
#: runs as soon as the buckets outnumber :data:`SWEEP_AT_LEAST` and twice what the last
#: sweep left, so every bucket is looked at a bounded number of times per request.
SWEEP_S = 60.0
SWEEP_AT_LEAST = 1024


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

    def idle(self) -> bool:
        """Whether the bucket has refilled to full: it then limits exactly as a new one
        would, and may be forgotten."""
        self._fill()
        return self.level >= self.capacity

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

    A bucket that has refilled to full limits as a new one would, so it is dropped (a sweep
    every :data:`SWEEP_S` seconds, and whenever the buckets double past
    :data:`SWEEP_AT_LEAST`): memory holds the buckets of the keys used in the last minute
    or two (and of those still in debt), not of every key ever seen, revoked ones
    included. A key's bucket comes back, full, at its next request.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}
        self._swept = clock()
        self._sweep_size = SWEEP_AT_LEAST

    def __len__(self) -> int:
        """How many buckets are held (a key with both limits holds two)."""
        return len(self._requests) + len(self._tokens)

    def _sweep(self) -> None:
        """Drop the full buckets when a sweep is due (see the class)."""
        now = self.clock()
        # A clock that went back sweeps at once (and counts from there), never later.
        if self._swept <= now < self._swept + SWEEP_S and len(self) < self._sweep_size:
            return
        for table in (self._requests, self._tokens):
            for key_id in [k for k, bucket in table.items() if bucket.idle()]:
                del table[key_id]
        self._swept = now
        self._sweep_size = max(SWEEP_AT_LEAST, 2 * len(self))

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
        self._sweep()
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
        """Replace the reservation by the tokens actually used. A bucket dropped since the
        reservation (a run longer than the refill: full again) gets back only a debt; a
        refund to a full bucket changes nothing."""
        if tpm is None:
            return
        if key_id in self._tokens:
            self._tokens[key_id].charge(used - reserved)
        elif used > reserved:
            self._bucket(self._tokens, key_id, tpm).charge(used - reserved)
