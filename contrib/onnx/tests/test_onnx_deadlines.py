"""A host's deadline around ``minilm-onnx``'s ``aieng_embed``: the call ends at once, its
worker threads run no forward pass that had not started (they cannot be killed), and the
next call is served right after. Synchronised on events, never on sleeps: the deadline is
a cancel scope cancelled while the first passes run."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from aieng_onnx import MiniLMOnnxEmbedder, MiniLMOnnxOptions
from aieng_transformers.testing import PassGate, cancel_when

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize(("workers", "max_batch"), [(1, 1), (2, 1), (1, 64)])
async def test_a_deadline_ends_an_embed_call_within_one_pass(
        bert_dir: Path, tmp_path: Path, workers: int, max_batch: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A deadline landing in the first passes of a ten-pass ``aieng_embed`` call (one
    worker or two, alone or through the dynamic batcher) ends the call; the passes not
    started never run, the encoder's lock is free and the next call is served."""
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        path=str(bert_dir), cache_dir=str(tmp_path), providers=("cpu",), batch_size=2,
        batching="fixed", workers=workers, max_batch=max_batch))
    await embedder.aieng_pipeline_open()
    encoder = embedder.load()
    gate = PassGate(encoder._pooled, held=workers)  # every worker holds one pass
    monkeypatch.setattr(encoder, "_pooled", gate)
    texts = [f"text number {i} of the call" for i in range(20)]
    assert len(encoder.batches(texts)) == 10
    await cancel_when(gate.entered, lambda: embedder.aieng_embed(texts, None))
    gate.release.set()
    assert await anyio.to_thread.run_sync(encoder.lock.acquire, True, 30.0)
    encoder.lock.release()
    assert gate.passes == workers
    vectors = await embedder.aieng_embed(["the next call"], None)
    assert vectors is not None and vectors.shape[0] == 1
    await embedder.aieng_pipeline_close()
