"""aieng-router: routers choosing the backend of each request.

- ``intent-router``: kNN over embedded, labelled examples; each intent label maps to a
  backend;
- ``rule-router``: ordered rules (regular expression, message size, metadata, tools,
  response schema) → backend;
- ``cost-router``: the cheapest healthy backend whose expected latency fits the budget,
  from prices in the options and latencies and error rates observed on the event bus.

Every router keeps a circuit breaker per backend, fed by the ``backend.call`` and
``error`` events of its pipeline: a backend whose circuit is open is left out of routes,
and each change of state is published as a ``router.circuit`` event
(:class:`CircuitChanged`). Importing this module imports nothing heavy (numpy loads when
the intent router embeds its examples).
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, EventRegistry, hookimpl

from ._breaker import CircuitBreaker, CircuitState, Clock, Transition
from ._cost import CostRouter, Estimate
from ._events import CircuitChanged
from ._health import BackendStats, CircuitOpenError, Health
from ._intent import Embedder, IntentClassifier, IntentRouter, knn_vote, read_examples
from ._options import (
    BackendProfile,
    BreakerOptions,
    CostOptions,
    IntentOptions,
    Rule,
    RuleOptions,
)
from ._rules import RuleRouter, estimate_tokens, matches

__all__ = [
    "BackendProfile",
    "BackendStats",
    "BreakerOptions",
    "CircuitBreaker",
    "CircuitChanged",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "CostOptions",
    "CostRouter",
    "Embedder",
    "Estimate",
    "Health",
    "IntentClassifier",
    "IntentOptions",
    "IntentRouter",
    "Rule",
    "RuleOptions",
    "RuleRouter",
    "Transition",
    "aieng_register_components",
    "aieng_register_events",
    "estimate_tokens",
    "knn_vote",
    "matches",
    "read_examples",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the three routers with their typed options."""
    registry.add("intent-router", IntentRouter, options=IntentOptions,
                 description="Route by intent: kNN over embedded labelled examples")
    registry.add("rule-router", RuleRouter, options=RuleOptions,
                 description="Route by ordered rules: regex, size, metadata, tools, schema")
    registry.add("cost-router", CostRouter, options=CostOptions,
                 description="Cheapest healthy backend within a latency budget (EWMA)")


@hookimpl
def aieng_register_events(registry: EventRegistry) -> None:
    """Declare the ``router.circuit`` event."""
    registry.add(CircuitChanged)
