"""Routers on untrusted requests: text written to dodge a rule, a client's ``max_tokens``
of any size, a huge prompt."""

from __future__ import annotations

import pytest
from aieng_hookspecs.types import Message, Request
from aieng_router import BackendProfile, CostOptions, CostRouter, Rule, RuleOptions, RuleRouter
from hypothesis import given, settings
from hypothesis import strategies as st

SENSITIVE = RuleOptions(rules=(Rule(name="private", target="local",
                                    pattern=r"\b(password|patient)\b"),),
                        default="cloud")


def ask(text: str, **kwargs: object) -> Request:
    """A one-message request."""
    return Request(messages=(Message("user", text),), **kwargs)  # type: ignore[arg-type]


def target(router: RuleRouter, text: str) -> str | None:
    found = router.aieng_route(ask(text), ["local", "cloud"])
    return None if found is None else found.target


@pytest.mark.parametrize("text", [
    "my pass\u200bword is hunter2",          # zero-width space
    "my pass\u00adword is hunter2",          # soft hyphen
    "my pass\u2060word is hunter2",          # word joiner
    "my \u202epassword\u202c is hunter2",    # bidi override around the word
    "my \uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44 is hunter2",  # fullwidth letters
    "the \U0001d429\U0001d41a\U0001d42d\U0001d422\U0001d41e\U0001d427\U0001d42d record",  # bold
])
def test_invisible_and_compatibility_characters_do_not_dodge_a_rule(text: str) -> None:
    """A word hidden behind characters that are not shown (zero-width ones, the soft
    hyphen, bidi controls) or written in compatibility forms (fullwidth, mathematical
    bold: NFKC folds them) still matches the rule a user wrote to keep such requests on
    a local model."""
    assert target(RuleRouter(SENSITIVE), text) == "local"


def test_the_fold_only_widens_matching() -> None:
    """A pattern written with a compatibility or an invisible character still matches the
    text as typed; sizes are counted on the text as typed (NFC), invisible characters
    included."""
    options = RuleOptions(rules=(Rule(target="local", pattern="\uff41\u200bb"),),
                          default="cloud")
    assert target(RuleRouter(options), "x \uff41\u200bb y") == "local"
    sized = RuleRouter(RuleOptions(rules=(Rule(target="local", max_chars=3),),
                                   default="cloud"))
    assert target(sized, "a\u200bb") == "local"
    assert target(sized, "a\u200b\u200bb") == "cloud"


def test_a_plain_text_is_routed_as_before() -> None:
    """Text without such characters matches (or not) exactly as written."""
    router = RuleRouter(SENSITIVE)
    assert target(router, "reset my password") == "local"
    assert target(router, "passwords are hard") == "cloud"
    assert target(router, "hello") == "cloud"


def test_a_huge_prompt_is_routed() -> None:
    """A prompt of millions of characters (non-ASCII, so it is folded too) is matched in
    one linear pass each."""
    router = RuleRouter(SENSITIVE)
    text = "é\u200b" * 2_000_000
    assert target(router, text) == "cloud"
    assert target(router, text + "patient") == "local"


def cost_router() -> CostRouter:
    """``cheap`` and ``dear`` (integer prices, as a pipeline file gives them)."""
    return CostRouter(CostOptions(backends={
        "cheap": BackendProfile(price_in=1, price_out=2),
        "dear": BackendProfile(price_in=10, price_out=20, quality=1)}))


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.integers(1, 10**6), st.integers(10**300, 10**400)))
def test_any_max_tokens_routes_to_the_cheapest(max_tokens: int) -> None:
    """``max_tokens`` is the client's (the gateway bounds it below only): however large,
    the estimate stays a number and the cheapest backend is chosen, instead of an
    ``OverflowError`` failing the route stage."""
    found = cost_router().aieng_route(ask("hello", max_tokens=max_tokens), ["dear", "cheap"])
    assert found is not None and (found.target, found.fallbacks) == ("cheap", ("dear",))
    estimate = cost_router().estimate(ask("hello", max_tokens=max_tokens), "cheap")
    assert estimate.cost > 0 and estimate.cost != float("inf")
