"""The routers in a host program: on trio as on asyncio, over backends the host built; an
embedder that returns NaN (a broken model) said, not hidden; errors that pickle."""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import pytest
import structlog
from aieng_hookspecs.types import ErrorEvent, Message, Request
from aieng_router import (
    BackendProfile,
    BreakerOptions,
    CircuitChanged,
    CircuitOpenError,
    CostOptions,
    CostRouter,
    IntentOptions,
    IntentRouter,
    RuleOptions,
    RuleRouter,
)
from router_testing import FakeClock

from aieng_core import Kernel
from aieng_core.testing import EventCapture, HashEmbedder, ScriptedBackend, settle

pytestmark = pytest.mark.anyio

EXAMPLES = {"billing": ("refund my order please", "I was charged twice on my card"),
            "tech": ("the app crashes on start", "cannot connect to the server")}


def ask(text: str) -> Request:
    return Request(messages=(Message("user", text),))


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_fallback_and_circuit_over_host_built_backends(
        aieng_kernel: Kernel, captured_events: EventCapture) -> None:
    """Backends the host built and handed to ``compose``: on either anyio backend the
    rule router's target that raises falls back to the next, one that outlasts the stage
    timeout is cancelled, and the cost router's circuit opens from the pipeline's events."""
    down = ScriptedBackend(fail_with=RuntimeError("backend down"))
    late = ScriptedBackend(["late"], delay=5.0)
    rules = aieng_kernel.compose(
        {"router": RuleRouter(RuleOptions(default="down", fallbacks=("late", "up"))),
         "down": down, "late": late, "up": ScriptedBackend(["from up"])},
        stage={"generate": {"on_error": "fallback", "timeout": 0.2}})
    result = await rules.run("Where is my order?")
    assert (result.status, result.answer) == ("ok", "from up")
    errors = [(e.plugin, e.error_type) for e in captured_events.of(ErrorEvent)]
    assert errors == [("down", "RuntimeError"), ("late", "TimeoutError")]

    clock = FakeClock()
    cost = CostRouter(CostOptions(
        backends={"down": BackendProfile(price_in=0.1), "up": BackendProfile(price_in=5)},
        max_error_rate=1.0, breaker=BreakerOptions(failures=2, cooldown_s=30)), clock=clock)
    cheap = aieng_kernel.compose({"router": cost, "down": down,
                                  "up": ScriptedBackend(["from up"])},
                                 stage={"generate": {"on_error": "fallback"}})
    for _ in range(2):
        assert (await cheap.run("hello")).answer == "from up"
    await settle(lambda: cost.health.breaker("down").state == "open")
    opened = captured_events.of(CircuitChanged)
    assert [(c.backend, c.after) for c in opened] == [("down", "open")]
    calls = len(down.requests)
    assert (await cheap.run("hello")).answer == "from up"
    assert len(down.requests) == calls  # skipped while open


class _NaNEmbedder:
    """Hashing embeddings, but NaN for every text containing ``nan``."""

    def __init__(self) -> None:
        self.inner = HashEmbedder(256)

    def __call__(self, texts: Sequence[str], model: str | None) -> list[list[float]]:
        vectors = self.inner.aieng_embed(texts, model)
        assert vectors is not None
        return [[float("nan")] * len(v) if "nan" in t else list(v)
                for t, v in zip(texts, vectors, strict=True)]


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_nan_query_embedding_is_warned_and_named_in_the_route() -> None:
    """A request whose embedding is NaN goes to ``default`` with a reason that says so,
    and a warning each time: not the "no intent above min_similarity" of a real miss."""
    router = IntentRouter(IntentOptions(routes={"billing": "a", "tech": "b"},
                                        examples=EXAMPLES, default="c", k=2),
                          embedder=_NaNEmbedder())  # type: ignore[arg-type]
    with structlog.testing.capture_logs() as logs:
        found = await router.aieng_route(ask("nan refund my order"), ["a", "b", "c"])
        normal = await router.aieng_route(ask("refund my order"), ["a", "b", "c"])
    assert found is not None and found.target == "c"
    assert found.reason == "intent: the request's embedding is not finite"
    assert normal is not None and normal.target == "a"
    warned = [entry for entry in logs if entry["event"] == "router.intent_embedding_not_finite"]
    assert len(warned) == 1 and "default" in warned[0]["hint"]


async def test_nan_example_embeddings_fail_at_prepare() -> None:
    """Examples the embedder returns NaN for would never match: preparing the router
    raises a ``ValueError`` counting them, instead of routing around them silently."""
    examples = {**EXAMPLES, "broken": ("nan one", "nan two", "fine three")}
    router = IntentRouter(IntentOptions(routes={"billing": "a", "tech": "b", "broken": "c"},
                                        examples=examples),
                          embedder=_NaNEmbedder())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN or infinite values for 2 of 7 examples"):
        await router.prepare()


def test_a_circuit_open_error_survives_pickling() -> None:
    """A host that runs pipelines in worker processes gets the fail-fast error back whole
    (router, waits, retry-after, message), not an unpickling ``TypeError``."""
    error = CircuitOpenError("router", {"a": 3.0, "b": 1.5})
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, CircuitOpenError) and str(copy) == str(error)
    assert (copy.router, copy.waits, copy.first, copy.retry_after) == \
        ("router", {"a": 3.0, "b": 1.5}, "b", 1.5)
