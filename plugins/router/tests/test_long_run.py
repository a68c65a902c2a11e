"""Routers over weeks: per-backend state bounded by the backends, not by the requests.

A router serving for weeks sees millions of runs (each its own run id), client-chosen
model names and prompts, and the bus events of every call. What it keeps per backend
(moving averages, a circuit breaker and its remembered runs) must be bounded by the
configured backends and documented sizes: ``measure_growth`` reports what 3,000 routed
and observed requests retained.
"""

from __future__ import annotations

from aieng_hookspecs.types import ErrorEvent, Message, ModelCall, Request, Usage
from aieng_router import (
    BackendProfile,
    BreakerOptions,
    CostOptions,
    CostRouter,
    Rule,
    RuleOptions,
    RuleRouter,
)
from aieng_router._breaker import _RUNS_REMEMBERED
from router_testing import FakeClock

from aieng_core.testing.steady import measure_growth

BACKENDS = ("cheap", "fast", "big")


def _request(i: int) -> Request:
    return Request(messages=(Message("user", f"question {i}: code please" if i % 2 else
                                     f"hello {i}"),),
                   model=f"client-model-{i}", max_tokens=8 + i % 7)


def _observed(router: CostRouter | RuleRouter, i: int, backend: str) -> None:
    """The bus events of one call: a success, or (one in five) a failure."""
    run_id = f"run-{i}"
    if i % 5 == 4:
        router.aieng_on_event(ErrorEvent(run_id=run_id, pipeline="p", hook="aieng_generate",
                                         plugin=backend, error_type="TimeoutError",
                                         message="timed out", policy="fallback",
                                         stage="generate"))
    else:
        router.aieng_on_event(ModelCall(run_id=run_id, pipeline="p", component=backend,
                                        messages=(Message("user", "hi"),),
                                        usage=Usage(prompt_tokens=3, completion_tokens=5),
                                        duration_s=0.01 * (1 + i % 3)))


def test_a_cost_router_keeps_per_backend_state_only() -> None:
    """3,000 requests with their own run ids and model names, routed and observed: the
    statistics and breakers are the three backends', each breaker's remembered runs at
    most its documented 1,024, and nothing more is retained per request."""
    clock = FakeClock()
    router = CostRouter(CostOptions(backends={
        "cheap": BackendProfile(price_in=0.1, price_out=0.2, quality=1),
        "fast": BackendProfile(price_in=1.0, price_out=2.0, quality=2),
        "big": BackendProfile(price_in=5.0, price_out=9.0, quality=3)},
        breaker=BreakerOptions(failures=3, cooldown_s=5.0)), clock=clock)

    def request(i: int) -> None:
        clock.advance(0.5)
        route = router.health.route(
            [e.backend for e in router.rank(_request(i), BACKENDS)], BACKENDS,
            reason="test")  # the run id is the one bound by the pipeline: here none
        router.health.admit(BACKENDS, BACKENDS, run_id=f"run-{i}")
        _observed(router, i, route.target if route is not None else "cheap")

    growth = measure_growth(request, warmup=1_500, calls=3_000)
    assert growth.per_call < 16, growth.report()
    assert set(router.health.stats) <= set(BACKENDS)
    assert set(router.health.breakers) <= set(BACKENDS)
    assert all(len(b._runs) <= _RUNS_REMEMBERED for b in router.health.breakers.values())


def test_a_rule_router_keeps_per_backend_state_only() -> None:
    """The rule router: its patterns compiled once, 3,000 requests routed and observed
    retain nothing per request."""
    router = RuleRouter(RuleOptions(rules=[Rule(target="big", pattern=r"\bcode\b"),
                                           Rule(target="fast", max_chars=8)],
                                    default="cheap", breaker=BreakerOptions(failures=3)),
                        clock=FakeClock())
    patterns = list(router._patterns)

    def request(i: int) -> None:
        route = router.aieng_route(_request(i), BACKENDS)
        assert route is not None
        _observed(router, i, route.target)

    growth = measure_growth(request, warmup=1_500, calls=3_000)
    assert growth.per_call < 16, growth.report()
    assert set(router.health.stats) <= set(BACKENDS)
    assert router._patterns == patterns
