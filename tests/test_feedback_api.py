"""``Pipeline.feedback``: a user's signal reaches every feedback sink (``aieng_feedback_record``)."""

from __future__ import annotations

import anyio
import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Feedback

from aieng_core import HookError
from aieng_core.kernel import Kernel
from aieng_core.testing import ScriptedBackend

pytestmark = pytest.mark.anyio


class _Sink:
    """A feedback sink double: keeps what it is given."""

    def __init__(self, delay: float = 0.0) -> None:
        self.seen: list[Feedback] = []
        self.delay = delay

    @hookimpl
    async def aieng_feedback_record(self, feedback: Feedback) -> None:
        if self.delay:
            await anyio.sleep(self.delay)
        self.seen.append(feedback)


class _Broken:
    @hookimpl
    def aieng_feedback_record(self, feedback: Feedback) -> None:
        raise OSError("disk full")


async def test_feedback_reaches_every_sink(aieng_kernel: Kernel) -> None:
    """Every sink gets the same Feedback, with metadata; the count of sinks comes back."""
    first, second = _Sink(delay=0.01), _Sink()
    pipeline = aieng_kernel.compose({"llm": ScriptedBackend(), "a": first, "b": second})
    result = await pipeline.run("hi")
    count = await pipeline.feedback(result.run_id, "thumbs", 1.0, "good", user="u1")
    assert count == 2
    for sink in (first, second):
        assert sink.seen == [Feedback(run_id=result.run_id, kind="thumbs", value=1.0,
                                      text="good", metadata={"user": "u1"})]


async def test_feedback_without_sink_says_zero(aieng_kernel: Kernel) -> None:
    """A pipeline with no sink records nothing and says so (0), rather than pretending."""
    pipeline = aieng_kernel.compose({"llm": ScriptedBackend()})
    assert await pipeline.feedback("run-1", "rating", 4) == 0


async def test_invalid_feedback_is_rejected(aieng_kernel: Kernel) -> None:
    """A blank kind or a non-finite value is a ValueError before any sink is called."""
    sink = _Sink()
    pipeline = aieng_kernel.compose({"llm": ScriptedBackend(), "sink": sink})
    with pytest.raises(ValueError):
        await pipeline.feedback("run-1", " ")
    with pytest.raises(ValueError):
        await pipeline.feedback("run-1", "rating", float("nan"))
    assert sink.seen == []


async def test_failing_sink_raises_hook_error(aieng_kernel: Kernel) -> None:
    """A sink's failure is a HookError naming the component, never lost silently."""
    pipeline = aieng_kernel.compose({"llm": ScriptedBackend(), "broken": _Broken()})
    with pytest.raises(HookError, match="broken"):
        await pipeline.feedback("run-1", "thumbs", -1)


async def test_fallback_counts_only_the_sinks_that_recorded(aieng_kernel: Kernel) -> None:
    """Under ``on_error = "fallback"`` a failing sink is not counted as having recorded the
    signal (every sink was counted), and when every sink fails that failure is raised: 0
    means the pipeline has no sink, and a signal recorded nowhere must not look recorded."""
    sink = _Sink()
    pipeline = aieng_kernel.compose({"llm": ScriptedBackend(), "a": sink, "broken": _Broken()},
                                    on_error="fallback")
    assert await pipeline.feedback("run-1", "thumbs", 1.0) == 1
    assert len(sink.seen) == 1
    lost = aieng_kernel.compose({"llm": ScriptedBackend(), "broken": _Broken()},
                                on_error="fallback")
    with pytest.raises(HookError, match="disk full"):
        await lost.feedback("run-1", "thumbs", 1.0)
