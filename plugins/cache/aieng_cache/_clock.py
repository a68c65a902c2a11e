"""The caches' two clocks: wall time for what other processes read, monotonic for the rest.

An entry kept in this process (the memory level, the semantic index) expires on the
monotonic clock: a step of the system clock (NTP, a VM resumed, a laptop woken) moves it
neither way. An entry in a shared store (a SQLite file, Redis) needs a time every process
reads alike: wall time, seconds since the Unix epoch (UTC by definition, whatever ``TZ``
says). A row also keeps when it was stored, so that a clock set back does not keep it past
its TTL: a row stored "in the future" (more than :data:`AHEAD_S` after the reader's now)
is read as expired (see :class:`~aieng_cache.SQLiteStore`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import structlog

__all__ = ["AHEAD_S", "JUMP_S", "Clock", "Clocks", "remaining"]

log = structlog.get_logger(__name__)

Clock = Callable[[], float]

#: Seconds a row's stored time may be ahead of a reader's clock and still be read as
#: stored now: the clocks of one machine's processes agree, and NTP keeps machines sharing
#: a file within milliseconds; a row further ahead was stored before the clock went back.
AHEAD_S = 1.0
#: A change of the wall clock against the monotonic one larger than this (plus NTP's
#: slew, at most 0.05 % of the time between two reads) is a step, logged.
JUMP_S = 1.0
_SLEW = 5e-4


def remaining(expires_at: float, now: float, ttl: float = math.inf) -> float:
    """Seconds an entry expiring at ``expires_at`` has left at ``now`` (``inf``: never),
    at most ``ttl``, at least 0."""
    if math.isinf(expires_at):
        return ttl
    return max(min(expires_at - now, ttl), 0.0)


class Clocks:
    """A cache's wall and monotonic clocks, read together; a step of the wall clock
    between two reads is logged (``cache.clock_step``), saying what it does to entries.

    :param wall: seconds since the Unix epoch (``time.time``).
    :param monotonic: a clock that never steps (``time.monotonic``).
    """

    def __init__(self, wall: Clock = time.time, monotonic: Clock = time.monotonic) -> None:
        self.wall = wall
        self.monotonic = monotonic
        self._last: tuple[float, float] | None = None  # (monotonic, wall - monotonic)

    def now(self) -> tuple[float, float]:
        """``(wall, monotonic)`` now."""
        wall, mono = self.wall(), self.monotonic()
        offset = wall - mono
        last = self._last
        self._last = (mono, offset)
        if last is not None:
            step = offset - last[1]
            if abs(step) > JUMP_S + _SLEW * abs(mono - last[0]):
                log.warning(
                    "cache.clock_step", step_s=round(step, 3),
                    effect=("entries the SQLite file holds expire by the new time; the "
                            "memory level and the semantic index count on the monotonic "
                            "clock and keep theirs" if step > 0 else
                            "entries the SQLite file holds that were stored in the last "
                            f"{-step:.0f} s read as stored in the future: misses, stored "
                            "again on the next answer, never kept past their TTL; the "
                            "memory level and the semantic index keep theirs"))
        return wall, mono
