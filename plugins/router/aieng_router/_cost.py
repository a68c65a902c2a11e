"""``cost-router``: the cheapest healthy backend whose expected latency fits the budget."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Event, Request, Route

from ._breaker import Clock
from ._health import Health
from ._options import BackendProfile, CostOptions
from ._rules import estimate_tokens

__all__ = ["CostRouter", "Estimate"]

#: The most completion tokens an estimate counts (2**53: every int up to it is a float).
_MOST_TOKENS = 2**53


@attrs.frozen
class Estimate:
    """What the ``cost-router`` expects of one backend for one request.

    :param backend: the candidate.
    :param cost: the expected price (``inf`` without a profile).
    :param latency_s: the expected latency (``None``: unknown).
    :param quality: the quality tier (``-1`` without a profile).
    :param error_rate: the error-rate moving average.
    :param fits: within the latency budget and at least the minimum quality.
    :param healthy: the error rate is at most ``max_error_rate``.
    """

    backend: str
    cost: float
    latency_s: float | None
    quality: int
    error_rate: float
    fits: bool
    healthy: bool


def _override(request: Request, key: str, default: Any, kind: type | tuple[type, ...],
              valid: Callable[[Any], bool]) -> Any:
    """A request's own value of an option from its metadata; one of the wrong type, or
    one the option itself refuses (a NaN, zero or negative budget, which nothing could
    meet), is ignored as if absent."""
    value = request.metadata.get(key, default)
    if value is None or isinstance(value, bool) or not isinstance(value, kind) or \
            not valid(value):
        return default
    return value


class CostRouter:
    """Routes to the cheapest backend that is healthy, expected to answer within the
    latency budget and of at least the minimum quality; every other admitted candidate
    follows as a fallback: healthy ones that fit (cheapest first), then healthy ones that
    do not (fastest first), then unhealthy ones (lowest error rate first). Backends whose
    circuit is open are left out.

    Expected cost: ``price_in`` × prompt tokens (estimated from characters) + ``price_out``
    × completion tokens (the backend's observed average, at most ``max_tokens``; else
    ``max_tokens``), per 1,000. Expected latency: the moving average of observed
    ``backend.call`` latencies, else the profile's ``latency_s``; unknown latency is
    assumed to fit.

    :param options: the typed options.
    :param clock: the circuit breakers' time source.
    """

    def __init__(self, options: CostOptions | None = None, *,
                 clock: Clock = time.monotonic) -> None:
        self.options = options if options is not None else CostOptions()
        self.health = Health("cost-router", self.options.breaker, alpha=self.options.alpha,
                             clock=clock)

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Check the profiled backends against the pipeline's, and keep the context, to
        publish circuit events through it."""
        self.health.check_named([("backends", name) for name in self.options.backends],
                                context)
        self.health.router = context.component
        self.health.context = context

    @hookimpl
    def aieng_on_event(self, event: Event) -> None:
        """Learn latencies and error rates from ``backend.call`` and ``error`` events."""
        self.health.observe(event)

    def estimate(self, request: Request, backend: str, *,
                 prompt_tokens: int | None = None) -> Estimate:
        """The expected cost, latency and health of ``backend`` for ``request``.

        :param prompt_tokens: the request's prompt token estimate, when already known
            (:meth:`rank` estimates it once for every candidate).
        """
        options = self.options
        budget = _override(request, "latency_budget_s", options.latency_budget_s, (int, float),
                           lambda s: math.isfinite(s) and s > 0)
        floor = _override(request, "min_quality", options.min_quality, int, lambda q: q >= 0)
        stats = self.health.stats.get(backend)
        profile: BackendProfile | None = options.backends.get(backend)
        latency = stats.latency_s if stats is not None and stats.latency_s is not None \
            else (profile.latency_s if profile is not None else None)
        error_rate = stats.error_rate if stats is not None else 0.0
        if profile is None:
            cost, quality = math.inf, -1
        else:
            prompt = (estimate_tokens(request, options.chars_per_token)
                      if prompt_tokens is None else prompt_tokens)
            # The client's max_tokens may be any int: past _MOST_TOKENS (more than any model
            # generates) it counts as that, so the estimate stays a float (no OverflowError).
            completion: float = min(request.max_tokens, _MOST_TOKENS)
            if stats is not None and stats.completion_tokens is not None:
                completion = min(stats.completion_tokens, request.max_tokens)
            cost = (profile.price_in * prompt + profile.price_out * completion) / 1000.0
            quality = profile.quality
        fits = quality >= floor and (budget is None or latency is None or latency <= budget)
        return Estimate(backend, cost, latency, quality, error_rate, fits,
                        error_rate <= options.max_error_rate)

    def rank(self, request: Request, candidates: Sequence[str]) -> list[Estimate]:
        """The candidates in routing order (before circuit breakers)."""
        # one pass over the messages (a long chat history) for all the candidates
        tokens = estimate_tokens(request, self.options.chars_per_token)
        estimates = [self.estimate(request, name, prompt_tokens=tokens)
                     for name in dict.fromkeys(candidates)]
        position = {e.backend: i for i, e in enumerate(estimates)}

        def key(e: Estimate) -> tuple[Any, ...]:
            slow = math.inf if e.latency_s is None else e.latency_s
            if e.healthy and e.fits:
                return (0, e.cost, slow, position[e.backend])
            if e.healthy:
                return (1, slow, e.cost, position[e.backend])
            return (2, e.error_rate, slow, position[e.backend])

        return sorted(estimates, key=key)

    @hookimpl
    def aieng_route(self, request: Request, candidates: Sequence[str]) -> Route | None:
        """The cheapest healthy backend within budget; the rest, ordered, as fallbacks."""
        if not candidates:
            return None
        self.health.fail_fast(candidates)
        ranked = self.rank(request, candidates)
        best = ranked[0]
        if best.healthy and best.fits:
            reason = f"cheapest healthy within budget (expected cost {best.cost:.6g})"
        elif best.healthy:
            reason = "no backend fits the budget and quality: fastest healthy"
        else:
            reason = "no healthy backend: lowest error rate"
        return self.health.route([e.backend for e in ranked], candidates, reason=reason)
