"""A streaming caller is answered by the backend a non-streaming one would get: the chain
(the route's, else the backends' order) is walked one backend at a time, each streaming
when it can and answering whole when it cannot."""

from __future__ import annotations

import pytest

from aieng_core import HookError, Kernel
from aieng_core.testing.doubles import FixedRouter, ScriptedBackend
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Delta, ErrorEvent, Message, Request

pytestmark = pytest.mark.anyio


class WholeOnly:
    """A backend without ``aieng_stream``: it answers whole, or fails."""

    def __init__(self, text: str, *, fail: bool = False) -> None:
        self.text = text
        self.fail = fail
        self.calls = 0

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        self.calls += 1
        if self.fail:
            raise RuntimeError(f"{self.text} down")
        return Completion(text=self.text)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_route_target_that_does_not_stream_still_answers_first(
        aieng_kernel: Kernel, stream: bool) -> None:
    """The router chose ``whole``; a streaming caller gets its answer (one delta), not the
    streaming fallback's."""
    whole, spare = WholeOnly("from whole"), ScriptedBackend(["from spare"])
    pipeline = aieng_kernel.compose({"router": FixedRouter("whole", "spare"),
                                     "whole": whole, "spare": spare})
    deltas: list[Delta] = []
    result = await pipeline.run("hi", on_delta=deltas.append if stream else None)
    assert result.answer == "from whole"
    assert result.model_calls[0].component == "whole"
    assert whole.calls == 1 and not spare.requests
    assert [d.text for d in deltas] == (["from whole"] if stream else [])


@pytest.mark.parametrize("stream", [False, True])
async def test_without_a_route_the_first_backend_answers_streaming_or_not(
        aieng_kernel: Kernel, stream: bool) -> None:
    """Backends are asked in file order whether the caller streams or not."""
    whole, spare = WholeOnly("from whole"), ScriptedBackend(["from spare"])
    pipeline = aieng_kernel.compose({"whole": whole, "spare": spare})
    result = await pipeline.run("hi", on_delta=(lambda d: None) if stream else None)
    assert result.answer == "from whole"
    assert not spare.requests


@pytest.mark.parametrize("stream", [False, True])
async def test_a_route_falls_back_from_a_failing_whole_backend_to_a_streaming_one(
        aieng_kernel: Kernel, stream: bool) -> None:
    """The target answers whole and fails: the streaming fallback answers, whatever the
    stage's policy, and the failure is published once."""
    whole, spare = WholeOnly("whole", fail=True), ScriptedBackend(["from spare"])
    pipeline = aieng_kernel.compose({"router": FixedRouter("whole", "spare"),
                                     "whole": whole, "spare": spare})
    deltas: list[Delta] = []
    result = await pipeline.run("hi", on_delta=deltas.append if stream else None)
    assert result.answer == "from spare"
    assert "".join(d.text for d in deltas) == ("from spare" if stream else "")
    assert [e.plugin for e in result.events if isinstance(e, ErrorEvent)] == ["whole"]


async def test_a_streamed_chain_that_fails_whole_raises_the_last_failure(
        aieng_kernel: Kernel) -> None:
    """Every backend of the route fails: the run fails with the last one's error."""
    first = ScriptedBackend(["x"], fail_with=RuntimeError("stream down"))
    last = WholeOnly("whole", fail=True)
    pipeline = aieng_kernel.compose({"router": FixedRouter("first", "last"),
                                     "first": first, "last": last})
    with pytest.raises(HookError, match="whole down"):
        await pipeline.run("hi", on_delta=lambda d: None)
    assert len(first.requests) == 1 and last.calls == 1


async def test_a_streamed_run_where_no_backend_answers_says_so(aieng_kernel: Kernel) -> None:
    """Every backend passes (``None``): the stage fails with "no backend answered"."""
    pipeline = aieng_kernel.compose({"llm": ScriptedBackend(["x"], model="other")})
    with pytest.raises(HookError, match="no backend answered"):
        await pipeline.run(Request(messages=(Message("user", "hi"),), model="mine"),
                           on_delta=lambda d: None)
