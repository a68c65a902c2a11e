"""The ``cost-router``'s numbers against an independent computation: the expected cost of
its README (prices per 1,000 tokens, the prompt estimated as characters / 4 rounded up,
the completion as ``max_tokens`` before any call is observed), computed here in exact
rational arithmetic, and the order of its README (fitting candidates cheapest first, ties
to the faster and then to the candidates' order; the others fastest first)."""

from __future__ import annotations

import math
from fractions import Fraction

from aieng_hookspecs.types import Message, Request
from aieng_router import BackendProfile, CostOptions, CostRouter
from hypothesis import given, settings
from hypothesis import strategies as st

#: Prices exact in binary, so that ties are real ties (0.1 + 0.2 is not 0.3 in floats).
PRICES = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.5, 10.0])
PROFILES = st.builds(BackendProfile, price_in=PRICES, price_out=PRICES,
                     quality=st.integers(0, 2),
                     latency_s=st.sampled_from([None, 0.5, 1.0, 2.0]))


@settings(max_examples=200, deadline=None)
@given(profiles=st.lists(PROFILES, min_size=1, max_size=6),
       prompt=st.text(min_size=1, max_size=300), max_tokens=st.integers(1, 5000),
       budget=st.sampled_from([None, 0.75, 1.5]), floor=st.integers(0, 2))
def test_costs_and_order_match_the_readme(profiles: list[BackendProfile], prompt: str,
                                          max_tokens: int, budget: float | None,
                                          floor: int) -> None:
    names = [f"b{i}" for i in range(len(profiles))]
    router = CostRouter(CostOptions(backends=dict(zip(names, profiles, strict=True)),
                                    latency_budget_s=budget, min_quality=floor))
    request = Request(messages=(Message("user", prompt),), max_tokens=max_tokens)
    prompt_tokens = math.ceil(len(prompt) / 4)
    exact = {name: (Fraction(p.price_in) * prompt_tokens + Fraction(p.price_out) * max_tokens)
             / 1000 for name, p in zip(names, profiles, strict=True)}
    ranked = router.rank(request, names)
    for estimate in ranked:
        assert estimate.cost == float(exact[estimate.backend])  # one rounding: the / 1000

    def fits(i: int) -> bool:
        latency = profiles[i].latency_s
        return profiles[i].quality >= floor and (budget is None or latency is None
                                                 or latency <= budget)

    def slow(i: int) -> float:
        latency = profiles[i].latency_s
        return math.inf if latency is None else latency

    order = (sorted((i for i in range(len(names)) if fits(i)),
                    key=lambda i: (exact[names[i]], slow(i), i))
             + sorted((i for i in range(len(names)) if not fits(i)),
                      key=lambda i: (slow(i), exact[names[i]], i)))
    assert [e.backend for e in ranked] == [names[i] for i in order]
    route = router.aieng_route(request, names)
    assert route is not None
    assert (route.target, *route.fallbacks) == tuple(names[i] for i in order)


def test_the_candidates_order_breaks_a_tie_of_cost_and_latency() -> None:
    """Two backends of the same price and latency: the one listed first among the
    candidates wins, whichever way the profiles were written."""
    same = BackendProfile(price_in=0.5, price_out=1.0, latency_s=1.0)
    router = CostRouter(CostOptions(backends={"a": same, "b": same}))
    request = Request(messages=(Message("user", "hello"),), max_tokens=10)
    assert [e.backend for e in router.rank(request, ["b", "a"])] == ["b", "a"]
    assert [e.backend for e in router.rank(request, ["a", "b"])] == ["a", "b"]
