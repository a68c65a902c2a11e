"""A streamed run names the model that answered, as a run that does not stream does:
``Delta.model`` (the last non-empty one wins) becomes the streamed ``Completion.model``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Delta, Message, Request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aieng_core import Kernel
from aieng_core.testing import isolated_kernel
from aieng_core.testing import strategies as kit
from aieng_core.testing.doubles import PromptCache, ScriptedBackend

pytestmark = pytest.mark.anyio


class Named:
    """A backend streaming deltas whose ``model`` fields are given (one per delta)."""

    def __init__(self, models: list[str]) -> None:
        self.models = models

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
        async def deltas() -> AsyncIterator[Delta]:
            last = len(self.models) - 1
            for index, model in enumerate(self.models):
                yield Delta(f"w{index} ", index, "stop" if index == last else None,
                            model=model)
        return deltas()


class WholeOnly:
    """A backend that does not stream: the kernel hands its answer over as one delta."""

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        return Completion(text="all at once", model="whole-7b")


def test_delta_model_is_optional_and_checked() -> None:
    assert Delta("x").model == ""
    assert Delta("x", model="m").model == "m"
    with pytest.raises(TypeError):
        Delta("x", model=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("models", "expected"), [
    (["m1", "", ""], "m1"),            # on the first delta only
    (["", "", "m3"], "m3"),            # on the last delta only
    (["a", "b", ""], "b"),             # the last non-empty one wins
    (["", "", ""], ""),                # none named: none known
])
async def test_the_streamed_completion_takes_the_deltas_model(
        aieng_kernel: Kernel, models: list[str], expected: str) -> None:
    pipeline = aieng_kernel.compose({"llm": Named(models)})
    seen: list[Delta] = []
    result = await pipeline.run("q", on_delta=seen.append)
    assert [d.model for d in seen] == models
    assert result.completion is not None and result.completion.model == expected


async def test_a_whole_answer_streams_as_one_delta_naming_its_model(
        aieng_kernel: Kernel) -> None:
    pipeline = aieng_kernel.compose({"llm": WholeOnly()})
    seen: list[Delta] = []
    result = await pipeline.run("q", on_delta=seen.append)
    assert [(d.text, d.model) for d in seen] == [("all at once", "whole-7b")]
    assert result.completion is not None and result.completion.model == "whole-7b"


@pytest.mark.parametrize("model", [None, "tiny-1b"])
async def test_scripted_backend_names_its_model_streamed_and_not(
        aieng_kernel: Kernel, model: str | None) -> None:
    pipeline = aieng_kernel.compose({"llm": ScriptedBackend(["one two three"], model=model)})
    plain = await pipeline.run("q")
    streamed = await pipeline.run("q", on_delta=lambda d: None)
    assert plain.completion is not None and streamed.completion is not None
    assert streamed.completion.model == plain.completion.model == (model or "scripted")
    assert streamed.completion == plain.completion


async def test_a_streamed_miss_is_cached_and_replayed_with_its_model(
        aieng_kernel: Kernel) -> None:
    """The cache stores the streamed completion: its model too, and a hit (streamed or
    not) names it."""
    backend = ScriptedBackend(["one two three"], model="tiny-1b")
    pipeline = aieng_kernel.compose({"cache": PromptCache(), "llm": backend})
    miss = await pipeline.run("count", on_delta=lambda d: None)
    seen: list[Delta] = []
    hit = await pipeline.run("count", on_delta=seen.append)
    plain_hit = await pipeline.run("count")
    assert len(backend.requests) == 1 and hit.cache_hit == "cache"
    for result in (miss, hit, plain_hit):
        assert result.completion is not None and result.completion.model == "tiny-1b"
    assert [d.model for d in seen] == ["tiny-1b"]


EXTRACTIVE = '[pipeline]\nname = "t"\n[components.llm]\nuse = "extractive"\n'


@pytest.mark.parametrize("max_tokens", [256, 3])
async def test_extractive_backend_streams_the_completion_it_answers_whole(
        aieng_kernel: Kernel, tmp_path: Path, max_tokens: int) -> None:
    """Through a TOML pipeline, as a user composes it: the streamed completion is the
    plain one, its model and its usage (prompt tokens included) too, cut or not."""
    path = tmp_path / "p.toml"
    path.write_text(EXTRACTIVE, encoding="utf-8")
    pipeline = aieng_kernel.load_pipeline(path)
    request = Request(messages=(Message("user", "what is aieng and why so small?"),),
                      max_tokens=max_tokens)
    plain = await pipeline.run(request)
    streamed = await pipeline.run(request, on_delta=lambda d: None)
    assert plain.completion is not None and streamed.completion is not None
    assert plain.completion.model == "extractive"
    assert plain.completion.usage.prompt_tokens > 0
    assert streamed.completion == plain.completion


async def test_many_streamed_runs_at_once_each_name_the_model(aieng_kernel: Kernel) -> None:
    """Concurrent streamed runs on one pipeline: no run's model leaks into another's."""
    pipeline = aieng_kernel.compose({
        "a": ScriptedBackend(["alpha beta"], model="model-a"),
        "b": ScriptedBackend(["gamma delta"], model="model-b"),
    })
    found: dict[int, str] = {}

    async def one(n: int) -> None:
        name = "model-a" if n % 2 else "model-b"
        request = Request(messages=(Message("user", f"q{n}"),), model=name)
        result = await pipeline.run(request, on_delta=lambda d: None)
        assert result.completion is not None
        found[n] = result.completion.model

    async with anyio.create_task_group() as group:
        for n in range(20):
            group.start_soon(one, n)
    assert found == {n: "model-a" if n % 2 else "model-b" for n in range(20)}


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(models=st.lists(st.sampled_from(["", "m", "ü-模型", "srv"]), min_size=1, max_size=6))
def test_the_last_named_model_wins_whatever_the_pattern(models: list[str]) -> None:
    async def main() -> str:
        async with isolated_kernel() as kernel:
            result = await kernel.compose({"llm": Named(models)}).run(
                "q", on_delta=lambda d: None)
        assert result.completion is not None
        return result.completion.model

    expected = next((m for m in reversed(models) if m), "")
    assert anyio.run(main) == expected


def test_the_delta_strategy_names_models() -> None:
    """The kit's strategy generates the new field (non-empty and empty)."""
    seen: set[bool] = set()

    @settings(max_examples=200, deadline=None)
    @given(kit.deltas())
    def check(delta: Delta) -> None:
        assert isinstance(delta.model, str)
        seen.add(bool(delta.model))

    check()
    assert seen == {True, False}
