"""On ONNX Runtime an answer does not depend on what it was batched with either: seeded
sampled and greedy requests decoded in one dynamic batch against each alone and against
the torch ``smollm2``, and embeddings padded beside longer texts against transformers'
own forward on each text alone (fp32)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
import torch
from aieng_hookspecs.types import Completion, Message, Request
from aieng_onnx import (
    MiniLMOnnxEmbedder,
    MiniLMOnnxOptions,
    SmolLM2OnnxBackend,
    SmolLM2OnnxOptions,
)
from aieng_transformers import SmolLM2Backend, SmolLM2Options
from aieng_transformers.testing import random_llama
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModel, AutoTokenizer

pytestmark = pytest.mark.anyio
FIXTURES = [HealthCheck.function_scoped_fixture]


def ask(text: str, **params: Any) -> Request:
    return Request(messages=(Message("user", text),), **params)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_llama(tmp_path_factory.mktemp("random"))


def assert_same(got: Completion, expected: Completion) -> None:
    """Tokens, usage and finish equal; log-probabilities to 1e-4 (the README's parity)."""
    assert (got.text, got.finish_reason, got.usage) == (expected.text, expected.finish_reason,
                                                        expected.usage)
    assert got.logprobs is not None and expected.logprobs is not None
    assert [t.token for t in got.logprobs] == [t.token for t in expected.logprobs]
    np.testing.assert_allclose([t.logprob for t in got.logprobs],
                               [t.logprob for t in expected.logprobs], rtol=0, atol=1e-4)


async def test_seeded_samples_batched_equal_alone_and_torch(llama_dir: Path,
                                                            onnx_cache: Path) -> None:
    """Sampled requests with a seed, batched with a greedy one of another prompt length
    (left padding) and with the same request twice, each get what they get alone on ONNX
    Runtime and on torch: a seed per request, not per batch."""
    options: dict[str, Any] = {"path": str(llama_dir), "cache_dir": str(onnx_cache),
                               "providers": ("cpu",)}
    alone = SmolLM2OnnxBackend(SmolLM2OnnxOptions(**options))
    batched = SmolLM2OnnxBackend(SmolLM2OnnxOptions(**options, max_batch=8, max_wait_ms=50))
    on_torch = SmolLM2Backend(SmolLM2Options(path=str(llama_dir)))
    logprobs = {"logprobs": True}
    sampled = ask("tell me", temperature=1.0, seed=7, max_tokens=20, metadata=logprobs)
    requests = [
        sampled,
        ask("a much longer prompt, é ✓ " * 4, temperature=0.7, top_p=0.9, seed=3,
            max_tokens=20, metadata=logprobs),
        ask("x", max_tokens=20, metadata=logprobs),
        sampled,
    ]
    got: dict[int, Completion] = {}

    async def one(index: int) -> None:
        completion = await batched.aieng_generate(requests[index])
        assert completion is not None
        got[index] = completion

    await batched.aieng_pipeline_open()
    try:
        async with anyio.create_task_group() as group:
            for index in range(len(requests)):
                group.start_soon(one, index)
    finally:
        await batched.aieng_pipeline_close()
    assert batched.batcher().batches < len(requests)
    for index, request in enumerate(requests):
        expected = await alone.aieng_generate(request)
        reference = await on_torch.aieng_generate(request)
        assert expected is not None and reference is not None
        assert_same(got[index], expected)
        assert_same(expected, reference)


WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "rug", "stock", "market", "kitten", "q"]
SHORT = st.lists(st.sampled_from(WORDS), max_size=3).map(" ".join)
LONG = st.lists(st.sampled_from(WORDS), min_size=20, max_size=60).map(" ".join)


@pytest.fixture(scope="module")
def padded(bert_dir: Path, onnx_cache: Path) -> MiniLMOnnxEmbedder:
    """fp32 ``minilm-onnx`` on the tiny BERT, every batch cut every 64 texts (so short
    texts are padded to the long ones'), with dynamic batching."""
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        path=str(bert_dir), cache_dir=str(onnx_cache), providers=("cpu",), batching="fixed",
        batch_size=64, max_batch=64, max_wait_ms=20))
    embedder.load()
    return embedder


@pytest.fixture(scope="module")
def oracle(bert_dir: Path) -> Any:
    """transformers' own BERT on one text alone (no padding): mean of the last hidden
    states, divided by its Euclidean norm in float64."""
    tokenizer: Any = AutoTokenizer.from_pretrained(str(bert_dir))
    model: Any = AutoModel.from_pretrained(str(bert_dir)).eval()

    def vector(text: str) -> np.ndarray:
        with torch.inference_mode():
            hidden = model(**tokenizer([text], return_tensors="pt")).last_hidden_state[0]
        mean = hidden.double().sum(dim=0) / hidden.shape[0]
        return (mean / torch.sqrt((mean * mean).sum())).numpy()

    return vector


@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURES)
@given(calls=st.lists(st.lists(st.one_of(SHORT, LONG), min_size=1, max_size=4), min_size=2,
                      max_size=6))
async def test_a_text_padded_beside_longer_ones_keeps_its_vector(
        padded: MiniLMOnnxEmbedder, oracle: Any, calls: list[list[str]]) -> None:
    """Property: concurrent calls mixing short and long texts share padded passes, and
    every text gets the torch model's vector for it alone (the padding masked out of
    attention and of the mean) to float32 rounding, with norm 1."""
    got: dict[int, np.ndarray] = {}

    async def one(index: int) -> None:
        vectors = await padded.aieng_embed(calls[index], None)
        assert vectors is not None
        got[index] = vectors

    await padded.aieng_pipeline_open()
    try:
        async with anyio.create_task_group() as group:
            for index in range(len(calls)):
                group.start_soon(one, index)
    finally:
        await padded.aieng_pipeline_close()
    for index, texts in enumerate(calls):
        vectors = got[index]
        expected = np.stack([oracle(text) for text in texts])
        assert vectors.shape == expected.shape and vectors.dtype == np.float32
        np.testing.assert_allclose(vectors, expected, rtol=0, atol=2e-6)
        np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float64), axis=1), 1.0,
                                   rtol=0, atol=1e-6)
