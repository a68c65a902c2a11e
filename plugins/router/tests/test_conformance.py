"""Every router passes the kit's router conformance suite.

The intent router embeds with the kit's ``HashEmbedder`` double (injected), so the suite
needs no model; its path through the pipeline's embedder is tested in test_pipeline.py.
"""

from __future__ import annotations

import pytest
from aieng_router import (
    BackendProfile,
    CostOptions,
    CostRouter,
    IntentOptions,
    IntentRouter,
    Rule,
    RuleOptions,
    RuleRouter,
)

from aieng_core.testing import HashEmbedder
from aieng_core.testing.conformance import RouterSuite

EXAMPLES = {"billing": ("refund my order", "charged twice on my card"),
            "tech": ("the app crashes", "cannot connect to the server")}


class TestIntentRouter(RouterSuite):
    """``intent-router`` over the hashing embedder, routing to ``alpha`` / ``beta``."""

    @pytest.fixture
    def component(self) -> IntentRouter:
        """Two intents, a default, and the hashing embedder."""
        return IntentRouter(IntentOptions(routes={"billing": "alpha", "tech": "beta"},
                                          examples=EXAMPLES, k=3, default="beta"),
                            embedder=HashEmbedder().aieng_embed)


class TestRuleRouter(RouterSuite):
    """``rule-router`` with a pattern rule, a size rule and a default."""

    backends = ("alpha", "beta", "large", "small")

    @pytest.fixture
    def component(self) -> RuleRouter:
        """Refunds to ``alpha``, long prompts to ``large``, the rest to ``beta``."""
        return RuleRouter(RuleOptions(
            rules=(Rule(target="alpha", pattern=r"refund", fallbacks=("beta", "alpha")),
                   Rule(target="large", min_chars=10, fallbacks=("small",))),
            default="beta", fallbacks=("alpha",)))


class TestCostRouter(RouterSuite):
    """``cost-router`` with two priced backends and a latency budget."""

    backends = ("small", "large", "alpha")

    @pytest.fixture
    def component(self) -> CostRouter:
        """``small`` cheap and fast, ``large`` dear and slow, others unpriced."""
        return CostRouter(CostOptions(
            backends={"small": BackendProfile(price_in=0.1, price_out=0.2, latency_s=0.2),
                      "large": BackendProfile(price_in=3.0, price_out=6.0, quality=2,
                                              latency_s=1.5)},
            latency_budget_s=1.0))
