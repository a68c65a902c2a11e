"""The aieng ``openai`` plugin (an OpenAI client) talking to the gateway over loopback:
a pipeline whose backend is the openai component pointed at ``aieng serve``."""

from __future__ import annotations

from typing import Any

import pytest
from _support import LoopbackServer
from aieng_gateway import Gateway
from aieng_hookspecs.types import Message, Request, ToolCall, ToolSpec
from aieng_openai import OpenAIBackend, OpenAIOptions

from aieng_core import HookError
from aieng_core.testing import isolated_kernel

pytestmark = pytest.mark.anyio


def _backend(server: LoopbackServer, key: str, **options: Any) -> OpenAIBackend:
    return OpenAIBackend(OpenAIOptions(base_url=f"{server.url}/v1", model="test", api_key=key,
                                       embedding_model="hash", max_retries=0,
                                       read_timeout=20.0, **options))


async def test_openai_client_generates_streams_and_embeds(
        served: tuple[Gateway, LoopbackServer], api_key: str) -> None:
    """Completion, SSE stream (with usage) and embeddings all round-trip through the
    gateway with the OpenAI wire format the client expects."""
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        backend = _backend(served[1], api_key)
        pipe = kernel.compose({"remote": backend}, name="client")
        result = await pipe.run("ping over http")
        assert result.completion is not None
        assert result.completion.text == "You said: ping over http"
        assert result.completion.usage.completion_tokens == 5
        pieces: list[str] = []
        streamed = await pipe.run(Request(messages=(Message("user", "stream this"),),
                                          max_tokens=3), on_delta=lambda d: pieces.append(d.text))
        assert streamed.completion is not None
        assert "".join(pieces) == streamed.completion.text == "You said: stream"
        assert streamed.completion.finish_reason == "length"
        assert streamed.completion.usage.completion_tokens == 3
        vectors = await backend.aieng_embed(["a b", "c"], None)
        assert vectors is not None and len(vectors) == 2 and len(vectors[0]) == 16
        await pipe.aclose()


async def test_openai_client_gets_tool_calls_generated_and_streamed(
        served: tuple[Gateway, LoopbackServer], api_key: str) -> None:
    """aieng's OpenAI client sends tools, ``tool_choice`` and ``parallel_tool_calls``
    (from metadata) and a conversation with calls through the gateway, and gets the
    backend's calls back, generated and streamed (put together on the last delta)."""
    weather = ToolSpec(name="get_weather", parameters={
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    earlier = ToolCall(id="call_0", name="get_weather", arguments={"city": "Oslo"})
    request = Request(messages=(Message("user", "Oslo?"),
                                Message("assistant", "", tool_calls=(earlier,)),
                                Message("tool", "-3 C", tool_call_id="call_0"),
                                Message("user", "Rome?")),
                      tools=(weather,), metadata={"tool_choice": "required",
                                                  "parallel_tool_calls": True})
    expected = {"prompt": "Rome?", "choice": "required", "parallel": True,
                "roles": ["user", "assistant", "tool", "user"],
                "earlier": [["get_weather", {"city": "Oslo"}]]}
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        pipe = kernel.compose({"remote": _backend(served[1], api_key)}, name="tools")
        generated = await pipe.run(request)
        streamed = await pipe.run(request, on_delta=lambda d: None)
        for result in (generated, streamed):
            assert result.completion is not None
            assert result.completion.finish_reason == "tool_calls"
            assert result.completion.text == "Calling."
            assert [(c.id, c.name, c.arguments) for c in result.completion.tool_calls] == [
                ("call_1", "get_weather", expected)]
        await pipe.aclose()


async def test_openai_client_sees_gateway_errors(
        served: tuple[Gateway, LoopbackServer], api_key: str) -> None:
    """A wrong key and an upstream failure reach the client as errors that say why."""
    async with isolated_kernel(loop_block_threshold=None) as kernel:
        wrong = kernel.compose({"remote": _backend(served[1], "aieng-00000000-" + "x" * 43)},
                               name="wrong")
        with pytest.raises(HookError, match="401"):
            await wrong.run("hi")
        failing = kernel.compose({"remote": _backend(served[1], api_key)}, name="failing")
        with pytest.raises(HookError, match="upstream refused the connection"):
            await failing.run("FAIL please")
        # A stream failing before its first token: the gateway's 502 with its JSON body.
        with pytest.raises(HookError, match="502.*upstream refused the connection"):
            await failing.run("FAIL please", on_delta=lambda d: None)
        for pipe in (wrong, failing):
            await pipe.aclose()
