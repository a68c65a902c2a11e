"""The kit's doubles in a long test: ``ScriptedBackend``, ``HookRecorder`` and
``EventCapture`` keep every record by default (a test reads them all); with ``keep=`` they
hold the latest few, so a test of thousands of calls measures the component, not them."""

from __future__ import annotations

import pytest
from aieng_hookspecs.types import Message, Request

from aieng_core.testing import (
    EventCapture,
    HookRecorder,
    ScriptedBackend,
    ameasure_growth,
    isolated_kernel,
)


def _request(i: int) -> Request:
    return Request(messages=(Message("user", f"question {i} " + "q" * 60),))


@pytest.mark.anyio
async def test_a_scripted_backend_with_keep_holds_the_latest_requests() -> None:
    """2,000 generations with keep=3: the double retains nothing per call (it held every
    request: a few hundred bytes a call, which a long test then blamed on the component),
    holds the latest three, counts them all, and goes on through its script as before."""
    backend = ScriptedBackend(["one", "two", "three"], keep=3)
    growth = await ameasure_growth(lambda i: backend.aieng_generate(_request(i)),
                                   warmup=50, calls=2_000)
    assert growth.per_call < 16, growth.report()
    assert [r.messages[0].content.split()[1] for r in backend.requests] == [
        "2047", "2048", "2049"]
    assert backend.calls == 2_050
    completion = await backend.aieng_generate(_request(0))
    assert completion is not None and completion.text == "three"
    unbounded = ScriptedBackend(["a", "b"])
    first = await unbounded.aieng_generate(_request(1))
    second = await unbounded.aieng_generate(_request(2))
    assert (first.text, second.text, len(unbounded.requests)) == ("a", "b", 2)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="keep"):
        ScriptedBackend(keep=-1)


@pytest.mark.anyio
async def test_a_recorder_and_a_capture_with_keep_hold_the_latest() -> None:
    """A pipeline run 1,500 times under a HookRecorder and an EventCapture given keep=:
    what they hold stays at that many (they grew by every hook call and event), and they
    count everything they saw."""
    async with isolated_kernel() as kernel:
        recorder = HookRecorder(kernel, keep=5)
        capture = EventCapture(kernel, keep=7)
        pipeline = kernel.compose({"llm": ScriptedBackend(keep=1)}, name="long")
        try:
            # warm-up past the dispatcher's record of recent calls (a deque of 1,024)
            growth = await ameasure_growth(lambda i: pipeline.run(f"question {i}"),
                                           warmup=1_200, calls=1_500)
        finally:
            recorder.close()
            capture.close()
            await pipeline.aclose()
        assert len(recorder.records) == 5 and recorder.count >= 2_700
        assert len(capture.events) == 7 and capture.count >= 2_700
        assert growth.per_call < 64, growth.report()
    with pytest.raises(ValueError, match="keep"):
        HookRecorder(kernel, keep=True)  # type: ignore[arg-type]
