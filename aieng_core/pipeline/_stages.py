"""The stages of the request lifecycle, each a function of the run's state."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import attrs

from aieng_hookspecs.types import (
    CacheHit,
    Completion,
    Delta,
    FirstToken,
    GuardBlocked,
    GuardVerdict,
    Hit,
    JudgeScored,
    Message,
    ModelCall,
    Query,
    Request,
    Route,
    Sample,
    Score,
    TokenEvent,
    TokenLogprob,
    ToolCall,
    Usage,
    unchecked,
)

from .._errors import HookError
from .._scope import RunScope
from ..dispatch import Check, Dispatcher, StagePolicy, expect, first_hook_error
from ..fusion import reciprocal_rank_fusion

__all__ = ["STAGE_FUNCTIONS", "RunState", "stream_hit"]

DeltaCallback = Callable[[Delta], "Awaitable[None] | None"]


@attrs.define
class RunState:
    """The mutable state of one run, turned into a :class:`RunResult` at the end."""

    scope: RunScope
    dispatcher: Dispatcher
    backends: tuple[str, ...]
    request: Request
    query: Query
    reference: str | tuple[str, ...] | None = None
    #: the judge stage's context when the caller gave one (else the hits' texts)
    context: tuple[str, ...] | None = None
    on_delta: DeltaCallback | None = None
    k_retrieve: int = 10
    k_rerank: int = 10
    input_verdicts: list[GuardVerdict] = attrs.field(factory=list)
    output_verdicts: list[GuardVerdict] = attrs.field(factory=list)
    cache_hit: str | None = None
    #: the request as the cache looked it up (before retrieval and context rendering)
    cache_request: Request | None = None
    route: Route | None = None
    runs: dict[str, tuple[Hit, ...]] = attrs.field(factory=dict)
    expansions: tuple[Query, ...] = ()
    retrieved: tuple[Hit, ...] = ()
    hits: tuple[Hit, ...] = ()
    raw_completion: Completion | None = None
    completion: Completion | None = None
    scores: list[Score] = attrs.field(factory=list)
    blocked: bool = False


# What each hook must return: the dispatcher checks every value, so a wrong one is that
# impl's failure and the stage's error policy applies to it as to a raise.
_HITS = expect((list, tuple), items=Hit)
_QUERIES = expect((list, tuple), items=Query)
_COMPLETION = expect(Completion)
_ROUTE = expect(Route)
_REQUEST = expect(Request)
_VERDICT = expect(GuardVerdict)
_SCORE_LIST = expect((list, tuple), items=Score)


def _scores(value: Any) -> str:
    return "" if isinstance(value, Score) else _SCORE_LIST(value)


_SCORES: Check = _scores


def _with_prompt(request: Request, text: str) -> Request:
    messages = list(request.messages)
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            messages[index] = attrs.evolve(messages[index], content=text)
            return attrs.evolve(request, messages=tuple(messages))
    return attrs.evolve(request, messages=(*messages, Message("user", text)))


async def guard_input(state: RunState, policy: StagePolicy) -> str:
    stage = "guard_input"

    def fold(kwargs: dict[str, Any], verdict: Any, plugin: str) -> dict[str, Any] | None:
        if not verdict.guard:
            verdict = attrs.evolve(verdict, guard=plugin)
        state.input_verdicts.append(verdict)
        if verdict.action == "block":
            state.blocked = True
            state.scope.emit(GuardBlocked(run_id=state.scope.run_id,
                                          pipeline=state.scope.pipeline, component=plugin,
                                          stage=stage, findings=verdict.findings))
            return None
        if verdict.action == "redact":
            return {"request": _with_prompt(kwargs["request"], verdict.text)}
        return kwargs

    result = await state.dispatcher.chain("aieng_guard_input", {"request": state.request}, fold,
                                          stage=stage, policy=policy, check=_VERDICT)
    if state.blocked:
        return "blocked"
    state.request = result["request"]
    state.query = attrs.evolve(state.query, text=state.request.prompt)
    return "ok"


async def cache_lookup(state: RunState, policy: StagePolicy) -> str:
    state.cache_request = state.request
    found = await state.dispatcher.first("aieng_cache_lookup", {"request": state.request},
                                         stage="cache_lookup", policy=policy, check=_COMPLETION)
    if found is None:
        return "ok"
    completion, plugin = found
    state.completion = state.raw_completion = attrs.evolve(completion, cached=True)
    state.cache_hit = plugin
    state.scope.emit(CacheHit(run_id=state.scope.run_id, pipeline=state.scope.pipeline,
                              component=plugin))
    return "hit"


async def stream_hit(state: RunState) -> None:
    """Hand a cache hit to a streaming caller as a backend that does not stream hands its
    answer over: one delta. The pipeline calls it once the hit's output guards have run
    (nothing streams sooner for waiting), so the delta is the run's answer, guarded. No
    ``backend.first_token`` / ``backend.token`` events: no model ran, and a cache's
    microseconds would pass for a backend's time to first token in the metrics."""
    if state.on_delta is not None and state.completion is not None:
        await _deliver(state.on_delta, _whole(state.completion))


async def route(state: RunState, policy: StagePolicy) -> str:
    found = await state.dispatcher.first(
        "aieng_route", {"request": state.request, "candidates": state.backends},
        stage="route", policy=policy, check=_ROUTE)
    if found is None:
        return "ok"
    chosen, plugin = found
    unknown = [t for t in (chosen.target, *chosen.fallbacks) if t not in state.backends]
    if unknown:
        raise HookError(hook="aieng_route", plugin=plugin, stage="route",
                        message=f"routed to {unknown[0]!r}, which is not a backend of this "
                                f"pipeline (candidates: {', '.join(state.backends)})")
    state.route = chosen
    return "ok"


async def _expansions(state: RunState, policy: StagePolicy) -> list[Query]:
    expanded: list[Query] = []
    for value, plugin in await state.dispatcher.gather(
            "aieng_query_expand", {"query": state.query}, stage="retrieve", policy=policy,
            check=_QUERIES):
        for query in value:
            if query.text != state.query.text and query not in expanded:
                # Expansions inherit the user's filters unless they set their own.
                expanded.append(query if query.filters else
                                attrs.evolve(query, filters=state.query.filters))
    return expanded


async def retrieve(state: RunState, policy: StagePolicy) -> str:
    stage = "retrieve"
    queries = [state.query]
    if state.dispatcher.impls("aieng_query_expand"):
        state.expansions = tuple(await _expansions(state, policy))
        queries.extend(state.expansions)
    found: list[list[tuple[Any, str]]] = [[] for _ in queries]

    async def search(number: int, query: Query) -> None:
        found[number] = await state.dispatcher.gather(
            "aieng_retrieve", {"query": query, "k": state.k_retrieve},
            stage=stage, policy=policy, check=_HITS)

    if len(queries) == 1:
        await search(0, queries[0])
    else:  # the original query and every expansion are searched concurrently
        try:
            async with anyio.create_task_group() as tg:
                for number, query in enumerate(queries):
                    tg.start_soon(search, number, query)
        except BaseExceptionGroup as group:
            failure = first_hook_error(group)
            if failure is None:
                raise
            raise failure from None
    for number, gathered in enumerate(found):
        for value, plugin in gathered:
            key = plugin if number == 0 else f"{plugin}@{number}"
            state.runs[key] = tuple(value)[: state.k_retrieve]
    runs = list(state.runs.values())
    if len(runs) == 1:
        state.retrieved = runs[0]
    elif runs:
        try:
            fused = await state.dispatcher.first(
                "aieng_fuse", {"query": state.query, "runs": runs}, stage=stage, policy=policy,
                check=_HITS)
        except HookError:
            if policy.on_error != "fallback":
                raise
            fused = None  # fall back to the kernel's RRF (the error event is published)
        if fused is None:
            state.retrieved = tuple(reciprocal_rank_fusion(runs)[: state.k_retrieve])
        else:
            state.retrieved = tuple(fused[0])[: state.k_retrieve]
    state.hits = state.retrieved
    return "ok"


async def rerank(state: RunState, policy: StagePolicy) -> str:
    def fold(kwargs: dict[str, Any], value: Any, plugin: str) -> dict[str, Any]:
        return {**kwargs, "hits": tuple(value)}

    result = await state.dispatcher.chain(
        "aieng_rerank", {"query": state.query, "hits": state.hits, "k": state.k_rerank}, fold,
        stage="rerank", policy=policy, check=_HITS)
    state.hits = tuple(result["hits"])
    return "ok"


async def context(state: RunState, policy: StagePolicy) -> str:
    found = await state.dispatcher.first(
        "aieng_context_build",
        {"query": state.query, "hits": state.hits, "request": state.request},
        stage="context", policy=policy, check=_REQUEST)
    if found is not None:
        state.request = found[0]
    return "ok"


def _parameters(request: Request) -> dict[str, Any]:
    return {
        "model": request.model, "temperature": request.temperature, "top_k": request.top_k,
        "top_p": request.top_p, "max_tokens": request.max_tokens, "stop": list(request.stop),
        "seed": request.seed, "response_schema": request.response_schema,
        "tools": [t.name for t in request.tools],
    }


async def generate(state: RunState, policy: StagePolicy) -> str:
    stage = "generate"
    only: Sequence[str] | None = None
    if state.route is not None:
        # A route is a chain: its target, then its fallbacks in order, whatever the stage's
        # policy; backends the router left out (an open circuit) are never tried. When the
        # whole chain fails, the stage's policy decides (fail / skip / fallback alike raise).
        only = (state.route.target, *state.route.fallbacks)
        policy = attrs.evolve(policy, on_error="fallback")
    started = time.perf_counter()
    ttft: float | None = None
    streamed = False
    failed: dict[str, HookError] = {}  # streams that failed before their first delta
    if state.on_delta is not None:
        found = await _stream(state, policy, only, started, failed)
        if found is not None:
            streamed = True
            completion, ttft, plugin = found
    if not streamed:
        if failed:  # the backends that do not stream answer next; the failed ones are done
            only = [impl.plugin_name for impl in state.dispatcher.impls("aieng_generate", only)
                    if impl.plugin_name not in failed]
        answered = await state.dispatcher.first("aieng_generate", {"request": state.request},
                                                stage=stage, policy=policy, only=only,
                                                check=_COMPLETION)
        if answered is None:
            if failed:
                raise next(iter(failed.values()))
            raise HookError(hook="aieng_generate", plugin="(none)", stage=stage,
                            message="no backend answered (every impl returned None)",
                            hint="check the request's model name against the backends' models")
        completion, plugin = answered
        if state.on_delta is not None:  # a non-streaming backend still feeds the callback
            await _deliver(state.on_delta, _whole(completion))
    state.raw_completion = state.completion = completion
    scope = state.scope
    scope.emit(unchecked(ModelCall, run_id=scope.run_id, pipeline=scope.pipeline, component=plugin,
                         messages=state.request.messages, parameters=_parameters(state.request),
                         raw_output=completion.text, usage=completion.usage,
                         duration_s=time.perf_counter() - started, ttft_s=ttft,
                         streamed=streamed))
    return "ok"


async def _stream(state: RunState, policy: StagePolicy, only: Sequence[str] | None,
                  started: float, failed: dict[str, HookError]
                  ) -> tuple[Completion, float | None, str] | None:
    """Stream from the first backend that streams. Under ``fallback`` a stream that fails
    before delivering anything is dropped for the next backend in line (the caller has seen
    nothing yet) and recorded in ``failed``; after the first delta a failure is final: text
    cannot be taken back. ``None``: no backend streamed (the caller asks the others)."""
    for plugin in [impl.plugin_name for impl in state.dispatcher.impls("aieng_stream", only)]:
        progress = _Progress()
        try:
            found = await state.dispatcher.first("aieng_stream", {"request": state.request},
                                                 stage="generate", policy=policy,
                                                 only=(plugin,))
            if found is None:
                continue
            completion, ttft = await _consume(state, found[0], plugin, started, policy,
                                              progress)
        except HookError as exc:
            if policy.on_error != "fallback" or progress.delivered:
                raise
            failed[plugin] = exc
            continue
        return completion, ttft, plugin
    return None


class _Progress:
    """Whether a stream has delivered anything to the caller yet."""

    delivered = False


def _whole(completion: Completion) -> Delta:
    """A whole completion (a backend that does not stream, a cache hit) as its one delta.

    It carries no ``logprob``: the completion's per-token log-probabilities are on the
    run's completion, and a consumer that wants them per token (the gateway's SSE chunks)
    waits for it when the first delta is already the last one and has none."""
    return Delta(completion.text, 0, completion.finish_reason, usage=completion.usage,
                 tool_calls=completion.tool_calls)


async def _deliver(callback: DeltaCallback, delta: Delta) -> None:
    result = callback(delta)
    if result is not None:
        await result


async def _consume(state: RunState, stream: Any, plugin: str, started: float,
                   policy: StagePolicy, progress: _Progress) -> tuple[Completion, float | None]:
    scope = state.scope
    pieces: list[str] = []
    finish = "stop"
    ttft: float | None = None
    count = 0
    usage: Usage | None = None
    calls: tuple[ToolCall, ...] = ()
    # One log-probability per delta (per token for a backend streaming token by token; a
    # delta of several tokens carries their sum, an empty last delta an end-of-text
    # token's); none at all when a delta with text has none.
    logprobs: list[TokenLogprob] | None = []
    label = f"{plugin}.aieng_stream"
    timeout = policy.timeout
    try:
        iterator = aiter(stream)
    except TypeError as exc:  # a plain generator or a list: named, not a bare TypeError
        problem = f"returned {type(stream).__name__}, not an async iterator of Delta"
        raise state.dispatcher.failure(
            plugin, "aieng_stream", "generate", policy, exc, "error", message=problem,
            hint="write aieng_stream as an async generator (async def ... yield Delta)",
        ) from exc
    # The caller's own on_delta failing is no failure of the backend: it propagates as it is.
    caller_error: BaseException | None = None
    try:
        while True:
            # The stage timeout bounds each wait for the next delta, not the whole stream.
            with state.dispatcher.tracking(label), anyio.move_on_after(timeout) as waited:
                try:
                    delta = await anext(iterator)
                except StopAsyncIteration:
                    break
            if waited.cancelled_caught:
                # Only the kernel's deadline: a TimeoutError the stream raises itself is
                # an error of the stream (the dispatcher's failure() says so).
                stalled = TimeoutError(f"no delta for {timeout} s")
                raise state.dispatcher.failure(
                    plugin, "aieng_stream", "generate", policy, stalled, "timeout",
                    message=str(stalled), hint="raise the generate stage's timeout",
                ) from stalled
            if not isinstance(delta, Delta):
                problem = f"yielded {type(delta).__name__}, expected Delta"
                raise state.dispatcher.failure(
                    plugin, "aieng_stream", "generate", policy, TypeError(problem), "error",
                    message=problem, hint="yield aieng_hookspecs.types.Delta values")
            if ttft is None and delta.text:
                ttft = time.perf_counter() - started
                scope.emit(FirstToken(run_id=scope.run_id, pipeline=scope.pipeline,
                                      component=plugin, ttft_s=ttft))
            if delta.text:
                scope.emit(unchecked(TokenEvent, run_id=scope.run_id, pipeline=scope.pipeline,
                                      component=plugin, text=delta.text, index=count))
                count += 1
                pieces.append(delta.text)
            if delta.finish_reason is not None:
                finish = delta.finish_reason
            if delta.usage is not None:
                usage = delta.usage
            if delta.tool_calls:
                calls = delta.tool_calls
            if logprobs is not None:
                if delta.logprob is not None:
                    logprobs.append(TokenLogprob(delta.text, delta.logprob))
                elif delta.text:
                    logprobs = None
            progress.delivered = True
            try:
                await _deliver(state.on_delta, delta)  # type: ignore[arg-type]
            except Exception as exc:
                caller_error = exc
                raise
    except HookError:
        raise
    except Exception as exc:
        if exc is caller_error:
            raise
        raise state.dispatcher.failure(plugin, "aieng_stream", "generate", policy, exc,
                                       "error") from exc
    finally:
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            await closer()
    completion = Completion(text="".join(pieces), finish_reason=finish,  # type: ignore[arg-type]
                            usage=usage or Usage(completion_tokens=count), tool_calls=calls,
                            logprobs=logprobs or None)
    return completion, ttft


async def guard_output(state: RunState, policy: StagePolicy) -> str:
    stage = "guard_output"
    if state.completion is None:
        return "ok"

    def fold(kwargs: dict[str, Any], verdict: Any, plugin: str) -> dict[str, Any] | None:
        if not verdict.guard:
            verdict = attrs.evolve(verdict, guard=plugin)
        state.output_verdicts.append(verdict)
        completion: Completion = kwargs["completion"]
        if verdict.action == "block":
            state.blocked = True
            state.scope.emit(GuardBlocked(run_id=state.scope.run_id,
                                          pipeline=state.scope.pipeline, component=plugin,
                                          stage=stage, findings=verdict.findings))
            state.completion = attrs.evolve(completion, text=verdict.text,
                                            finish_reason="content_filter")
            return None
        if verdict.action == "redact":
            return {**kwargs, "completion": attrs.evolve(completion, text=verdict.text)}
        return kwargs

    result = await state.dispatcher.chain(
        "aieng_guard_output", {"request": state.request, "completion": state.completion}, fold,
        stage=stage, policy=policy, check=_VERDICT)
    if state.blocked:
        return "blocked"
    state.completion = result["completion"]
    return "ok"


#: Finish reasons whose completions the cache_store stage does not store.
_NOT_CACHED = frozenset({"error", "content_filter"})


async def cache_store(state: RunState, policy: StagePolicy) -> str:
    if state.completion is None or state.cache_hit is not None:
        return "ok"
    request = state.cache_request if state.cache_request is not None else state.request
    # The answer as the model gave it, before output guards: they run again on every hit,
    # so a per-request change (a guard restoring this user's redacted values) is never
    # served to another request.
    stored = state.raw_completion if state.raw_completion is not None else state.completion
    if stored.finish_reason in _NOT_CACHED:
        # A failed or filtered answer is no answer to replay: the next request asks again.
        return "skipped"
    await state.dispatcher.gather("aieng_cache_store",
                                  {"request": request, "completion": stored},
                                  stage="cache_store", policy=policy)
    return "ok"


async def judge(state: RunState, policy: StagePolicy) -> str:
    sample = Sample(input=state.query.text,
                    output=state.completion.text if state.completion else "",
                    reference=state.reference,
                    context=state.context if state.context is not None
                    else tuple(h.document.text for h in state.hits))
    for value, plugin in await state.dispatcher.gather("aieng_judge", {"sample": sample},
                                                       stage="judge", policy=policy,
                                                       check=_SCORES):
        scores = [value] if isinstance(value, Score) else value
        for score in scores:
            state.scores.append(score if score.judge else attrs.evolve(score, judge=plugin))
        state.scope.emit(unchecked(JudgeScored, run_id=state.scope.run_id,
                                   pipeline=state.scope.pipeline, component=plugin,
                                   scores=tuple(scores)))
    return "ok"


StageFunction = Callable[[RunState, StagePolicy], Awaitable[str]]

STAGE_FUNCTIONS: dict[str, StageFunction] = {
    "guard_input": guard_input,
    "cache_lookup": cache_lookup,
    "route": route,
    "retrieve": retrieve,
    "rerank": rerank,
    "context": context,
    "generate": generate,
    "guard_output": guard_output,
    "cache_store": cache_store,
    "judge": judge,
}

#: Stages a cache hit skips.
SKIPPED_ON_HIT = frozenset({"route", "retrieve", "rerank", "context", "generate", "cache_store"})
