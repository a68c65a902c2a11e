"""The typed options of the ``intent-router``, ``rule-router`` and ``cost-router``
components (pipeline-file keys)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from aieng_hookspecs import listed
from attrs import validators as v

__all__ = [
    "BackendProfile",
    "BreakerOptions",
    "CostOptions",
    "IntentOptions",
    "Rule",
    "RuleOptions",
]

_name = v.and_(v.instance_of(str), v.min_len(1))
_opt_name = v.optional(_name)
_names = v.deep_iterable(_name)


def _int_at_least(low: int) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    """Validator: an ``int`` (not a ``bool``) of at least ``low``."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an integer, got {value!r}")
        if value < low:
            raise ValueError(f"{attribute.name} must be at least {low}, got {value}")

    return check


def _optional(check: Callable[[object, attrs.Attribute[Any], Any], None]
              ) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def optional(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            check(instance, attribute, value)

    return optional


def _number_in(low: float, high: float, *, open_low: bool = False
               ) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    """Validator: a finite number (not a ``bool``) in ``[low, high]`` (``(low, high]``)."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{attribute.name} must be a number, got {value!r}")
        below = value <= low if open_low else value < low
        if not math.isfinite(value) or below or value > high:
            bracket = "(" if open_low else "["
            raise ValueError(f"{attribute.name} must be a number in {bracket}{low:g}, "
                             f"{high:g}], got {value!r}")

    return check


_positive = _number_in(0.0, math.inf, open_low=True)
_non_negative = _number_in(0.0, math.inf)


@attrs.frozen(kw_only=True)
class BreakerOptions:
    """The circuit breaker every router keeps per backend (``breaker = {...}``).

    A backend's circuit opens after ``failures`` consecutive failed calls, or, when
    ``failure_rate`` is set, when at least that share of its last ``window`` calls failed
    (judged once ``window`` calls were seen). An open backend is left out of routes; after
    ``cooldown_s`` it turns half-open and one route may include it as a trial: a success
    closes the circuit, a failure opens it again. A trial that reports nothing within
    ``cooldown_s`` (it sat as an unused fallback) is handed out again.

    :param failures: consecutive failures that open the circuit; ``0`` disables this rule.
    :param failure_rate: share of failures over the window that opens it; ``None``: off.
    :param window: the calls the failure rate is judged over.
    :param cooldown_s: seconds an open circuit waits before a trial.
    :param fail_fast: when every candidate's circuit is open, the route fails at once with
        a :class:`~aieng_router.CircuitOpenError` (naming the open backends and when the
        first allows a trial) instead of leaving the kernel to try them all anyway.
    """

    failures: int = attrs.field(default=5, validator=_int_at_least(0))
    failure_rate: float | None = attrs.field(
        default=None, validator=_optional(_number_in(0.0, 1.0, open_low=True)))
    window: int = attrs.field(default=20, validator=_int_at_least(1))
    cooldown_s: float = attrs.field(default=30.0, validator=_positive)
    fail_fast: bool = attrs.field(default=False, validator=v.instance_of(bool))


def _valid_regex(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string, got {value!r}")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{attribute.name} {value!r} is not a valid regular expression: "
                         f"{exc}") from None


@attrs.frozen(kw_only=True)
class Rule:
    """One rule of the ``rule-router``: every condition given must hold (AND).

    :param target: the backend the rule routes to.
    :param fallbacks: backends to try next, in order.
    :param name: a label for the route's reason (default ``rule-N``).
    :param pattern: a regular expression searched in the last user message.
    :param ignore_case: match ``pattern`` case-insensitively.
    :param min_chars: the last user message has at least this many characters.
    :param max_chars: at most this many characters.
    :param min_tokens: the token estimate of all messages is at least this.
    :param max_tokens: at most this.
    :param metadata: every key equals this value in ``request.metadata``.
    :param tools: the request offers tools (``true``) or none (``false``).
    :param response_schema: the request has a response schema (``true``) or not.
    """

    target: str = attrs.field(validator=_name)
    fallbacks: tuple[str, ...] = attrs.field(default=(), converter=listed, validator=_names)
    name: str = attrs.field(default="", validator=v.instance_of(str))
    pattern: str | None = attrs.field(default=None, validator=_valid_regex)
    ignore_case: bool = attrs.field(default=True, validator=v.instance_of(bool))
    min_chars: int | None = attrs.field(default=None, validator=_optional(_int_at_least(0)))
    max_chars: int | None = attrs.field(default=None, validator=_optional(_int_at_least(0)))
    min_tokens: int | None = attrs.field(default=None, validator=_optional(_int_at_least(0)))
    max_tokens: int | None = attrs.field(default=None, validator=_optional(_int_at_least(0)))
    metadata: dict[str, Any] = attrs.field(factory=dict, hash=False,
                                           validator=v.instance_of(dict))
    tools: bool | None = attrs.field(default=None, validator=v.optional(v.instance_of(bool)))
    response_schema: bool | None = attrs.field(default=None,
                                               validator=v.optional(v.instance_of(bool)))

    def __attrs_post_init__(self) -> None:
        for unit in ("chars", "tokens"):
            low, high = getattr(self, f"min_{unit}"), getattr(self, f"max_{unit}")
            if low is not None and high is not None and low > high:
                raise ValueError(f"min_{unit} ({low}) is over max_{unit} ({high}): the rule "
                                 f"for {self.target!r} could never match")


@attrs.frozen(kw_only=True)
class RuleOptions:
    """Options of the ``rule-router``.

    :param rules: the rules, tried in order; the first that matches decides.
    :param default: the backend when no rule matches (``None``: no opinion).
    :param fallbacks: the default route's fallbacks.
    :param chars_per_token: characters per token of the token estimate.
    :param breaker: the per-backend circuit breaker.
    """

    rules: tuple[Rule, ...] = attrs.field(default=(), converter=listed,
                                          validator=v.deep_iterable(v.instance_of(Rule)))
    default: str | None = attrs.field(default=None, validator=_opt_name)
    fallbacks: tuple[str, ...] = attrs.field(default=(), converter=listed, validator=_names)
    chars_per_token: float = attrs.field(default=4.0, validator=_positive)
    breaker: BreakerOptions = attrs.field(factory=BreakerOptions,
                                          validator=v.instance_of(BreakerOptions))


def _example_lists(value: Any) -> Any:
    """Lists of texts become tuples; anything else is left for the validator to refuse
    (typed as ``Any`` so that the options loader does not split a string into letters)."""
    if not isinstance(value, Mapping):
        return value
    return {label: tuple(texts) if isinstance(texts, (list, tuple)) else texts
            for label, texts in value.items()}


def _examples(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(f"{attribute.name} must be a table of label = [texts], got {value!r}")
    for label, texts in value.items():
        if not isinstance(label, str) or not label:
            raise ValueError(f"{attribute.name}: labels must be non-empty strings, got {label!r}")
        if not isinstance(texts, tuple) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"{attribute.name}.{label} must be a list of strings, got "
                            f"{texts!r}")


@attrs.frozen(kw_only=True)
class IntentOptions:
    """Options of the ``intent-router``.

    :param routes: which backend serves each intent label (``billing = "backend_a"``).
    :param examples: labelled example requests (``billing = ["refund my order", ...]``).
    :param examples_file: a JSONL file of ``{"text": ..., "label": ...}`` lines, read when
        the pipeline opens (added to ``examples``).
    :param k: neighbours that vote (weighted by cosine similarity).
    :param min_similarity: below this cosine for the best neighbour of the winning label,
        the router routes to ``default`` (``None`` there: no opinion).
    :param default: the backend for requests matching no intent well enough.
    :param fallbacks: backends tried after the ranked intents' backends.
    :param model: the embedding model asked for (``None``: the embedder's default).
    :param embed_batch: examples embedded per embedding call when the pipeline opens
        (embedding servers cap the texts of one request; each call gets the embed
        stage's timeout).
    :param breaker: the per-backend circuit breaker.
    """

    routes: dict[str, str] = attrs.field(hash=False)
    examples: dict[str, Any] = attrs.field(factory=dict, hash=False,
                                           converter=_example_lists, validator=_examples)
    examples_file: str | None = attrs.field(default=None, validator=_opt_name)
    k: int = attrs.field(default=5, validator=_int_at_least(1))
    min_similarity: float = attrs.field(default=0.3, validator=_number_in(-1.0, 1.0))
    default: str | None = attrs.field(default=None, validator=_opt_name)
    fallbacks: tuple[str, ...] = attrs.field(default=(), converter=listed, validator=_names)
    model: str | None = attrs.field(default=None, validator=_opt_name)
    embed_batch: int = attrs.field(default=64, validator=_int_at_least(1))
    breaker: BreakerOptions = attrs.field(factory=BreakerOptions,
                                          validator=v.instance_of(BreakerOptions))

    @routes.validator
    def _routes(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, Mapping) or not value:
            raise ValueError("routes must be a non-empty table of label = backend")
        for label, backend in value.items():
            if not isinstance(backend, str) or not backend:
                raise ValueError(f"routes.{label} must name a backend, got {backend!r}")
        unrouted = sorted(set(self.examples) - set(value))
        if unrouted:
            raise ValueError(f"examples label {unrouted[0]!r} has no entry in routes "
                             f"(routes: {', '.join(sorted(value))})")
        if self.examples_file is None:
            empty = sorted(label for label in value if not self.examples.get(label))
            if empty:
                raise ValueError(f"route {empty[0]!r} has no examples: give examples."
                                 f"{empty[0]} or an examples_file")


@attrs.frozen(kw_only=True)
class BackendProfile:
    """What the ``cost-router`` knows of one backend before observing it.

    :param price_in: price per 1,000 prompt tokens.
    :param price_out: price per 1,000 completion tokens.
    :param quality: a quality tier (higher is better), compared with ``min_quality``.
    :param latency_s: the expected latency until calls are observed (``None``: unknown,
        assumed to fit the budget).
    """

    price_in: float = attrs.field(default=0.0, validator=_non_negative)
    price_out: float = attrs.field(default=0.0, validator=_non_negative)
    quality: int = attrs.field(default=0, validator=_int_at_least(0))
    latency_s: float | None = attrs.field(default=None, validator=_optional(_non_negative))


def _profiles(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(f"{attribute.name} must be a table of name = profile, got {value!r}")
    for name, profile in value.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{attribute.name}: backend names must be non-empty strings, "
                             f"got {name!r}")
        if not isinstance(profile, BackendProfile):
            raise TypeError(f"{attribute.name}.{name} must be a BackendProfile, got "
                            f"{profile!r}")


@attrs.frozen(kw_only=True)
class CostOptions:
    """Options of the ``cost-router``.

    :param backends: a profile per backend name (candidates without one rank last).
    :param latency_budget_s: the expected latency a backend must fit (``None``: any);
        a request's ``metadata["latency_budget_s"]`` overrides it.
    :param min_quality: the lowest quality tier served first; a request's
        ``metadata["min_quality"]`` overrides it.
    :param alpha: the weight of the newest observation in the moving averages (EWMA).
    :param max_error_rate: a backend whose error-rate average exceeds this is unhealthy
        (tried only after the healthy ones).
    :param chars_per_token: characters per token of the prompt-token estimate.
    :param breaker: the per-backend circuit breaker.
    """

    backends: dict[str, BackendProfile] = attrs.field(factory=dict, hash=False,
                                                      validator=_profiles)
    latency_budget_s: float | None = attrs.field(default=None,
                                                 validator=_optional(_positive))
    min_quality: int = attrs.field(default=0, validator=_int_at_least(0))
    alpha: float = attrs.field(default=0.3, validator=_number_in(0.0, 1.0, open_low=True))
    max_error_rate: float = attrs.field(default=0.5, validator=_number_in(0.0, 1.0))
    chars_per_token: float = attrs.field(default=4.0, validator=_positive)
    breaker: BreakerOptions = attrs.field(factory=BreakerOptions,
                                          validator=v.instance_of(BreakerOptions))
