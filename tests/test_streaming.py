"""Streamed runs (``on_delta``) against cache hits and log-probabilities: a caller that
streams gets the same answer, and the same completion, as one that does not."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from aieng_core import Kernel
from aieng_core.testing import EventCapture, settle
from aieng_core.testing.doubles import PromptCache, ScriptedBackend
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    CacheHit,
    Completion,
    Delta,
    FirstToken,
    GuardVerdict,
    Message,
    ModelCall,
    Request,
    TokenEvent,
    TokenLogprob,
    ToolCall,
    Usage,
)

pytestmark = pytest.mark.anyio

#: (token, log-probability) of the scored double's answer, its end-of-text token last.
TOKENS = (("one", -0.5), (" two", -0.25), (" three", -1.0), ("", -0.125))



class Scored:
    """A backend reporting each token's log-probability, whole and streamed one delta per
    token (the end-of-text token, which shows no text, on the last delta)."""

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        return Completion(text="".join(t for t, _ in TOKENS), usage=Usage(completion_tokens=4),
                          logprobs=[TokenLogprob(t, p) for t, p in TOKENS])

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
        async def deltas() -> AsyncIterator[Delta]:
            for index, (token, logprob) in enumerate(TOKENS):
                yield Delta(token, index, "stop" if index == len(TOKENS) - 1 else None,
                            logprob=logprob,
                            usage=Usage(completion_tokens=4) if index == 3 else None)
        return deltas()


class WholeOnly(Scored):
    """:class:`Scored` without a stream: the kernel hands its answer over as one delta."""

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta] | None:
        return None


async def test_a_cache_hit_streams_the_cached_answer(aieng_kernel: Kernel) -> None:
    """A streaming caller served from the cache gets the cached answer through its
    callback, as one delta with the finish reason (a backend that does not stream hands
    its answer over the same way); no model ran, so no backend event says one did."""
    backend = ScriptedBackend(["one two three"])
    pipeline = aieng_kernel.compose({"cache": PromptCache(), "llm": backend})
    first: list[Delta] = []
    miss = await pipeline.run("count", on_delta=first.append)
    again: list[Delta] = []
    hit = await pipeline.run("count", on_delta=again.append)
    assert len(backend.requests) == 1 and hit.cache_hit == "cache"
    assert "".join(d.text for d in first) == "one two three"
    assert [(d.text, d.finish_reason) for d in again] == [("one two three", "stop")]
    assert hit.completion is not None and miss.completion is not None
    assert again[0].usage == hit.completion.usage == miss.completion.usage
    assert [type(e) for e in hit.events if isinstance(e, (FirstToken, TokenEvent, ModelCall,
                                                          CacheHit))] == [CacheHit]


class Redact:
    """Output guard double: redacts 'secret', blocks answers with 'leak'."""

    @hookimpl
    def aieng_guard_output(self, completion: Completion) -> GuardVerdict | None:
        if "leak" in completion.text:
            return GuardVerdict(action="block", text="I can't share that.")
        if "secret" in completion.text:
            return GuardVerdict(action="redact",
                                text=completion.text.replace("secret", "[REDACTED]"))
        return None


async def test_a_streamed_cache_hit_is_the_guarded_answer(aieng_kernel: Kernel) -> None:
    """A hit has nothing to stream piece by piece, so its one delta waits for the output
    guards: the caller sees the run's answer, redacted or replaced, never the raw entry
    (stored before the guards, which run again on every hit)."""
    cache = PromptCache()
    backend = ScriptedBackend(["the secret"])
    pipeline = aieng_kernel.compose({"cache": cache, "llm": backend, "guard": Redact()})
    await pipeline.run("tell")
    cache.store["spill"] = Completion(text="a leak")  # stored before the guard was added
    told: list[Delta] = []
    redacted = await pipeline.run("tell", on_delta=told.append)
    spilled: list[Delta] = []
    blocked = await pipeline.run("spill", on_delta=spilled.append)
    assert redacted.cache_hit == blocked.cache_hit == "cache" and len(backend.requests) == 1
    assert [(d.text, d.finish_reason) for d in told] == [("the [REDACTED]", "stop")]
    assert blocked.status == "blocked"
    assert [(d.text, d.finish_reason) for d in spilled] == \
        [("I can't share that.", "content_filter")]


async def test_a_cache_hit_hands_its_tool_calls_to_the_callback(aieng_kernel: Kernel) -> None:
    """A cached answer that calls tools reaches a streaming caller with its calls."""
    call = ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2})
    cache = PromptCache()
    cache.store["1 + 2?"] = Completion(text="", finish_reason="tool_calls", tool_calls=[call])
    pipeline = aieng_kernel.compose({"cache": cache, "llm": ScriptedBackend()})
    seen: list[Delta] = []
    result = await pipeline.run("1 + 2?", on_delta=seen.append)
    assert result.cache_hit == "cache"
    assert [(d.text, d.finish_reason, d.tool_calls) for d in seen] == \
        [("", "tool_calls", (call,))]


async def test_a_stream_keeps_the_log_probabilities_of_its_deltas(aieng_kernel: Kernel) -> None:
    """A streamed completion carries its deltas' log-probabilities, one per delta, the
    same as the backend's whole completion (here: one token per delta)."""
    pipeline = aieng_kernel.compose({"llm": Scored()})
    whole = await pipeline.run("go")
    streamed = await pipeline.run("go", on_delta=lambda d: None)
    assert whole.completion is not None and streamed.completion is not None
    assert streamed.model_calls[0].streamed
    assert streamed.completion.logprobs == whole.completion.logprobs
    assert streamed.completion.logprobs == tuple(TokenLogprob(t, p) for t, p in TOKENS)


async def test_a_stream_with_a_delta_missing_its_log_probability_has_none(
        aieng_kernel: Kernel) -> None:
    """Log-probabilities for only some of the text are none at all: never a partial list
    that reads as the whole completion's."""

    class Partial:
        @hookimpl
        def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
            async def deltas() -> AsyncIterator[Delta]:
                yield Delta("one", 0, logprob=-0.5)
                yield Delta(" two", 1)
                yield Delta("", 2, "stop")
            return deltas()

    plain = await aieng_kernel.compose({"llm": ScriptedBackend(["one two"])}).run(
        "go", on_delta=lambda d: None)
    partial = await aieng_kernel.compose({"llm": Partial()}).run("go", on_delta=lambda d: None)
    assert plain.completion is not None and plain.completion.logprobs is None
    assert partial.completion is not None and partial.completion.text == "one two"
    assert partial.completion.logprobs is None


async def test_a_backend_that_does_not_stream_keeps_its_log_probabilities(
        aieng_kernel: Kernel) -> None:
    """Streamed over a backend that only answers whole, the run's completion is the
    backend's, per-token log-probabilities included."""
    seen: list[Delta] = []
    result = await aieng_kernel.compose({"llm": WholeOnly()}).run("go", on_delta=seen.append)
    assert result.completion is not None
    assert result.completion.logprobs == tuple(TokenLogprob(t, p) for t, p in TOKENS)
    assert [d.text for d in seen] == ["one two three"]


async def test_a_streamed_answer_is_cached_with_its_log_probabilities(
        aieng_kernel: Kernel) -> None:
    """What a streamed run stores is what a hit gives back: log-probabilities included."""
    pipeline = aieng_kernel.compose({"cache": PromptCache(), "llm": Scored()})
    await pipeline.run("go", on_delta=lambda d: None)
    hit = await pipeline.run("go")
    assert hit.cache_hit == "cache" and hit.completion is not None
    assert hit.completion.logprobs == tuple(TokenLogprob(t, p) for t, p in TOKENS)


class Spelled:
    """A backend streaming its answer word by word."""

    def __init__(self, text: str) -> None:
        self.text = text

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        return Completion(text=self.text)

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
        async def deltas() -> AsyncIterator[Delta]:
            words = self.text.split(" ")
            for index, word in enumerate(words):
                last = index == len(words) - 1
                yield Delta(word if index == 0 else f" {word}", index,
                            "stop" if last else None)
        return deltas()


async def test_output_guards_hold_a_stream_back(aieng_kernel: Kernel) -> None:
    """With output guards a streaming caller gets the guarded answer, as one delta, once
    the guards have passed it: a redacting guard that text already sent cannot redact
    (the gateway streamed unredacted personal data). The backend still streams: time to
    first token and token events are measured as without guards."""
    pipeline = aieng_kernel.compose({"llm": Spelled("the secret plan"), "guard": Redact()})
    seen: list[Delta] = []
    result = await pipeline.run("tell", on_delta=seen.append)
    assert [(d.text, d.finish_reason) for d in seen] == [("the [REDACTED] plan", "stop")]
    assert result.answer == "the [REDACTED] plan"
    assert result.model_calls[0].ttft_s is not None
    assert len([e for e in result.events if isinstance(e, TokenEvent)]) == 3
    leaked: list[Delta] = []
    blocked = await aieng_kernel.compose(
        {"llm": Spelled("a leak here"), "guard": Redact()}).run("x", on_delta=leaked.append)
    assert blocked.status == "blocked"
    assert [(d.text, d.finish_reason) for d in leaked] == \
        [("I can't share that.", "content_filter")]


async def test_a_live_stream_passes_deltas_before_the_guards(aieng_kernel: Kernel) -> None:
    """``stream = "live"`` is the choice of latency over the guards: deltas as they come,
    the guards after (the result is still guarded); without output guards every stream is
    live."""
    live = aieng_kernel.compose({"llm": Spelled("the secret plan"), "guard": Redact()},
                                stream="live")
    seen: list[Delta] = []
    result = await live.run("tell", on_delta=seen.append)
    assert [d.text for d in seen] == ["the", " secret", " plan"]
    assert result.answer == "the [REDACTED] plan"
    plain: list[Delta] = []
    await aieng_kernel.compose({"llm": Spelled("the secret plan")}).run(
        "tell", on_delta=plain.append)
    assert [d.text for d in plain] == ["the", " secret", " plan"]


async def test_stream_mode_is_validated(aieng_kernel: Kernel) -> None:
    """An unknown stream mode is a configuration error naming the key and the choices."""
    from aieng_core import ConfigError

    with pytest.raises(ConfigError, match="pipeline.stream"):
        aieng_kernel.compose({"llm": Spelled("x")}, stream="fast")


async def test_a_cancelled_run_lets_the_stream_clean_up(aieng_kernel: Kernel) -> None:
    """A run cancelled while its caller handles a delta still runs the stream's own
    cleanup to its end, awaits included (a batcher's slot, an HTTP response to close)."""
    import anyio

    cleaned: list[str] = []

    class Cleans:
        @hookimpl
        def aieng_generate(self, request: Request) -> Completion:
            return Completion(text="x")

        @hookimpl
        def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
            async def deltas() -> AsyncIterator[Delta]:
                try:
                    for index in range(100):
                        yield Delta(f"t{index}", index)
                finally:
                    await anyio.sleep(0.01)  # cleanup that awaits
                    cleaned.append("done")
            return deltas()

    pipeline = aieng_kernel.compose({"llm": Cleans()})
    with anyio.CancelScope() as scope:
        async def stop(delta: Delta) -> None:
            if delta.index == 2:
                scope.cancel()
                await anyio.sleep(1)  # cancelled here
        await pipeline.run("go", on_delta=stop)
    assert scope.cancelled_caught and cleaned == ["done"]


@pytest.mark.parametrize("model", ["m-9", None])
async def test_the_first_token_names_the_model_the_call_names(aieng_kernel: Kernel,
                                                              model: str | None) -> None:
    """backend.first_token carries the request's model, as backend.call's parameters do,
    so a stream cut short before its backend.call can still be priced by model."""
    pipeline = aieng_kernel.compose({"llm": ScriptedBackend(["one two"])})
    request = Request(messages=[Message("user", "count")], model=model)
    result = await pipeline.run(request, on_delta=lambda delta: None)
    [first] = [e for e in result.events if isinstance(e, FirstToken)]
    [call] = [e for e in result.events if isinstance(e, ModelCall)]
    assert first.model == (call.parameters["model"] or "") == (model or "")


class Buffered:
    """A backend whose stream never waits: ten deltas already at hand (an HTTP client's
    buffer under load), so fetching the next one is no checkpoint."""

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
        async def deltas() -> AsyncIterator[Delta]:
            for index in range(10):
                yield Delta(f"w{index} ", index, "stop" if index == 9 else None)
        return deltas()


async def test_a_caller_that_cancels_in_on_delta_gets_no_further_delta(
        aieng_kernel: Kernel) -> None:
    """A caller cancelling its run from ``on_delta`` (a client that has seen enough) gets
    no delta after that one, and the run counts no token it did not deliver, even when
    the stream's next deltas need no wait (the kernel went on delivering them: a load
    test's client counted a token more than it was shown)."""
    capture = EventCapture(aieng_kernel)
    pipeline = aieng_kernel.compose({"llm": Buffered()}, stages=["generate"])
    shown: list[str] = []
    with anyio.CancelScope() as scope:
        def on_delta(delta: Delta) -> None:
            shown.append(delta.text)
            if len(shown) == 3:
                scope.cancel()

        await pipeline.run("q", on_delta=on_delta)
    await settle(lambda: any(e.name == "run.finished" for e in capture.events))
    capture.close()
    assert scope.cancelled_caught and shown == ["w0 ", "w1 ", "w2 "]
    assert [e.text for e in capture.of(TokenEvent)] == shown
