"""A model call's timings are the answering backend's own: under fallback, the time a
failed backend took before it gave way is the generate stage's (``RunResult.stages``), not
the ``backend.call`` / ``backend.first_token`` of the backend that answered, which the
monitoring plugin aggregates per backend.

The clock is a hand-moved stand-in for ``time.perf_counter``: the backends move it, so the
numbers are exact and no test measures real time."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from aieng_core import Kernel
from aieng_core.testing import EventCapture
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import (
    Completion,
    Delta,
    FirstToken,
    Message,
    ModelCall,
    Request,
)

pytestmark = pytest.mark.anyio


class Clock:
    """``time.perf_counter`` moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    hand = Clock()
    monkeypatch.setattr(time, "perf_counter", hand)
    return hand


class SlowFailure:
    """Takes 5 s of the clock, then fails (before any delta when streamed)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        self.clock.now += 5.0
        raise RuntimeError("down")

    @hookimpl
    async def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
        self.clock.now += 5.0
        raise RuntimeError("down")
        yield Delta("never", 0)  # pragma: no cover - makes this an async generator


class Answers:
    """Answers after 1 s of the clock; streamed: a first delta after 0.5 s, the last after
    1 s more."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        self.clock.now += 1.0
        return Completion(text="answer")

    @hookimpl
    async def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
        self.clock.now += 0.5
        yield Delta("ans", 0)
        self.clock.now += 1.0
        yield Delta("wer", 1, "stop")


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_fallback_call_is_timed_from_its_own_start(
    aieng_kernel: Kernel, clock: Clock, streamed: bool,
) -> None:
    capture = EventCapture(aieng_kernel)
    pipeline = aieng_kernel.compose(
        {"broken": SlowFailure(clock), "good": Answers(clock)}, stages=["generate"],
        on_error="fallback")
    pieces: list[str] = []
    result = await pipeline.run(
        "q", on_delta=(lambda d: pieces.append(d.text)) if streamed else None)
    capture.close()
    assert result.answer == "answer"
    (call,) = result.model_calls
    assert call.component == "good"
    assert call.duration_s == pytest.approx(1.5 if streamed else 1.0)
    # The stage says what the caller waited: the failure's 5 s included.
    (stage,) = [s for s in result.stages if s.name == "generate"]
    assert stage.duration_s == pytest.approx(6.5 if streamed else 6.0)
    if streamed:
        assert pieces == ["ans", "wer"]
        assert call.ttft_s == pytest.approx(0.5)
        (first,) = capture.of(FirstToken)
        assert first.component == "good" and first.ttft_s == pytest.approx(0.5)
    else:
        assert call.ttft_s is None
    assert [e.component for e in capture.of(ModelCall)] == ["good"]


class Asker:
    """A component that asks the pipeline's backends itself (as query expansion or a
    judge does), through the context it is handed at open."""

    context: PipelineContext

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        self.context = context


async def test_a_component_asking_the_backends_times_the_answering_one(
    aieng_kernel: Kernel, clock: Clock,
) -> None:
    """The ``backend.call`` of a component's own model call (``PipelineContext.generate``)
    is timed the same way."""
    asker = Asker()
    pipeline = aieng_kernel.compose(
        {"asker": asker, "broken": SlowFailure(clock), "good": Answers(clock)},
        stages=["generate"], on_error="fallback")
    await pipeline.open()
    capture = EventCapture(aieng_kernel)
    completion = await asker.context.generate(
        Request(messages=(Message(role="user", content="q"),)))
    capture.close()
    assert completion.text == "answer"
    (call,) = capture.of(ModelCall)
    assert call.component == "good" and call.duration_s == pytest.approx(1.0)
