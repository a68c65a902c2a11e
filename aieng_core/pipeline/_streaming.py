"""Streaming in the generate stage: a backend's deltas to the caller's ``on_delta``, with
time to first token, per-token events and the completion they add up to; a whole answer (a
backend that does not stream, a cache hit) as its one delta."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from aieng_hookspecs.types import (
    Completion,
    Delta,
    FirstToken,
    TokenEvent,
    TokenLogprob,
    ToolCall,
    Usage,
    unchecked,
)

from .._errors import HookError
from ..dispatch import Check, Dispatcher, StagePolicy

if TYPE_CHECKING:
    from ._stages import RunState

__all__ = ["Began", "DeltaCallback", "deliver", "held", "stream", "stream_hit", "whole"]

DeltaCallback = Callable[[Delta], "Awaitable[None] | None"]
#: How long a stream's cleanup may run once the run is over (cancelled or not).
_CLOSE_S = 10.0


class Began:
    """When the backend now asked was called: a model call's ``duration_s`` and ``ttft_s``
    are the answering backend's own, not those of the backends that failed before it (their
    time is the generate stage's). Give it to :meth:`Dispatcher.first` as ``before``."""

    def __init__(self) -> None:
        self.at = time.perf_counter()

    def __call__(self, plugin: str) -> None:
        self.at = time.perf_counter()


async def stream_hit(state: RunState) -> None:
    """Hand a cache hit (or a stream the output guards held back: ``stream = "guarded"``)
    to a streaming caller as a backend that does not stream hands its answer over: one
    delta. The pipeline calls it once the output guards have run (a hit streams no sooner
    for waiting), so the delta is the run's answer, guarded. No ``backend.first_token`` /
    ``backend.token`` events here: for a hit no model ran, and a cache's microseconds would
    pass for a backend's time to first token in the metrics (a held stream published its
    own while the model streamed)."""
    if state.on_delta is not None and state.completion is not None:
        await deliver(state.on_delta, whole(state.completion))


async def stream(state: RunState, policy: StagePolicy, only: Sequence[str] | None,
                 began: Began, check: Check
                 ) -> tuple[Completion, float | None, str, bool] | None:
    """Answer a streaming caller: the backends in order (the route's, else the hooks'), one
    at a time, each through ``aieng_stream`` when it streams, else (or when its stream is
    ``None``) through ``aieng_generate``, whose whole answer is one delta. So the backend
    that answers is the one a caller that does not stream would get.

    Under ``fallback`` a backend that fails before delivering anything gives way to the
    next one in line (the caller has seen nothing yet); after the first delta a failure is
    final: text cannot be taken back (and with the caller's own ``on_delta``, not
    :func:`held`, it is :attr:`HookError.final`: no ``skip`` either).

    :param began: set as each backend is asked; the time to first token counts from it.
    :returns: ``(completion, time to first token, backend, streamed)``; ``None`` when every
        backend passed.
    :raises HookError: as :meth:`Dispatcher.first` (under ``fallback``: the last failure,
        when no backend answered after one failed).
    """
    dispatcher = state.dispatcher
    streams = {impl.plugin_name for impl in dispatcher.impls("aieng_stream", only)}
    answers = {impl.plugin_name for impl in dispatcher.impls("aieng_generate", only)}
    failure: HookError | None = None
    for plugin in only if only is not None else _backends(dispatcher):
        progress = _Progress()
        began(plugin)
        try:
            if plugin in streams:
                found = await dispatcher.first("aieng_stream", {"request": state.request},
                                               stage="generate", policy=policy,
                                               only=(plugin,))
                if found is not None:
                    completion, ttft = await _consume(state, found[0], plugin, began.at,
                                                      policy, progress)
                    return completion, ttft, plugin, True
            if plugin in answers:
                answered = await dispatcher.first("aieng_generate", {"request": state.request},
                                                  stage="generate", policy=policy,
                                                  only=(plugin,), check=check)
                if answered is not None:
                    await deliver(state.on_delta, whole(answered[0]))  # type: ignore[arg-type]
                    return answered[0], None, plugin, False
        except HookError as exc:
            if progress.delivered and state.on_delta is not held:
                exc.final = True  # the caller saw text: no skip past it, no fallback either
            if policy.on_error != "fallback" or progress.delivered:
                raise
            failure = exc
    if failure is not None:
        raise failure
    return None


def _backends(dispatcher: Dispatcher) -> list[str]:
    """The backends in call order: those of ``aieng_generate`` in its order, each backend
    that only streams placed after the one it follows in ``aieng_stream``'s order."""
    order = [impl.plugin_name for impl in dispatcher.impls("aieng_generate")]
    at = 0
    for impl in dispatcher.impls("aieng_stream"):
        name = impl.plugin_name
        if name in order:
            at = order.index(name) + 1
        else:
            order.insert(at, name)
            at += 1
    return order


def held(delta: object) -> None:
    """A streaming caller's stand-in while output guards hold the stream back."""


class _Progress:
    """Whether a stream has delivered anything to the caller yet."""

    delivered = False


def whole(completion: Completion) -> Delta:
    """A whole completion (a backend that does not stream, a cache hit) as its one delta.

    It carries no ``logprob``: the completion's per-token log-probabilities are on the
    run's completion, and a consumer that wants them per token (the gateway's SSE chunks)
    waits for it when the first delta is already the last one and has none."""
    return Delta(completion.text, 0, completion.finish_reason, usage=completion.usage,
                 tool_calls=completion.tool_calls, model=completion.model)


async def deliver(callback: DeltaCallback, delta: Delta) -> None:
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
    model = ""  # the last one a delta names
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
            # Named by the loop watchdog only while the stream runs, not while it waits.
            with anyio.move_on_after(timeout) as waited:
                try:
                    delta = await state.dispatcher.stepped(anext(iterator), label)
                except StopAsyncIteration:
                    break
            if waited.cancelled_caught:
                # Only the kernel's deadline: a TimeoutError the stream raises itself is
                # an error of the stream (the dispatcher's failure() says so).
                stalled = TimeoutError(f"no delta for {timeout} s")
                raise state.dispatcher.failure(
                    plugin, "aieng_stream", "generate", policy, stalled, "timeout",
                    message=str(stalled), hint=policy.raise_hint(),
                ) from stalled
            if not isinstance(delta, Delta):
                problem = f"yielded {type(delta).__name__}, expected Delta"
                raise state.dispatcher.failure(
                    plugin, "aieng_stream", "generate", policy, TypeError(problem), "error",
                    message=problem, hint="yield aieng_hookspecs.types.Delta values")
            if ttft is None and delta.text:
                ttft = time.perf_counter() - started
                scope.emit(FirstToken(run_id=scope.run_id, pipeline=scope.pipeline,
                                      component=plugin, ttft_s=ttft,
                                      model=state.request.model or ""))
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
            if delta.model:
                model = delta.model
            if logprobs is not None:
                if delta.logprob is not None:
                    logprobs.append(TokenLogprob(delta.text, delta.logprob))
                elif delta.text:
                    logprobs = None
            progress.delivered = True
            try:
                await deliver(state.on_delta, delta)  # type: ignore[arg-type]
            except Exception as exc:
                caller_error = exc
                raise
            # A caller that cancelled (from on_delta: it has seen enough) gets no more, even
            # when the next delta is at hand and fetching it is no checkpoint.
            await anyio.lowlevel.checkpoint_if_cancelled()
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
            # Shielded (for a while): a run being cancelled must still let the stream's own
            # cleanup run (a batcher's slot, an HTTP response), which awaits.
            with anyio.move_on_after(_CLOSE_S, shield=True):
                await closer()
    completion = Completion(text="".join(pieces), finish_reason=finish,  # type: ignore[arg-type]
                            usage=usage or Usage(completion_tokens=count), tool_calls=calls,
                            model=model, logprobs=logprobs or None)
    return completion, ttft
