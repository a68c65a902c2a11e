"""Time in the routers: latency read from the kernel's monotonic ``duration_s``, never
from the events' wall-clock ``ts`` (which an NTP step moves), and an average that one
sample from a suspended process cannot make a backend look too slow to route to."""

from __future__ import annotations

import attrs
import pytest
from aieng_hookspecs.types import ErrorEvent, Message, ModelCall, Request, Usage
from aieng_router import BackendProfile, CostOptions, CostRouter
from aieng_router._health import SPIKE
from router_testing import FakeClock


def call(backend: str, seconds: float, run_id: str = "") -> ModelCall:
    """A ``backend.call`` event of ``backend`` taking ``seconds``."""
    return ModelCall(component=backend, messages=(Message("user", "q"),), duration_s=seconds,
                     usage=Usage(prompt_tokens=1, completion_tokens=20), run_id=run_id)


def router() -> CostRouter:
    """``cheap`` (1.0 s budget fits its 0.5 s prior) and ``dear``, priced so that ``cheap``
    wins while it fits."""
    return CostRouter(CostOptions(
        backends={"cheap": BackendProfile(price_in=0.1, price_out=0.1, latency_s=0.5),
                  "dear": BackendProfile(price_in=10.0, price_out=10.0, latency_s=0.2)},
        latency_budget_s=1.0, alpha=0.3), clock=FakeClock())


@pytest.mark.parametrize("step", [-0.25, -3600.0, 3600.0])
def test_a_wall_clock_step_between_events_changes_no_latency(step: float) -> None:
    """A backend failed, the next answered in 0.3 s (its ``duration_s``); the wall clock
    stepped by ``step`` between the two events (their ``ts``): the latency learned is the
    answering backend's 0.3 s whatever the step (taken from the ``ts`` gap, it was 0.05 s
    after a 0.25 s step back)."""
    found = router()
    failed = ErrorEvent(stage="generate", hook="aieng_generate", plugin="dear",
                        error_type="RuntimeError", message="boom", policy="fallback",
                        run_id="r1", ts=1_000_000.0)
    found.aieng_on_event(failed)
    answered = attrs.evolve(call("cheap", 0.3, run_id="r1"), ts=failed.ts + 0.3 + step)
    found.aieng_on_event(answered)
    assert found.health.stats["cheap"].latency_s == pytest.approx(0.3)


def test_one_huge_sample_does_not_price_a_backend_out() -> None:
    """A call that took an hour (the process was suspended mid-call) counts as
    :data:`SPIKE` times the average: ``cheap`` averaging 0.5 s moves to 0.95 s, still in
    its 1 s budget and still routed to, and is back near 0.5 s after a few normal calls;
    uncapped, 1080 s made it the last choice, with no call left to correct it."""
    found = router()
    for _ in range(3):
        found.aieng_on_event(call("cheap", 0.5))
    found.aieng_on_event(call("cheap", 3600.0))
    assert found.health.stats["cheap"].latency_s == pytest.approx(0.3 * SPIKE * 0.5 + 0.7 * 0.5)
    route = found.aieng_route(Request(messages=(Message("user", "hi"),)), ["cheap", "dear"])
    assert route is not None and route.target == "cheap"
    for _ in range(5):
        found.aieng_on_event(call("cheap", 0.5))
    assert found.health.stats["cheap"].latency_s < 0.6


def test_a_backend_that_really_slowed_down_is_seen_in_a_few_calls() -> None:
    """The cap slows the average's rise, not its truth: a backend gone from 0.5 s to 5 s
    exceeds the 1 s budget after two slow calls, and ``dear`` takes over."""
    found = router()
    found.aieng_on_event(call("cheap", 0.5))
    averages = []
    for _ in range(3):
        found.aieng_on_event(call("cheap", 5.0))
        averages.append(found.health.stats["cheap"].latency_s)
    assert averages[1] > 1.0 and averages == sorted(averages)
    route = found.aieng_route(Request(messages=(Message("user", "hi"),)), ["cheap", "dear"])
    assert route is not None and route.target == "dear"


def test_a_backend_averaging_zero_still_learns_a_latency() -> None:
    """An average of 0 s (answers from a cache in front) caps from a 10 ms floor, so a
    real latency is learned, not capped at 0 forever."""
    found = router()
    found.aieng_on_event(call("cheap", 0.0))
    for _ in range(12):
        found.aieng_on_event(call("cheap", 2.0))
    assert found.health.stats["cheap"].latency_s > 1.0
