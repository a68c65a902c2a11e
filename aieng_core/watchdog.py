"""Catches hook impls that block the event loop.

A task sleeps a short interval and measures how late it wakes. A late wake-up means
something held the loop; the impls that were running during the gap (in flight, or finished
inside it) are named in a ``loop.blocked`` event and a warning log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import anyio
import structlog

from aieng_hookspecs.types import Event, LoopBlocked

from .dispatch import Dispatcher

__all__ = ["watch_loop"]

log = structlog.get_logger(__name__)


_LIFECYCLE = (".aieng_pipeline_open", ".aieng_pipeline_close")


async def watch_loop(
    threshold: float,
    dispatchers: Callable[[], Iterable[Dispatcher]],
    emit: Callable[[Event], None],
    *,
    interval: float = 0.01,
) -> None:
    """Run forever (until cancelled), reporting loop stalls longer than ``threshold`` seconds."""
    while True:
        before = time.perf_counter()
        await anyio.sleep(interval)
        now = time.perf_counter()
        lag = now - before - interval
        if lag < threshold:
            continue
        start = before + interval
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
        if active:
            log.warning("loop.blocked", duration_s=round(lag, 4), active=active)
        else:  # nothing of ours held the loop: another thread holding the GIL, a paused loop
            log.debug("loop.blocked", duration_s=round(lag, 4), active=active)
