"""The three routers' choices, their options' errors, and the properties every route
keeps: target and fallbacks among the candidates, never repeated."""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from aieng_hookspecs.types import (
    ErrorEvent,
    Message,
    ModelCall,
    Request,
    Route,
    ToolSpec,
    Usage,
)
from aieng_router import (
    BackendProfile,
    BreakerOptions,
    CircuitChanged,
    CircuitOpenError,
    CostOptions,
    CostRouter,
    IntentOptions,
    IntentRouter,
    Rule,
    RuleOptions,
    RuleRouter,
    knn_vote,
    read_examples,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from router_testing import FakeClock

from aieng_core.testing import HashEmbedder
from aieng_core.testing import strategies as aist

EXAMPLES = {
    "billing": ("refund my order please", "I was charged twice on my card",
                "my invoice amount is wrong"),
    "tech": ("the app crashes on start", "cannot connect to the server",
             "error when I save the page"),
}


def ask(text: str, **kwargs: object) -> Request:
    """A one-message request."""
    return Request(messages=(Message("user", text),), **kwargs)  # type: ignore[arg-type]


def intent_router(**options: object) -> IntentRouter:
    """An intent router over the hashing embedder."""
    values: dict[str, object] = {"routes": {"billing": "a", "tech": "b"},
                                 "examples": EXAMPLES, "k": 3}
    values.update(options)
    return IntentRouter(IntentOptions(**values), embedder=HashEmbedder(1024).aieng_embed)  # type: ignore[arg-type]


# -- intent ------------------------------------------------------------------------------


def test_knn_vote_sums_similarities_of_the_k_nearest() -> None:
    """Two weaker neighbours of one label outvote one stronger of another."""
    ranked = knn_vote([0.9, 0.6, 0.55, 0.1], ["x", "y", "y", "x"], 3)
    assert [label for label, _, _ in ranked] == ["y", "x"]
    assert ranked[0][1] == pytest.approx(1.15) and ranked[0][2] == 0.6
    assert ranked[1][2] == 0.9


@pytest.mark.anyio
async def test_intent_routes_to_the_backend_of_the_nearest_examples() -> None:
    """A billing question goes to ``a`` with ``b`` as fallback; a tech one the reverse."""
    router = intent_router()
    billing = await router.aieng_route(ask("I want a refund for my order"), ["a", "b"])
    assert billing is not None and billing.target == "a" and billing.fallbacks == ("b",)
    assert billing.reason == "intent:billing" and billing.score is not None
    tech = await router.aieng_route(ask("the app crashes when I connect"), ["a", "b"])
    assert tech is not None and (tech.target, tech.fallbacks) == ("b", ("a",))


@pytest.mark.anyio
async def test_intent_below_min_similarity_takes_the_default() -> None:
    """Words no example shares give similarity 0: the default, or None without one."""
    router = intent_router(min_similarity=0.2, default="c")
    found = await router.aieng_route(ask("zebra quantum xylophone"), ["a", "b", "c"])
    assert found is not None and found.target == "c" and found.reason.startswith("intent: none")
    assert await intent_router(min_similarity=0.2).aieng_route(
        ask("zebra quantum xylophone"), ["a", "b"]) is None


@pytest.mark.anyio
async def test_intent_skips_a_backend_that_is_no_candidate() -> None:
    """When the winning intent's backend is not in the pipeline the next one serves."""
    found = await intent_router().aieng_route(ask("refund my order"), ["b"])
    assert found is not None and found.target == "b" and found.fallbacks == ()


@pytest.mark.anyio
async def test_examples_embedded_once() -> None:
    """The examples are embedded on the first route only; each route embeds its text."""
    embedder = HashEmbedder()
    router = IntentRouter(IntentOptions(routes={"billing": "a", "tech": "b"},
                                        examples=EXAMPLES), embedder=embedder.aieng_embed)
    for _ in range(3):
        await router.aieng_route(ask("refund"), ["a", "b"])
    assert embedder.calls == 1 + 3


@pytest.mark.anyio
async def test_examples_file(tmp_path: Path) -> None:
    """A JSONL file adds examples; a broken line fails naming file and line."""
    path = tmp_path / "ex.jsonl"
    path.write_text(json.dumps({"text": "the printer is jammed", "label": "tech"}) + "\n\n"
                    + json.dumps({"text": "refund please", "label": "billing"}) + "\n")
    router = IntentRouter(IntentOptions(routes={"billing": "a", "tech": "b"},
                                        examples_file=str(path)),
                          embedder=HashEmbedder().aieng_embed)
    found = await router.aieng_route(ask("my printer is jammed again"), ["a", "b"])
    assert found is not None and found.target == "b"
    assert read_examples(path) == {"tech": ["the printer is jammed"],
                                   "billing": ["refund please"]}
    path.write_text('{"text": "x", "label": "tech"}\n{"text": 3}\n')
    with pytest.raises(ValueError, match=r"ex.jsonl:2: expected"):
        read_examples(path)
    path.write_text('{"text": "x", "label": "sales"}\n')
    bad = IntentRouter(IntentOptions(routes={"billing": "a", "tech": "b"},
                                     examples={"billing": ("refund",), "tech": ("crash",)},
                                     examples_file=str(path)),
                       embedder=HashEmbedder().aieng_embed)
    with pytest.raises(ValueError, match="'sales' has no entry in routes"):
        await bad.prepare()


def test_examples_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    """A file saved with a UTF-8 byte-order mark (Windows editors write one) reads like one
    without: the mark is not a JSON error on line 1."""
    path = tmp_path / "ex.jsonl"
    path.write_text("\ufeff" + json.dumps({"text": "refund please", "label": "billing"})
                    + "\n", encoding="utf-8")
    assert read_examples(path) == {"billing": ["refund please"]}


@pytest.mark.parametrize(("options", "message"), [
    ({"routes": {}}, "non-empty"),
    ({"routes": {"billing": "a"}, "examples": {"billing": ("x",), "tech": ("y",)}},
     "'tech' has no entry in routes"),
    ({"routes": {"billing": "a", "tech": "b"}, "examples": {"billing": ("x",)}},
     "route 'tech' has no examples"),
    ({"routes": {"billing": "a"}, "examples": {"billing": ("x",)}, "k": 0}, "k must be"),
])
def test_intent_options_errors(options: dict[str, object], message: str) -> None:
    """Unrouted labels, routes without examples and bad k are refused, naming them."""
    with pytest.raises((TypeError, ValueError), match=message):
        IntentOptions(**options)  # type: ignore[arg-type]


# -- rules -------------------------------------------------------------------------------


RULES = RuleOptions(rules=(
    Rule(name="refunds", target="billing", pattern=r"\brefund", fallbacks=("general",)),
    Rule(name="long", target="large", min_tokens=50),
    Rule(name="vip", target="large", metadata={"tier": "vip"}),
    Rule(name="tools", target="tooling", tools=True),
    Rule(name="json", target="structured", response_schema=True, max_chars=100),
), default="general")


@pytest.mark.parametrize(("request_", "target"), [
    (ask("I want a REFUND now"), "billing"),
    (ask("x" * 400), "large"),
    (ask("hello", metadata={"tier": "vip"}), "large"),
    (ask("hello", metadata={"tier": "free"}), "general"),
    (ask("weather?", tools=(ToolSpec(name="weather", description="w"),)), "tooling"),
    (ask("give json", response_schema={"type": "object"}), "structured"),
    (ask("x" * 101, response_schema={"type": "object"}), "general"),
    (ask("hi"), "general"),
])
def test_rules_in_order(request_: Request, target: str) -> None:
    """The first rule whose conditions all hold decides; otherwise the default."""
    candidates = ["billing", "general", "large", "tooling", "structured"]
    found = RuleRouter(RULES).aieng_route(request_, candidates)
    assert found is not None and found.target == target


def test_rule_with_unavailable_targets_passes_to_the_next() -> None:
    """A matching rule whose backends are not candidates gives way to later rules."""
    found = RuleRouter(RULES).aieng_route(ask("refund " + "y" * 300), ["large"])
    assert found is not None and found.target == "large" and found.reason == "rule:long"


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_a_pattern_matches_either_unicode_form(form: str) -> None:
    """A rule's accented word matches the prompt whether the client composed its accents
    (NFC, as most keyboards do) or decomposed them (NFD: macOS file names and
    clipboards), with either form in the rule, and case-insensitively."""
    import unicodedata

    prompt = unicodedata.normalize(form, "Où est mon REMBOURSEMENT, Café Zürich ?")
    for rule_form in ("NFC", "NFD"):
        pattern = unicodedata.normalize(rule_form, r"\bremboursement\b.*café zürich")
        router = RuleRouter(RuleOptions(rules=(Rule(target="fr", pattern=pattern),),
                                        default="general"))
        found = router.aieng_route(ask(prompt), ["fr", "general"])
        assert found is not None and found.target == "fr", (form, rule_form)
    sized = RuleRouter(RuleOptions(rules=(Rule(target="short", max_chars=4),)))
    assert sized.aieng_route(ask(unicodedata.normalize(form, "café")), ["short"]) is not None


def test_bad_pattern_is_refused() -> None:
    """A rule with an invalid regular expression fails when the options are built."""
    with pytest.raises(ValueError, match="not a valid regular expression"):
        Rule(target="a", pattern="(unclosed")


@pytest.mark.parametrize("unit", ["chars", "tokens"])
def test_a_rule_that_could_never_match_is_refused(unit: str) -> None:
    """A minimum over its maximum makes a rule that never matches: refused at load, not
    a route silently never taken; equal bounds are a valid exact length."""
    with pytest.raises(ValueError, match=f"min_{unit} \\(9\\) is over max_{unit} \\(3\\)"):
        Rule(target="a", **{f"min_{unit}": 9, f"max_{unit}": 3})  # type: ignore[arg-type]
    assert Rule(target="a", **{f"min_{unit}": 3, f"max_{unit}": 3})  # type: ignore[arg-type]


# -- cost --------------------------------------------------------------------------------


def cost_router(clock: FakeClock | None = None, **options: object) -> CostRouter:
    """Three priced backends: ``cheap`` (slow), ``mid``, ``dear`` (fast, best)."""
    values: dict[str, object] = {
        "backends": {"cheap": BackendProfile(price_in=0.1, price_out=0.1, latency_s=3.0),
                     "mid": BackendProfile(price_in=1.0, price_out=1.0, latency_s=0.8,
                                           quality=1),
                     "dear": BackendProfile(price_in=10.0, price_out=10.0, latency_s=0.2,
                                            quality=2)},
        "latency_budget_s": 1.0, "breaker": BreakerOptions(failures=2, cooldown_s=10)}
    values.update(options)
    return CostRouter(CostOptions(**values), clock=clock or FakeClock())  # type: ignore[arg-type]


def call(backend: str, seconds: float, run_id: str = "") -> ModelCall:
    """A ``backend.call`` event of ``backend`` taking ``seconds``."""
    return ModelCall(component=backend, messages=(Message("user", "q"),), duration_s=seconds,
                     usage=Usage(prompt_tokens=1, completion_tokens=20), run_id=run_id)


def error(backend: str, run_id: str = "", kind: str = "RuntimeError") -> ErrorEvent:
    """An ``error`` event of ``backend``'s ``aieng_generate``."""
    return ErrorEvent(stage="generate", hook="aieng_generate", plugin=backend,
                      error_type=kind, message="boom", policy="fallback", run_id=run_id)


def test_cheapest_within_budget_rest_as_fallbacks() -> None:
    """``cheap`` is too slow for 1 s: ``mid`` wins, ``dear`` next, ``cheap`` last."""
    found = cost_router().aieng_route(ask("hello"), ["cheap", "mid", "dear", "other"])
    assert found is not None
    assert (found.target, found.fallbacks) == ("mid", ("dear", "cheap", "other"))
    assert found.reason.startswith("cheapest healthy within budget")


def test_budget_and_quality_from_request_metadata() -> None:
    """A request's metadata overrides the budget and the quality floor."""
    router = cost_router()
    relaxed = router.aieng_route(ask("hi", metadata={"latency_budget_s": 5}), ["cheap", "mid"])
    assert relaxed is not None and relaxed.target == "cheap"
    picky = router.aieng_route(ask("hi", metadata={"min_quality": 2}), ["cheap", "mid", "dear"])
    assert picky is not None and picky.target == "dear"


@pytest.mark.parametrize("budget", [float("nan"), float("inf"), 0, -1.0])
def test_a_request_budget_the_options_refuse_is_ignored(budget: float) -> None:
    """A request's budget the options would refuse (NaN, infinite, zero, negative) is
    ignored, as one of the wrong type is: the configured 1 s budget still decides (with
    it nothing fitted and the route fell back to the fastest backend)."""
    found = cost_router().aieng_route(ask("hi", metadata={"latency_budget_s": budget}),
                                      ["cheap", "mid", "dear"])
    assert found is not None and found.target == "mid"
    assert found.reason.startswith("cheapest healthy within budget")


def test_observed_latency_replaces_the_prior() -> None:
    """Once ``mid`` is observed slow (EWMA above budget), ``dear`` takes over."""
    router = cost_router(alpha=1.0)
    router.aieng_on_event(call("mid", 2.0))
    found = router.aieng_route(ask("hello"), ["cheap", "mid", "dear"])
    assert found is not None and found.target == "dear"
    assert router.health.stats["mid"].latency_s == 2.0


def test_unhealthy_backend_goes_last_and_open_one_is_left_out() -> None:
    """One failure makes ``mid`` unhealthy (error EWMA 1 > 0.5): it follows the healthy
    ones; a second opens its circuit, an event is published, and it leaves the route."""
    clock = FakeClock()
    router = cost_router(clock)
    seen: list[CircuitChanged] = []
    router.health.listeners.append(seen.append)
    router.aieng_on_event(error("mid"))
    found = router.aieng_route(ask("hello"), ["cheap", "mid", "dear"])
    assert found is not None and (found.target, found.fallbacks) == ("dear", ("cheap", "mid"))
    router.aieng_on_event(error("mid", kind="TimeoutError"))
    assert [(e.backend, e.after) for e in seen] == [("mid", "open")]
    found = router.aieng_route(ask("hello"), ["cheap", "mid", "dear"])
    assert found is not None and "mid" not in (found.target, *found.fallbacks)
    assert "circuit open: mid" in found.reason
    clock.advance(10)
    trial = router.aieng_route(ask("hello"), ["cheap", "mid", "dear"])
    assert trial is not None and "mid" in trial.fallbacks
    assert [e.after for e in seen] == ["open", "half_open"]
    router.aieng_on_event(call("mid", 0.5))
    assert [e.after for e in seen] == ["open", "half_open", "closed"]


def test_every_circuit_open_is_no_opinion() -> None:
    """With every candidate's circuit open the router has no opinion."""
    router = cost_router(breaker=BreakerOptions(failures=1))
    for name in ("cheap", "mid"):
        router.aieng_on_event(error(name))
    assert router.aieng_route(ask("hello"), ["cheap", "mid"]) is None


async def route(router: CostRouter | RuleRouter | IntentRouter, text: str,
                candidates: list[str]) -> Route | None:
    """Ask any of the three routers (the intent router's route is async)."""
    found = router.aieng_route(ask(text), candidates)
    return await found if inspect.isawaitable(found) else found  # type: ignore[no-any-return]


@pytest.mark.anyio
async def test_fail_fast_when_every_circuit_is_open() -> None:
    """With ``breaker.fail_fast`` each router raises CircuitOpenError once every candidate's
    circuit is open, naming them and the first to allow a trial; none is handed a trial.
    Once a cool-down passes, the trial is routed as usual; by default, no opinion."""
    clock = FakeClock()
    breaker = BreakerOptions(failures=1, cooldown_s=10, fail_fast=True)
    routers = [cost_router(clock, breaker=breaker),
               RuleRouter(RuleOptions(rules=(Rule(target="mid", pattern="hello"),),
                                      breaker=breaker), clock=clock),
               IntentRouter(IntentOptions(routes={"billing": "cheap", "tech": "mid"},
                                          examples=EXAMPLES, k=3, breaker=breaker),
                            embedder=HashEmbedder(1024).aieng_embed, clock=clock)]
    for router in routers:
        router.aieng_on_event(error("mid"))
        clock.advance(4)
        router.aieng_on_event(error("cheap"))
        for text in ("hello", "no rule matches this"):
            with pytest.raises(CircuitOpenError) as raised:
                await route(router, text, ["cheap", "mid"])
            assert raised.value.waits == pytest.approx({"cheap": 10.0, "mid": 6.0})
            assert (raised.value.first, raised.value.retry_after_s) == ("mid", 6.0)
            assert "'mid', allows a trial call in 6 s" in str(raised.value)
            assert "(cheap, mid)" in str(raised.value)
        assert [b.state for b in router.health.breakers.values()] == ["open", "open"]
        clock.advance(6)
        trial = await route(router, "hello, the app crashes", ["cheap", "mid"])
        assert trial is not None and trial.target == "mid"
        clock.advance(10)
    for router in routers:  # a closed candidate outside the route: no error, as before
        router.health.breakers.clear()
        router.aieng_on_event(error("mid"))
        await route(router, "hello", ["mid", "dear"])
    plain = cost_router(clock, breaker=BreakerOptions(failures=1))
    for name in ("cheap", "mid"):
        plain.aieng_on_event(error(name))
    assert plain.aieng_route(ask("hello"), ["cheap", "mid"]) is None


def test_expected_cost_uses_prompt_and_completion_tokens() -> None:
    """Cost = (price_in × prompt tokens + price_out × completion tokens) / 1000, with the
    observed completion average capped by ``max_tokens``."""
    router = cost_router(alpha=1.0)
    request = ask("x" * 400, max_tokens=100)  # 100 prompt tokens at 4 chars per token
    assert router.estimate(request, "mid").cost == pytest.approx((100 + 100) / 1000)
    router.aieng_on_event(call("mid", 0.5))  # 20 completion tokens observed
    assert router.estimate(request, "mid").cost == pytest.approx((100 + 20) / 1000)
    assert router.estimate(request, "unknown").cost == float("inf")


@pytest.mark.parametrize(("backends", "message"), [
    ({"small": {"price_in": 0.1}}, "small"),  # a plain table, not a BackendProfile
    ({"": BackendProfile()}, "backends"),
    ({3: BackendProfile()}, "backends"),
    ([("small", BackendProfile())], "backends"),
])
def test_cost_backends_are_checked_when_built(backends: object, message: str) -> None:
    """A profile that is no :class:`BackendProfile`, or a backend name that is no
    non-empty string, fails when the options are built, not with an AttributeError on
    every route."""
    with pytest.raises((TypeError, ValueError), match=message):
        CostOptions(backends=backends)  # type: ignore[arg-type]


# -- properties --------------------------------------------------------------------------

_NAMES = st.lists(st.sampled_from(["a", "b", "c", "d", "cheap", "mid", "dear", "large",
                                   "general", "billing"]), unique=True, max_size=6)


def check(found: object, candidates: Sequence[str]) -> None:
    """The route is None or among the candidates, without repeats."""
    if found is None:
        return
    names = (found.target, *found.fallbacks)  # type: ignore[attr-defined]
    assert set(names) <= set(candidates) and len(set(names)) == len(names)


@settings(max_examples=60, deadline=None)
@given(request_=aist.requests(), candidates=_NAMES,
       failures=st.lists(st.sampled_from(["cheap", "mid", "dear", "a"]), max_size=6))
def test_cost_routes_stay_among_candidates(request_: Request, candidates: list[str],
                                           failures: list[str]) -> None:
    """Whatever the request, candidates and failures seen, the cost router's route is
    among the candidates and never repeats a backend."""
    router = cost_router(breaker=BreakerOptions(failures=1))
    for name in failures:
        router.aieng_on_event(error(name))
    check(router.aieng_route(request_, candidates), candidates)


@settings(max_examples=60, deadline=None)
@given(request_=aist.requests(), candidates=_NAMES)
def test_rule_routes_stay_among_candidates(request_: Request, candidates: list[str]) -> None:
    """The rule router's route is among the candidates and never repeats a backend."""
    check(RuleRouter(RULES).aieng_route(request_, candidates), candidates)


@pytest.mark.anyio
@settings(max_examples=40, deadline=None)
@given(request_=aist.requests(), candidates=_NAMES)
async def test_intent_routes_stay_among_candidates(request_: Request,
                                                   candidates: list[str]) -> None:
    """The intent router's route is among the candidates and never repeats a backend."""
    router = intent_router(default="a", fallbacks=("b", "a", "c"))
    check(await router.aieng_route(request_, candidates), candidates)
