"""A streamed completion names the model, as a whole one does (``Delta.model``)."""

from __future__ import annotations

import pytest
from aieng_hookspecs.types import Delta, Message, Request
from aieng_transformers import GenerationStream, SmolLM2Backend

from aieng_core import Kernel

pytestmark = pytest.mark.anyio


async def test_each_delta_names_the_model(chain_backend: SmolLM2Backend) -> None:
    stream = chain_backend.aieng_stream(Request(messages=(Message("user", "hi"),)))
    assert isinstance(stream, GenerationStream)
    deltas = [delta async for delta in stream]
    assert deltas and {d.model for d in deltas} == {chain_backend.model}


async def test_streamed_and_plain_runs_name_the_same_model(
        aieng_kernel: Kernel, chain_backend: SmolLM2Backend) -> None:
    pipeline = aieng_kernel.compose({"llm": chain_backend})
    plain = await pipeline.run("hi")
    seen: list[Delta] = []
    streamed = await pipeline.run("hi", on_delta=seen.append)
    assert plain.completion is not None and streamed.completion is not None
    assert plain.completion.model == chain_backend.model != ""
    assert streamed.completion.model == plain.completion.model
    assert streamed.completion.text == plain.completion.text
