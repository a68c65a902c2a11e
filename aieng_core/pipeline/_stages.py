"""The stages of the request lifecycle, each a function of the run's state."""

from __future__ import annotations

import time
from functools import partial
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from aieng_hookspecs.types import (
    CacheHit,
    Completion,
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
    unchecked,
)

from .._errors import HookError
from .._scope import RunScope
from ..dispatch import Check, Dispatcher, StagePolicy, concurrently, expect
from ..fusion import reciprocal_rank_fusion
from ._flight import land
from ._streaming import Began, DeltaCallback, stream, stream_hit

if TYPE_CHECKING:
    from ._flight import Flight, Flights

__all__ = ["STAGE_FUNCTIONS", "DeltaCallback", "RunState", "stream_hit"]


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
    #: the judge stage's Sample.metadata (the caller's)
    metadata: dict[str, Any] = attrs.field(factory=dict)
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
    #: the pipeline's flights (``single_flight``), and the one this run leads
    flights: Flights | None = None
    flight: Flight | None = None


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
            request: Request = kwargs["request"]
            if verdict.messages is not None:  # more than the last user message changed
                return {"request": attrs.evolve(request, messages=verdict.messages)}
            return {"request": _with_prompt(request, verdict.text)}
        return kwargs

    result = await state.dispatcher.chain("aieng_guard_input", {"request": state.request}, fold,
                                          stage=stage, policy=policy, check=_VERDICT)
    if state.blocked:
        return "blocked"
    state.request = result["request"]
    state.query = attrs.evolve(state.query, text=state.request.prompt)
    return "ok"


async def cache_lookup(state: RunState, policy: StagePolicy) -> str:
    flights = state.flights
    if flights is not None:
        # Single flight: a request whose leader generates waits for its answer, then looks
        # it up (one lookup per run: a cache's hit rate counts runs).
        followed = await flights.follow(state, policy, _lookup)
        if followed is not None:
            return followed
    status = await _lookup(state, policy)
    if status == "ok" and flights is not None:
        # Lead this request's generation, or (a lookup beside its leader's) wait for it.
        return await flights.board(state, policy, _lookup)
    return status


async def _lookup(state: RunState, policy: StagePolicy) -> str:
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
        # Under fallback a retriever that fails gives way to the others; the user's query
        # with every retriever failed is an error, not an answer from no context.
        found[number] = await state.dispatcher.gather(
            "aieng_retrieve", {"query": query, "k": state.k_retrieve},
            stage=stage, policy=policy, check=_HITS, all_failed_raises=number == 0)

    if len(queries) == 1:
        await search(0, queries[0])
    else:  # the original query and every expansion are searched concurrently
        await concurrently(partial(search, number, query)
                           for number, query in enumerate(queries))
    for number, gathered in enumerate(found):
        for value, plugin in gathered:
            key = plugin if number == 0 else f"{plugin}@{number}"
            state.runs[key] = tuple(value)[: state.k_retrieve]
    state.retrieved = await fused(state.dispatcher, state.query, list(state.runs.values()),
                                  state.k_retrieve, policy)
    state.hits = state.retrieved
    return "ok"


async def fused(dispatcher: Dispatcher, query: Query, runs: Sequence[Sequence[Hit]], k: int,
                policy: StagePolicy) -> tuple[Hit, ...]:
    """The retrievers' runs as one ranking, the best ``k``: the only run, else the fuser's
    (``aieng_fuse``), else reciprocal rank fusion (also when the fuser fails under
    ``fallback``: its error event is published)."""
    if len(runs) <= 1:
        return tuple(runs[0])[:k] if runs else ()
    try:
        found = await dispatcher.first("aieng_fuse", {"query": query, "runs": runs},
                                       stage="retrieve", policy=policy, check=_HITS)
    except HookError:
        if policy.on_error != "fallback":
            raise
        found = None
    return tuple(reciprocal_rank_fusion(runs) if found is None else found[0])[:k]


async def reranked(dispatcher: Dispatcher, query: Query, hits: Sequence[Hit], k: int,
                   policy: StagePolicy) -> tuple[Hit, ...]:
    """``hits`` through the rerankers (``aieng_rerank``, a chain), the best ``k``: ``k``
    holds even when no reranker answered (each passed with ``None``)."""
    def fold(kwargs: dict[str, Any], value: Any, plugin: str) -> dict[str, Any]:
        return {**kwargs, "hits": tuple(value)}

    result = await dispatcher.chain("aieng_rerank", {"query": query, "hits": hits, "k": k},
                                    fold, stage="rerank", policy=policy, check=_HITS)
    return tuple(result["hits"])[:k]


async def rerank(state: RunState, policy: StagePolicy) -> str:
    state.hits = await reranked(state.dispatcher, state.query, state.hits, state.k_rerank,
                                policy)
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
    began = Began()
    found: tuple[Completion, float | None, str, bool] | None
    if state.on_delta is not None:
        found = await stream(state, policy, only, began, _COMPLETION)
    else:
        answered = await state.dispatcher.first("aieng_generate", {"request": state.request},
                                                stage=stage, policy=policy, only=only,
                                                check=_COMPLETION, before=began)
        found = None if answered is None else (answered[0], None, answered[1], False)
    if found is None:
        raise HookError(hook="aieng_generate", plugin="(none)", stage=stage,
                        message="no backend answered (every impl returned None)",
                        hint="check the request's model name against the backends' models")
    completion, ttft, plugin, streamed = found
    state.raw_completion = state.completion = completion
    scope = state.scope
    scope.emit(unchecked(ModelCall, run_id=scope.run_id, pipeline=scope.pipeline, component=plugin,
                         messages=state.request.messages, parameters=_parameters(state.request),
                         raw_output=completion.text, usage=completion.usage,
                         duration_s=time.perf_counter() - began.at, ttft_s=ttft,
                         streamed=streamed))
    return "ok"


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
            calls = completion.tool_calls if verdict.tool_calls is None else verdict.tool_calls
            return {**kwargs, "completion": attrs.evolve(completion, text=verdict.text,
                                                         tool_calls=calls)}
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
    try:
        return await _store(state, policy)
    finally:
        land(state)  # stored or not, the followers waiting on this run look again


async def _store(state: RunState, policy: StagePolicy) -> str:
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
                    else tuple(h.document.text for h in state.hits),
                    metadata=state.metadata)
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
