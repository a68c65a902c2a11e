"""An answer does not depend on what it was batched with: float32 greedy and seeded
sampled decoding through the dynamic batcher (left-padded prompts of other lengths)
against each request alone, log-probabilities to the README's stated tolerance, and
embeddings batched with longer texts against the model's own forward on each text alone
(an independent oracle: transformers' ``BertModel``, no padding, no packing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
import torch
from aieng_hookspecs.types import Completion, Message, Request
from aieng_transformers import MiniLMEmbedder, MiniLMOptions, SmolLM2Backend, SmolLM2Options
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio
FIXTURES = [HealthCheck.function_scoped_fixture]
#: The README's bound on a float32 log-probability batched against alone (measured:
#: at most 4.8e-7 on the tiny models).
LOGPROB_TOLERANCE = 1e-5


def ask(text: str, **params: Any) -> Request:
    return Request(messages=(Message("user", text),), **params)


@pytest.fixture(scope="module")
def plain(random_dir: Path) -> SmolLM2Backend:
    backend = SmolLM2Backend(SmolLM2Options(path=str(random_dir)))
    backend.load()
    return backend


@pytest.fixture(scope="module")
def batched(random_dir: Path) -> SmolLM2Backend:
    backend = SmolLM2Backend(SmolLM2Options(path=str(random_dir), max_batch=8,
                                            max_wait_ms=20))
    backend.load()
    return backend


async def concurrently(backend: SmolLM2Backend, requests: list[Request]) -> list[Completion]:
    """``requests`` sent at once to ``backend`` (its batcher running)."""
    got: dict[int, Completion] = {}

    async def one(index: int) -> None:
        completion = await backend.aieng_generate(requests[index])
        assert completion is not None
        got[index] = completion

    await backend.aieng_pipeline_open()
    try:
        async with anyio.create_task_group() as group:
            for index in range(len(requests)):
                group.start_soon(one, index)
    finally:
        await backend.aieng_pipeline_close()
    return [got[index] for index in range(len(requests))]


def assert_same(got: Completion, expected: Completion) -> None:
    assert (got.text, got.finish_reason, got.usage) == (expected.text, expected.finish_reason,
                                                        expected.usage)
    assert got.logprobs is not None and expected.logprobs is not None
    assert [t.token for t in got.logprobs] == [t.token for t in expected.logprobs]
    np.testing.assert_allclose([t.logprob for t in got.logprobs],
                               [t.logprob for t in expected.logprobs],
                               rtol=0, atol=LOGPROB_TOLERANCE)


REQUEST = st.builds(
    lambda text, tokens, temperature, seed: ask(
        text, max_tokens=tokens, temperature=temperature, seed=seed,
        metadata={"logprobs": True}),
    st.text("abc xyz.é\n", max_size=60),
    st.integers(1, 16),
    st.sampled_from([0.0, 0.0, 1.0]),
    st.integers(0, 2**40),
)


@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURES)
@given(requests=st.lists(REQUEST, min_size=2, max_size=6))
async def test_float32_batch_gives_each_request_its_own_answer(
        plain: SmolLM2Backend, batched: SmolLM2Backend, requests: list[Request]) -> None:
    """Property, on the float32 tiny Llama through ``aieng_generate``: requests sent at
    once to a backend with ``max_batch`` (left-padded to the longest prompt, greedy and
    seeded sampled mixed) each get the completion the unbatched backend gives them: the
    same tokens, usage and finish, log-probabilities within the README's tolerance."""
    got = await concurrently(batched, requests)
    for completion, request in zip(got, requests, strict=True):
        expected = await plain.aieng_generate(request)
        assert expected is not None
        assert_same(completion, expected)


async def test_a_seed_is_per_request_not_per_batch(plain: SmolLM2Backend,
                                                   batched: SmolLM2Backend) -> None:
    """The same seeded request three times in one batch, beside others, gets one answer,
    the answer it gets alone; another seed gets another answer."""
    request = ask("tell me", temperature=1.0, seed=7, max_tokens=24, metadata={"logprobs": True})
    other = ask("tell me", temperature=1.0, seed=8, max_tokens=24, metadata={"logprobs": True})
    greedy = ask("a much longer prompt, é " * 4, max_tokens=24, metadata={"logprobs": True})
    before = batched.batcher().batches
    got = await concurrently(batched, [request, greedy, request, other, request])
    assert batched.batcher().batches - before < 5  # some shared a batch
    expected = await plain.aieng_generate(request)
    assert expected is not None
    for completion in (got[0], got[2], got[4]):
        assert_same(completion, expected)
    assert got[3].text != expected.text


# -- embeddings ----------------------------------------------------------------------------

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "rug", "stock", "market", "kitten", "q"]
SHORT = st.lists(st.sampled_from(WORDS), max_size=3).map(" ".join)
LONG = st.lists(st.sampled_from(WORDS), min_size=20, max_size=60).map(" ".join)


def model_alone(embedder: MiniLMEmbedder, text: str) -> np.ndarray:
    """The oracle: transformers' own forward on ``text`` alone (no padding, no packing),
    mean of the last hidden states, divided by its Euclidean norm in float64."""
    encoder = embedder.load()
    tokens = encoder.tokenizer([text], truncation=True, max_length=encoder.max_length,
                               return_tensors="pt")
    with torch.inference_mode():
        hidden = encoder.model(**tokens).last_hidden_state[0].double()
    vector = hidden.sum(dim=0) / hidden.shape[0]
    return (vector / torch.sqrt((vector * vector).sum())).numpy()


@pytest.fixture(scope="module")
def batched_bert(bert_dir: Path) -> MiniLMEmbedder:
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir), max_batch=64, max_wait_ms=20,
                                            batch_size=64))
    embedder.load()
    return embedder


@settings(max_examples=20, deadline=None, suppress_health_check=FIXTURES)
@given(calls=st.lists(st.lists(st.one_of(SHORT, LONG), min_size=1, max_size=4), min_size=2,
                      max_size=6))
async def test_a_text_batched_with_longer_ones_keeps_its_vector(
        batched_bert: MiniLMEmbedder, calls: list[list[str]]) -> None:
    """Property: concurrent ``aieng_embed`` calls mixing short texts with long ones share
    passes through the batcher (``max_batch``), and every text gets the vector of the
    model's own forward on it alone (so no padding reaches its mean) to float32 rounding,
    with norm 1."""
    got: dict[int, np.ndarray] = {}

    async def one(index: int) -> None:
        vectors = await batched_bert.aieng_embed(calls[index], None)
        assert vectors is not None
        got[index] = vectors

    await batched_bert.aieng_pipeline_open()
    try:
        async with anyio.create_task_group() as group:
            for index in range(len(calls)):
                group.start_soon(one, index)
    finally:
        await batched_bert.aieng_pipeline_close()
    for index, texts in enumerate(calls):
        vectors = got[index]
        assert vectors.shape == (len(texts), 32) and vectors.dtype == np.float32
        expected = np.stack([model_alone(batched_bert, text) for text in texts])
        np.testing.assert_allclose(vectors, expected, rtol=0, atol=2e-6)
        np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float64), axis=1), 1.0,
                                   rtol=0, atol=1e-6)
