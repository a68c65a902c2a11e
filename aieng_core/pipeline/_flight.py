"""Single flight (``[pipeline] single_flight = true``): identical concurrent requests behind a
cache share one generation.

Without it, N identical requests arriving together make N cache misses and N generations:
the cache only helps requests that arrive after the first answer was stored. With it, the
first run to miss becomes the request's *leader* and runs on; a later run whose request is
identical (see :func:`flight_key`) does not generate: it waits for the leader to *land* (its
``cache_store`` stage over, or its run ended: answered, failed, blocked or cancelled), then
looks the cache up. A follower arriving while its leader generates waits before its lookup,
so a cache counts one lookup per run (a miss, the leader's, then a hit per follower); one
whose lookup ran beside its leader's (both missed before either boarded) looks up again
after the wait. So a follower gets a normal cache hit
(its own output guards run, ``cache.hit`` is published), and when the lookup misses again
(the leader failed, was cancelled or blocked, the cache would not store the answer) it
generates itself, with every other follower of that leader: no follower waits twice.

A follower's wait is its own: cancelling it leaves the leader alone, and a leader's
cancellation lands its flight (the followers go on). It is bounded by the follower's own
stage timeouts: at most the sum of those of the stages it would run itself after the lookup
(``route`` through ``cache_store``; unbounded when one of them is), after which it stops
waiting and goes its own way (a lookup, then its own generation on a miss).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import attrs
import structlog

from ._result import to_jsonable

if TYPE_CHECKING:
    from aieng_hookspecs.types import Request

    from ..dispatch import StagePolicy
    from ._config import PipelineConfig
    from ._stages import RunState

__all__ = ["Flight", "Flights", "flight_key", "land"]

log = structlog.get_logger(__name__)

#: The stages a follower does not run while it waits: from its cache miss to the store.
_WAITED_STAGES = ("route", "retrieve", "rerank", "context", "generate", "guard_output",
                  "cache_store")

Lookup = Callable[["RunState", "StagePolicy"], Awaitable[str]]


def flight_key(request: Request) -> str:
    """What makes two requests identical for single flight: their canonical JSON (every
    field, ``metadata`` included, keys sorted, no whitespace). Identical means exactly
    equal: texts differing in whitespace or Unicode normalization, or requests differing
    in one sampling parameter or metadata field (a user id), are different requests."""
    return json.dumps(to_jsonable(request), sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))


@attrs.define(eq=False)
class Flight:
    """One request being generated: the leader's run id and the event its followers await."""

    key: str
    leader: str
    landed: anyio.Event = attrs.field(factory=anyio.Event)


class Flights:
    """A pipeline's flights in progress, by :func:`flight_key`.

    :param wait_limit: the most seconds a follower waits for its leader (``None``: no limit).
    """

    def __init__(self, wait_limit: float | None) -> None:
        self.wait_limit = wait_limit
        self._flights: dict[str, Flight] = {}
        #: How many runs wait for a leader now.
        self.waiting = 0

    @classmethod
    def of(cls, config: PipelineConfig, stages: tuple[str, ...]) -> Flights | None:
        """The flights of a pipeline, or ``None`` when single flight is off or the pipeline
        has no cache to wait on (no ``cache_lookup`` or no ``cache_store`` stage)."""
        if not (config.single_flight and "cache_lookup" in stages and "cache_store" in stages):
            return None
        limits = [config.policy(stage).timeout for stage in stages if stage in _WAITED_STAGES]
        unbounded = any(limit is None for limit in limits)
        return cls(None if unbounded else sum(limit or 0.0 for limit in limits))

    def __len__(self) -> int:
        return len(self._flights)

    async def follow(self, state: RunState, policy: StagePolicy, lookup: Lookup) -> str | None:
        """Before a cache lookup: when the request's flight is in progress, wait for its
        leader to land, then look the cache up (``"hit"`` or ``"ok"``); ``None`` (nothing
        done) when it has none."""
        flight = self._flights.get(flight_key(state.request))
        return None if flight is None else await self._wait(flight, state, policy, lookup)

    async def board(self, state: RunState, policy: StagePolicy, lookup: Lookup) -> str:
        """After a cache miss: lead the request's flight (``"ok"``: the run generates), or
        wait for its leader to land and look the cache up again (``"hit"`` or ``"ok"``)."""
        assert state.cache_request is not None
        key = flight_key(state.cache_request)
        flight = self._flights.get(key)
        if flight is None:  # no await since the miss: only one run can take the lead
            state.flight = self._flights[key] = Flight(key, state.scope.run_id)
            return "ok"
        return await self._wait(flight, state, policy, lookup)

    async def _wait(self, flight: Flight, state: RunState, policy: StagePolicy,
                    lookup: Lookup) -> str:
        started = time.perf_counter()
        self.waiting += 1
        try:
            with anyio.move_on_after(self.wait_limit) as waiting:
                await flight.landed.wait()
        finally:
            self.waiting -= 1
        waited = time.perf_counter() - started
        status = await lookup(state, policy)
        log.info("pipeline.single_flight.waited", leader=flight.leader,
                 waited_s=round(waited, 6), timed_out=waiting.cancelled_caught,
                 hit=status == "hit")
        return status

    def land(self, state: RunState) -> None:
        """End the flight ``state`` leads, if any: its followers look the cache up again."""
        flight, state.flight = state.flight, None
        if flight is None:
            return
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        flight.landed.set()


def land(state: RunState) -> None:
    """End the flight a run leads (idempotent; a run leading none is left as it is)."""
    if state.flights is not None:
        state.flights.land(state)
