"""Single flight (``[pipeline] single_flight = true``): identical concurrent requests behind a
cache make one generation; the others wait for it and answer from the cache."""

from __future__ import annotations

import math
import types
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, cast

import anyio
import pytest
import structlog
from aieng_hookspecs import ComponentRegistry, hookimpl
from aieng_hookspecs.types import Completion, Delta, GuardVerdict, Message, Request
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core import ConfigError, Kernel
from aieng_core.pipeline import Pipeline, PipelineConfig, RunResult
from aieng_core.pipeline._flight import Flights, flight_key
from aieng_core.registry import PluginInfo
from aieng_core.testing import HookRecorder, isolated_kernel, registered, settle
from aieng_core.testing.doubles import PromptCache

try:  # the real exact-match cache when its plugin is importable, else the kit's double
    from aieng_cache import ExactCache
except ImportError:  # pragma: no cover - the plugin is part of the repository
    ExactCache = None

pytestmark = pytest.mark.anyio

Register = Callable[..., AbstractContextManager[PluginInfo]]
WAITED = "pipeline.single_flight.waited"


def new_cache() -> object:
    return ExactCache() if ExactCache is not None else PromptCache()


class HeldBackend:
    """Backend double: answers ``answer: <prompt>`` once ``release`` is set, counting its
    calls (``calls``: started, ``prompts``: their prompts); the calls numbered in ``fail``
    raise instead of answering."""

    def __init__(self, *, fail: Sequence[int] = ()) -> None:
        self.calls = 0
        self.prompts: list[str] = []
        self.release = anyio.Event()
        self.fail = set(fail)

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion:
        self.calls += 1
        number = self.calls
        self.prompts.append(request.prompt)
        await self.release.wait()
        if number in self.fail:
            raise RuntimeError("backend down")
        return Completion(text=f"answer: {request.prompt}")


class Parts:
    """The components a test's pipelines use (one shared instance of each)."""

    def __init__(self) -> None:
        self.backend = HeldBackend()
        self.cache = new_cache()
        self.guard: object | None = None


def doubles_plugin(parts: Parts) -> types.ModuleType:
    plugin = types.ModuleType("single_flight_doubles")

    @hookimpl
    def aieng_register_components(registry: ComponentRegistry) -> None:
        registry.add("held-llm", lambda: parts.backend)
        registry.add("flight-cache", lambda: parts.cache)
        registry.add("flight-guard", lambda: parts.guard)

    plugin.aieng_register_components = aieng_register_components  # type: ignore[attr-defined]
    return plugin


@pytest.fixture
def parts(register_plugin: Register) -> Iterator[Parts]:
    made = Parts()
    with register_plugin(doubles_plugin(made), "single-flight-doubles"):
        yield made


def pipeline_dict(parts: Parts, **head: Any) -> dict[str, Any]:
    components: dict[str, Any] = {"cache": {"use": "flight-cache"}, "llm": {"use": "held-llm"}}
    if parts.guard is not None:
        components["guard"] = {"use": "flight-guard"}
    return {"pipeline": {"name": "sf", **head}, "components": components}


def build(kernel: Kernel, parts: Parts, **head: Any) -> Pipeline:
    head.setdefault("single_flight", True)
    return kernel.pipeline(pipeline_dict(parts, **head))


async def all_waiting(recorder: HookRecorder, arrived: int, backend: HeldBackend,
                      calls: int, flights: Flights | None = None) -> None:
    """Until ``arrived`` runs looked the cache up or wait for a leader (a follower waits
    before its lookup), ``calls`` generations started and every other task waits for
    something."""
    def waiting() -> int:
        return flights.waiting if flights is not None else 0

    await settle(lambda: len(recorder.calls("aieng_cache_lookup")) + waiting() >= arrived
                 and backend.calls >= calls)
    await anyio.wait_all_tasks_blocked()


async def run_all(pipeline: Pipeline, prompts: Sequence[str], recorder: HookRecorder,
                  backend: HeldBackend, *, generating: int,
                  **kwargs: Any) -> list[RunResult | BaseException]:
    """Run every prompt at once; release the backend once ``generating`` generations
    started and the rest wait."""
    results: list[RunResult | BaseException] = [RuntimeError("no result")] * len(prompts)

    async def one(index: int, prompt: str) -> None:
        try:
            results[index] = await pipeline.run(prompt, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a failed run is a result here
            results[index] = exc

    async with anyio.create_task_group() as tg:
        for index, prompt in enumerate(prompts):
            tg.start_soon(one, index, prompt)
        await all_waiting(recorder, len(prompts), backend, generating, pipeline._flights)
        assert backend.calls == generating  # the others wait, they do not generate
        backend.release.set()
    return results


def ok(results: Sequence[RunResult | BaseException]) -> list[RunResult]:
    assert all(isinstance(r, RunResult) for r in results), results
    return cast(list[RunResult], list(results))


async def test_twenty_identical_requests_make_one_generation(
        aieng_kernel: Kernel, parts: Parts, hook_recorder: HookRecorder) -> None:
    pipeline = build(aieng_kernel, parts)
    with structlog.testing.capture_logs() as logs:
        results = ok(await run_all(pipeline, ["popular question"] * 20, hook_recorder,
                                   parts.backend, generating=1))
    assert parts.backend.calls == 1
    assert {r.answer for r in results} == {"answer: popular question"}
    assert all(r.status == "ok" for r in results)
    leaders = [r for r in results if r.cache_hit is None]
    assert len(leaders) == 1
    # The followers got normal cache hits: the cache.hit event, no model call of their own.
    followers = [r for r in results if r.cache_hit == "cache"]
    assert len(followers) == 19
    assert all(any(e.name == "cache.hit" for e in r.events) and not r.model_calls
               for r in followers)
    waited = [entry for entry in logs if entry["event"] == WAITED]
    assert len(waited) == 19
    assert all(entry["leader"] == leaders[0].run_id and entry["hit"]
               and not entry["timed_out"] for entry in waited)
    # The flight landed: a later identical request is a plain hit, with no wait.
    with structlog.testing.capture_logs() as logs:
        later = await pipeline.run("popular question")
    assert later.cache_hit == "cache" and not [e for e in logs if e["event"] == WAITED]


async def test_a_follower_looks_the_cache_up_once(
        aieng_kernel: Kernel, parts: Parts, hook_recorder: HookRecorder) -> None:
    """A request arriving while its leader generates waits before its lookup, so the
    cache sees one lookup per run: one miss (the leader's) and a hit per follower. (It
    looked up, missed, then waited and looked up again: a cache's own statistics showed
    20 misses and 19 hits, a hit rate of 49% for 19 requests in 20 answered from it.)"""
    pipeline = build(aieng_kernel, parts)
    ok(await run_all(pipeline, ["popular question"] * 20, hook_recorder, parts.backend,
                     generating=1))
    lookups = hook_recorder.calls("aieng_cache_lookup")
    assert len(lookups) == 20
    assert [c.outcome for c in lookups].count("none") == 1
    if ExactCache is not None:
        assert isinstance(parts.cache, ExactCache)
        assert parts.cache.stats.misses == 1 and sum(parts.cache.stats.hits.values()) == 19
    assert pipeline._flights is not None and pipeline._flights.waiting == 0


async def test_off_by_default(aieng_kernel: Kernel, parts: Parts,
                              hook_recorder: HookRecorder) -> None:
    pipeline = aieng_kernel.pipeline(pipeline_dict(parts))
    assert pipeline.config.single_flight is False
    results = ok(await run_all(pipeline, ["q"] * 5, hook_recorder, parts.backend,
                               generating=5))
    assert parts.backend.calls == 5 and {r.answer for r in results} == {"answer: q"}


async def test_compose_takes_the_option(aieng_kernel: Kernel, parts: Parts,
                                        hook_recorder: HookRecorder) -> None:
    """A pipeline of instances turns single flight on through ``Kernel.compose``."""
    pipeline = aieng_kernel.compose({"cache": parts.cache, "llm": parts.backend},
                                    name="sf-composed", single_flight=True)
    assert pipeline.config.single_flight is True
    results = ok(await run_all(pipeline, ["q"] * 5, hook_recorder, parts.backend,
                               generating=1))
    assert parts.backend.calls == 1 and {r.answer for r in results} == {"answer: q"}


async def test_different_requests_do_not_wait(aieng_kernel: Kernel, parts: Parts,
                                              hook_recorder: HookRecorder) -> None:
    """Different prompts generate at once; identical only means exactly equal (whitespace,
    Unicode normalization and sampling parameters make requests different)."""
    pipeline = build(aieng_kernel, parts)
    prompts = ["a", "b", "a ", "é", "e\u0301", "a", "b"]
    results = ok(await run_all(pipeline, prompts, hook_recorder, parts.backend,
                               generating=5))
    assert parts.backend.calls == 5
    assert sorted(parts.backend.prompts) == sorted(set(prompts))
    # (The exact cache itself keys "a" and "a " alike: a hit may be the other's answer.)
    assert [normalized(r.answer) for r in results] == [f"answer: {normalized(p)}"
                                                       for p in prompts]


def normalized(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def test_flight_key_is_exact_equality() -> None:
    base = Request(messages=(Message("user", "q"),))
    assert flight_key(base) == flight_key(Request(messages=(Message("user", "q"),)))
    for other in (Request(messages=(Message("user", "q "),)),
                  Request(messages=(Message("user", "q"),), temperature=0.5),
                  Request(messages=(Message("user", "q"),), metadata={"user": "ada"}),
                  Request(messages=(Message("system", "s"), Message("user", "q")))):
        assert flight_key(other) != flight_key(base)
    # Metadata order is no difference: the canonical form sorts keys.
    assert flight_key(Request(messages=(Message("user", "q"),), metadata={"a": 1, "b": 2})) \
        == flight_key(Request(messages=(Message("user", "q"),), metadata={"b": 2, "a": 1}))


async def test_a_failed_leader_lets_its_followers_generate(
        aieng_kernel: Kernel, parts: Parts, hook_recorder: HookRecorder) -> None:
    parts.backend.fail = {1}
    pipeline = build(aieng_kernel, parts, timeout=2.0)
    with structlog.testing.capture_logs() as logs:
        results = await run_all(pipeline, ["q"] * 5, hook_recorder, parts.backend,
                                generating=1)
    # Woken by the leader's end, not by their bound.
    assert [e["timed_out"] for e in logs if e["event"] == WAITED] == [False] * 4
    failed = [r for r in results if not isinstance(r, RunResult)]
    assert len(failed) == 1 and "backend down" in str(failed[0])
    answered = ok([r for r in results if isinstance(r, RunResult)])
    assert [r.answer for r in answered] == ["answer: q"] * 4
    # The woken followers generate together (no second round of waiting): 1 + 4.
    assert parts.backend.calls == 5


async def test_a_cancelled_leader_does_not_cancel_its_followers(
        aieng_kernel: Kernel, parts: Parts, hook_recorder: HookRecorder) -> None:
    pipeline = build(aieng_kernel, parts)
    answers: list[str] = []
    leader_done = False

    async def follow() -> None:
        answers.append((await pipeline.run("q")).answer)

    async def lead(scope: anyio.CancelScope) -> None:
        nonlocal leader_done
        with scope:
            await pipeline.run("q")
            leader_done = True

    async with anyio.create_task_group() as tg:
        leader = anyio.CancelScope()
        tg.start_soon(lead, leader)
        await all_waiting(hook_recorder, 1, parts.backend, 1)
        for _ in range(3):
            tg.start_soon(follow)
        await all_waiting(hook_recorder, 4, parts.backend, 1, pipeline._flights)
        assert parts.backend.calls == 1
        leader.cancel()
        await all_waiting(hook_recorder, 4, parts.backend, 4)  # looked up, generating
        parts.backend.release.set()
    assert not leader_done and leader.cancelled_caught
    assert answers == ["answer: q"] * 3 and parts.backend.calls == 4


async def test_a_cancelled_follower_leaves_its_leader_alone(
        aieng_kernel: Kernel, parts: Parts, hook_recorder: HookRecorder) -> None:
    pipeline = build(aieng_kernel, parts)
    results: list[RunResult] = []

    async def lead() -> None:
        results.append(await pipeline.run("q"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(lead)
        await all_waiting(hook_recorder, 1, parts.backend, 1)
        with anyio.move_on_after(0.05) as follower:  # the follower's own deadline
            await pipeline.run("q")
        assert follower.cancelled_caught
        await anyio.wait_all_tasks_blocked()
        assert parts.backend.calls == 1 and not results  # the leader is still generating
        parts.backend.release.set()
    assert results[0].answer == "answer: q" and results[0].cache_hit is None
    assert parts.backend.calls == 1
    assert (await pipeline.run("q")).cache_hit == "cache"


async def test_a_streaming_follower_gets_the_hit_as_one_delta(
        aieng_kernel: Kernel, parts: Parts, hook_recorder: HookRecorder) -> None:
    pipeline = build(aieng_kernel, parts)
    deltas: list[Delta] = []
    results = ok(await run_all(pipeline, ["q"] * 4, hook_recorder, parts.backend,
                               generating=1, on_delta=deltas.append))
    assert parts.backend.calls == 1
    assert [d.text for d in deltas] == ["answer: q"] * 4  # the leader's, then 3 hits
    assert sum(r.cache_hit == "cache" for r in results) == 3


async def test_followers_run_their_own_output_guards(
        aieng_kernel: Kernel, parts: Parts, hook_recorder: HookRecorder) -> None:
    """A blocked answer is not stored: the followers generate it themselves, and each
    run's output guard runs on its own answer."""
    class Block:
        calls = 0

        @hookimpl
        def aieng_guard_output(self, completion: Completion) -> GuardVerdict:
            Block.calls += 1
            return GuardVerdict(action="block", text="withheld")

    parts.guard = Block()
    pipeline = build(aieng_kernel, parts, timeout=2.0)
    with structlog.testing.capture_logs() as logs:
        results = ok(await run_all(pipeline, ["q"] * 3, hook_recorder, parts.backend,
                                   generating=1))
    assert [(e["timed_out"], e["hit"]) for e in logs if e["event"] == WAITED] \
        == [(False, False)] * 2
    assert [r.status for r in results] == ["blocked"] * 3
    assert parts.backend.calls == 3 and Block.calls == 3


async def test_the_wait_is_bounded() -> None:
    """A follower stops waiting after its bound, looks again and goes its own way."""
    flights = Flights(wait_limit=0.01)
    request = Request(messages=(Message("user", "q"),))

    def state(run_id: str) -> Any:
        return types.SimpleNamespace(cache_request=request, flight=None, flights=flights,
                                     scope=types.SimpleNamespace(run_id=run_id))

    async def miss(state: Any, policy: Any) -> str:
        return "ok"

    leader = state("lead")
    assert await flights.board(leader, None, miss) == "ok"  # type: ignore[arg-type]
    assert leader.flight is not None and len(flights) == 1
    with structlog.testing.capture_logs() as logs:
        assert await flights.board(state("follow"), None, miss) == "ok"  # type: ignore[arg-type]
    assert [(e["leader"], e["timed_out"], e["hit"]) for e in logs] == [("lead", True, False)]
    flights.land(leader)
    flights.land(leader)  # landing twice is harmless
    assert len(flights) == 0 and leader.flight is None


async def test_the_bound_is_the_sum_of_the_skipped_stages_timeouts(
        aieng_kernel: Kernel, parts: Parts) -> None:
    pipeline = build(aieng_kernel, parts, timeout=2.0)
    assert pipeline._flights is not None and pipeline._flights.wait_limit == 4.0
    data = pipeline_dict(parts, single_flight=True, timeout=2.0)
    data["stage"] = {"generate": {"timeout": math.inf}}
    assert aieng_kernel.pipeline(data)._flights.wait_limit is None  # type: ignore[union-attr]
    # No cache_store stage: nothing to wait for, single flight stays off.
    data = pipeline_dict(parts, single_flight=True, stages=["cache_lookup", "generate"])
    assert aieng_kernel.pipeline(data)._flights is None


async def test_the_option_is_validated_and_round_trips(aieng_kernel: Kernel,
                                                       parts: Parts) -> None:
    for bad in (1, "true", None):
        with pytest.raises(ConfigError, match=r"pipeline\.single_flight"):
            aieng_kernel.pipeline(pipeline_dict(parts, single_flight=bad))
    on = aieng_kernel.pipeline(pipeline_dict(parts, single_flight=True)).config
    assert on.single_flight and on.to_dict()["pipeline"]["single_flight"] is True
    assert PipelineConfig.from_dict(on.to_dict(), aieng_kernel.registry) == on
    off = aieng_kernel.pipeline(pipeline_dict(parts)).config
    assert "single_flight" not in off.to_dict()["pipeline"]
    assert PipelineConfig.from_dict(off.to_dict(), aieng_kernel.registry) == off


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "a b", "ä"]), min_size=1, max_size=10))
def test_one_generation_per_distinct_request(prompts: list[str]) -> None:
    """Whatever the mix of identical and different requests arriving together, when every
    leader succeeds there is one generation per distinct request, and each run gets the
    answer to its own request."""
    distinct = len(set(prompts))

    async def main() -> tuple[list[RunResult | BaseException], int]:
        parts = Parts()
        async with isolated_kernel(loop_block_threshold=None) as kernel:
            with registered(kernel, doubles_plugin(parts), "single-flight-doubles"):
                recorder = HookRecorder(kernel)
                try:
                    async with build(kernel, parts) as pipeline:
                        results = await run_all(pipeline, prompts, recorder, parts.backend,
                                                generating=distinct)
                finally:
                    recorder.close()
        return results, parts.backend.calls

    results, calls = anyio.run(main)
    assert calls == distinct
    assert [r.answer for r in ok(results)] == [f"answer: {p}" for p in prompts]
