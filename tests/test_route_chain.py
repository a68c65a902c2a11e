"""A route is a chain: target, then fallbacks, whatever the stage's policy; a stream that
fails before its first delta falls back; judges' scores reach the bus."""

from __future__ import annotations

import pytest

from aieng_core import HookError, Kernel
from aieng_core.testing import EventCapture
from aieng_core.testing.doubles import FixedRouter, ScriptedBackend
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Delta, ErrorEvent, JudgeScored, Request, Sample, Score

pytestmark = pytest.mark.anyio


def _backends(*failing: str) -> dict[str, ScriptedBackend]:
    return {name: ScriptedBackend([f"from {name}"],
                                  fail_with=RuntimeError(f"{name} down") if name in failing
                                  else None)
            for name in ("a", "b", "c")}


@pytest.mark.parametrize("on_error", ["fail", "skip", "fallback"])
@pytest.mark.parametrize("stream", [False, True])
async def test_route_fallbacks_are_tried_in_order_under_any_policy(
        aieng_kernel: Kernel, on_error: str, stream: bool) -> None:
    """The target fails; the first fallback fails; the second answers — whatever the policy."""
    backends = _backends("c", "a")
    pipeline = aieng_kernel.compose({"router": FixedRouter("c", "a", "b"), **backends},
                                    stage={"generate": {"on_error": on_error}})
    deltas: list[Delta] = []
    result = await pipeline.run("hello", on_delta=deltas.append if stream else None)
    assert result.answer == "from b"
    assert result.model_calls[0].component == "b"
    assert [len(backends[n].requests) for n in "abc"] == [1, 1, 1]
    assert "".join(d.text for d in deltas) == ("from b" if stream else "")
    failed = [e.plugin for e in result.events if isinstance(e, ErrorEvent)]
    assert failed == ["c", "a"]


async def test_backends_left_out_of_the_route_are_never_tried(aieng_kernel: Kernel) -> None:
    """A backend the router left out (say its circuit is open) is not tried even under
    ``fallback``: when the whole chain fails, the run fails."""
    backends = _backends("a", "b")
    pipeline = aieng_kernel.compose({"router": FixedRouter("a", "b"), **backends},
                                    stage={"generate": {"on_error": "fallback"}})
    with pytest.raises(HookError, match="b down"):
        await pipeline.run("hello")
    assert not backends["c"].requests


async def test_a_stream_failing_after_its_first_delta_is_final(aieng_kernel: Kernel) -> None:
    """Text already delivered cannot be taken back: no fallback after the first delta."""

    class Breaks:
        @hookimpl
        def aieng_stream(self, request: Request) -> object:
            async def deltas() -> object:
                yield Delta(text="partial", index=0)
                raise RuntimeError("connection reset")
            return deltas()

    spare = ScriptedBackend(["spare"])
    pipeline = aieng_kernel.compose({"broken": Breaks(), "spare": spare},
                                    stage={"generate": {"on_error": "fallback"}})
    seen: list[str] = []
    with pytest.raises(HookError, match="connection reset"):
        await pipeline.run("hello", on_delta=lambda d: seen.append(d.text))
    assert seen == ["partial"]
    assert not spare.requests


async def test_a_stream_failing_before_any_delta_falls_back_and_is_published(
        aieng_kernel: Kernel, captured_events: EventCapture) -> None:
    """Under ``fallback``, a stream that fails at once gives way to the next backend, and the
    failure is an ``error`` event like any failed call (routers and monitors count it)."""
    backends = _backends("a")
    pipeline = aieng_kernel.compose(dict(backends), stage={"generate": {"on_error": "fallback"}})
    result = await pipeline.run("hello", on_delta=lambda d: None)
    assert result.answer == "from b"
    errors = [e for e in result.events if isinstance(e, ErrorEvent)]
    assert [(e.plugin, e.hook, e.stage) for e in errors] == [("a", "aieng_stream", "generate")]


async def test_judge_scores_are_published(aieng_kernel: Kernel) -> None:
    """Each judge's scores reach the bus as one ``judge.scored`` event."""

    class Words:
        @hookimpl
        def aieng_judge(self, sample: Sample) -> list[Score]:
            return [Score(name="words", value=len(sample.output.split()))]

    pipeline = aieng_kernel.compose({"llm": ScriptedBackend(["two words"]), "judge": Words()})
    result = await pipeline.run("x")
    scored = [e for e in result.events if isinstance(e, JudgeScored)]
    assert [(e.component, e.scores) for e in scored] == [
        ("judge", (Score(name="words", value=2),))]
    assert result.scores == (Score(name="words", value=2, judge="judge"),)


async def test_a_given_context_reaches_the_judges(aieng_kernel: Kernel) -> None:
    """``run(context=...)`` replaces the retrieved hits as the judges' ``Sample.context``."""
    seen: list[tuple[str, ...]] = []

    class Grounded:
        @hookimpl
        def aieng_judge(self, sample: Sample) -> None:
            seen.append(sample.context)

    pipeline = aieng_kernel.compose({"llm": ScriptedBackend(["a"]), "judge": Grounded()})
    await pipeline.run("x", context=["passage one", "passage two"])
    await pipeline.run("x")
    assert seen == [("passage one", "passage two"), ()]
