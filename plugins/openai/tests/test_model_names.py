"""The model a completion names: a streamed run's is the one a run that does not stream
gets (the server's ``model``, else the one asked for), whatever the server sends."""

from __future__ import annotations

import json
from typing import Any

import aieng_openai
import pytest
from _openai_double import CHAT_MODEL, OTHER_MODEL, LoopbackServer, OpenAIServerDouble, Scripted
from aieng_hookspecs.types import Delta, Message, Request

from aieng_core import Kernel
from aieng_core.pipeline import RunResult

pytestmark = pytest.mark.anyio


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> str:
    delta = {} if content is None else {"content": content}
    return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}], **extra})


def whole(text: str, **extra: Any) -> str:
    return json.dumps({"object": "chat.completion", **extra, "choices": [{
        "index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                                                         "content": text}}]})


async def both(kernel: Kernel, backend: Any, question: str | Request = "hi"
               ) -> tuple[RunResult, RunResult, list[Delta]]:
    """A plain run, then a streamed one, of the same question."""
    pipeline = kernel.compose({"llm": backend})
    async with pipeline:
        plain = await pipeline.run(question)
        seen: list[Delta] = []
        streamed = await pipeline.run(question, on_delta=seen.append)
    return plain, streamed, seen


def model_of(result: RunResult) -> str:
    assert result.status == "ok" and result.completion is not None
    return result.completion.model


async def test_the_servers_model_names_both(aieng_kernel: Kernel, double: OpenAIServerDouble,
                                            make_backend: Any) -> None:
    """The double names the model asked for, in its JSON answer and in every chunk."""
    plain, streamed, _ = await both(aieng_kernel, make_backend())
    assert model_of(plain) == model_of(streamed) == CHAT_MODEL
    other = Request(messages=(Message("user", "hi"),), model=OTHER_MODEL)
    plain, streamed, _ = await both(aieng_kernel, make_backend(models=[OTHER_MODEL]), other)
    assert model_of(plain) == model_of(streamed) == OTHER_MODEL


async def test_a_gateway_naming_its_own_model(aieng_kernel: Kernel,
                                              double: OpenAIServerDouble,
                                              make_backend: Any) -> None:
    """A server (a gateway) answering with another name than the one asked for: both
    runs name the server's, which the stream's deltas carry."""
    double.script("chat/completions", Scripted(body=whole("ok", model="srv")),
                  Scripted(sse=(chunk("o", model="srv"), "", chunk("k", model="srv"), "",
                                chunk(finish="stop", model="srv"), "", "data: [DONE]", "")))
    plain, streamed, seen = await both(aieng_kernel, make_backend())
    assert model_of(plain) == model_of(streamed) == "srv"
    assert streamed.answer == plain.answer == "ok"
    assert seen[-1].model == "srv"


async def test_a_stream_naming_no_model_falls_back_as_a_whole_answer_does(
        aieng_kernel: Kernel, double: OpenAIServerDouble, make_backend: Any) -> None:
    """Chunks without ``model`` (some servers): the model asked for, as for a JSON
    answer without one."""
    double.script("chat/completions", Scripted(body=whole("ok")),
                  Scripted(sse=(chunk("ok"), "", chunk(finish="stop"), "", "data: [DONE]")))
    plain, streamed, _ = await both(aieng_kernel, make_backend())
    assert model_of(plain) == model_of(streamed) == CHAT_MODEL


async def test_the_model_named_by_the_first_chunk_only(
        aieng_kernel: Kernel, double: OpenAIServerDouble, make_backend: Any) -> None:
    """A name on the first chunk only is not lost by the later ones."""
    double.script("chat/completions", Scripted(body=whole("ok", model="first")),
                  Scripted(sse=(chunk("ok", model="first"), "", chunk(finish="stop"), "",
                                "data: [DONE]")))
    plain, streamed, _ = await both(aieng_kernel, make_backend())
    assert model_of(plain) == model_of(streamed) == "first"


async def test_a_server_that_ignores_stream_names_its_model(
        aieng_kernel: Kernel, double: OpenAIServerDouble, make_backend: Any) -> None:
    """A streamed request answered with one JSON completion: its ``model`` all the same."""
    double.script("chat/completions", Scripted(body=whole("ok", model="srv")),
                  Scripted(body=whole("ok", model="srv")))
    plain, streamed, seen = await both(aieng_kernel, make_backend())
    assert model_of(plain) == model_of(streamed) == "srv"
    assert {d.model for d in seen} == {"srv"}


async def test_through_a_pipeline_file(aieng_kernel: Kernel, register_plugin: Any,
                                       double: OpenAIServerDouble,
                                       loopback: LoopbackServer) -> None:
    """As a pipeline file composes it (``use = "openai"``)."""
    with register_plugin(aieng_openai, "openai") as info:
        assert info.status == "loaded", info.error
        pipeline = aieng_kernel.pipeline({
            "pipeline": {"name": "remote", "stages": ["generate"]},
            "components": {"llm": {"use": "openai", "base_url": loopback.base_url,
                                   "model": CHAT_MODEL, "api_key": double.api_key}}})
    async with pipeline:
        plain = await pipeline.run("hi")
        streamed = await pipeline.run("hi", on_delta=lambda d: None)
    assert model_of(plain) == model_of(streamed) == CHAT_MODEL
