"""Catches hook impls that block the event loop.

A task sleeps a short interval and measures how late it wakes. A late wake-up means
something held the loop; the impls that were running during the gap (in flight, or finished
inside it) are named in a ``loop.blocked`` event and a warning log.

A busy machine (a loaded CI box, a laptop compiling) also wakes the loop late: its thread
is ready to run and waits for a CPU. Where the operating system says how long that wait
was (Linux: ``/proc/thread-self/schedstat``), it is taken out of the gap: a stall that the
wait for a CPU explains is no block (a ``loop.starved`` debug line, no event, no warning),
and an impl that happened to be running when the machine was busy is not blamed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

import anyio
import structlog

from aieng_hookspecs.types import Event, LoopBlocked

from .dispatch import Dispatcher

__all__ = ["CpuWait", "watch_loop"]

log = structlog.get_logger(__name__)


_LIFECYCLE = (".aieng_pipeline_open", ".aieng_pipeline_close")
_SCHEDSTAT = "/proc/thread-self/schedstat"


class CpuWait:
    """Seconds the thread that made it has spent ready to run but waiting for a CPU (the
    second field of Linux's ``/proc/thread-self/schedstat``, in nanoseconds there); ``0.0``
    where the system does not say (then nothing is taken out of a stall)."""

    def __init__(self) -> None:
        self._fd: int | None = None
        if hasattr(os, "pread"):
            try:  # opened in the loop's thread: the file is that thread's for good
                self._fd = os.open(_SCHEDSTAT, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                self._fd = None

    def __call__(self) -> float:
        if self._fd is None:
            return 0.0
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):  # not the layout expected: stop asking
            self.close()
            return 0.0

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


async def watch_loop(
    threshold: float,
    dispatchers: Callable[[], Iterable[Dispatcher]],
    emit: Callable[[Event], None],
    *,
    interval: float = 0.01,
) -> None:
    """Run forever (until cancelled), reporting loop stalls longer than ``threshold``
    seconds, not counting the time the loop's thread waited for a CPU."""
    cpu_wait = CpuWait()
    try:
        queued = cpu_wait()
        while True:
            before = time.perf_counter()
            await anyio.sleep(interval)
            now = time.perf_counter()
            waited, queued = queued, cpu_wait()
            lag = now - before - interval
            if lag < threshold:
                continue
            starved = queued - waited
            if lag - starved < threshold:  # the machine was busy, not the loop
                log.debug("loop.starved", duration_s=round(lag, 4),
                          cpu_wait_s=round(starved, 4))
                continue
            _report(lag, starved, before + interval, now, dispatchers, emit)
    finally:
        cpu_wait.close()


def _report(lag: float, starved: float, start: float, now: float,
            dispatchers: Callable[[], Iterable[Dispatcher]],
            emit: Callable[[Event], None]) -> None:
    culprits: set[str] = set()
    # Blame only impls that ran for most of the gap: the loop also stalls when it is
    # paused between tests, and whatever runs first after the pause did not cause it.
    enough = lag / 2
    for dispatcher in dispatchers():
        for label, began in dispatcher.active.values():
            if now - max(began, start) >= enough:
                culprits.add(label)
        for label, began, ended in dispatcher.recent:
            if min(ended, now) - max(began, start) >= enough:
                culprits.add(label)
    # Opening and closing load and release models: worker threads importing torch or
    # reading weights hold the GIL for long stretches, and that is expected there.
    culprits = {c for c in culprits if not c.endswith(_LIFECYCLE)}
    active = tuple(sorted(culprits))
    emit(LoopBlocked(duration_s=lag, active=active))
    fields = {"duration_s": round(lag, 4), "active": active}
    if starved:
        fields["cpu_wait_s"] = round(starved, 4)
    if active:
        log.warning("loop.blocked", **fields)
    else:  # nothing of ours held the loop: another thread holding the GIL, a paused loop
        log.debug("loop.blocked", **fields)
