"""One ONNX Runtime session per process for one file: ``minilm-onnx`` and ``smollm2-onnx``
components on the same export, precision, providers and threads share it; anything that
differs opens its own; closing the last user frees it; two threads opening one at once
open it once; each component keeps its own tokenizer (its truncation is set on it)."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import onnxruntime as ort  # type: ignore[import-untyped]
import pytest
from aieng_hookspecs.types import Message, Request
from aieng_onnx import MiniLMOnnxEmbedder, MiniLMOnnxOptions, SmolLM2OnnxBackend, SmolLM2OnnxOptions
from aieng_transformers.testing import random_llama

pytestmark = pytest.mark.anyio

BOTH = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
LONG = "the cat sat on the mat and the dog sat on the rug " * 4


def embedder(folder: Path, cache: Path, **options: Any) -> MiniLMOnnxEmbedder:
    return MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(folder), cache_dir=str(cache),
                                                providers=("cpu",), **options))


def counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each ``InferenceSession`` made (slowed, so racing opens overlap)."""
    made: list[str] = []
    original = ort.InferenceSession

    def session(path: str, *args: Any, **kwargs: Any) -> Any:
        made.append(Path(path).name)
        time.sleep(0.2)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", session)
    return made


def test_two_embedders_on_one_export_share_the_session(bert_dir: Path, tmp_path: Path) -> None:
    """Same export, precision, providers and threads: one session; each component's own
    ``max_length`` still truncates its texts (its own tokenizer); int8 or other threads:
    a session of its own."""
    short, long = embedder(bert_dir, tmp_path, max_length=8), embedder(bert_dir, tmp_path)
    a, b = short.load(), long.load()
    assert a.session is b.session
    assert a.tokenizer is not b.tokenizer
    alone = embedder(bert_dir, tmp_path / "alone").encode([LONG])
    assert (long.encode([LONG]) == alone).all()
    assert not (short.encode([LONG]) == alone).all()
    assert embedder(bert_dir, tmp_path, precision="int8").load().session is not a.session
    assert embedder(bert_dir, tmp_path, intra_op_threads=2).load().session is not a.session
    assert embedder(bert_dir, tmp_path, share=False).load().session is not a.session


def test_two_threads_open_one_session_once(bert_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    embedder(bert_dir, tmp_path).load()  # the export, made once (its checks open sessions)
    gc.collect()
    made = counting(monkeypatch)
    components = [embedder(bert_dir, tmp_path), embedder(bert_dir, tmp_path)]
    threads = [threading.Thread(target=c.load) for c in components]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert made == ["model.onnx"]
    assert components[0].load().session is components[1].load().session


@BOTH
async def test_closing_the_last_embedder_frees_the_session(bert_dir: Path,
                                                           tmp_path: Path) -> None:
    first, second = embedder(bert_dir, tmp_path), embedder(bert_dir, tmp_path)
    expected = first.encode(["a dog"])
    session = weakref.ref(first.load().session)
    assert second.load().session is session()
    await first.aieng_pipeline_close()
    assert (second.encode(["a dog"]) == expected).all()
    await second.aieng_pipeline_close()
    gc.collect()
    assert session() is None


async def test_two_generators_on_one_export_share_the_session(tmp_path: Path) -> None:
    """Two ``smollm2-onnx`` on one export share its session and generate as one alone;
    closing both frees it."""
    folder = random_llama(tmp_path / "llama")

    def backend() -> SmolLM2OnnxBackend:
        return SmolLM2OnnxBackend(SmolLM2OnnxOptions(path=str(folder), providers=("cpu",),
                                                     cache_dir=str(tmp_path / "cache")))

    first, second = backend(), backend()
    request = Request(messages=(Message("user", "hello"),), max_tokens=5, temperature=0.0)
    expected = await first.aieng_generate(request)
    session = weakref.ref(first.load().model.session)
    assert second.load().model.session is session()
    got = await second.aieng_generate(request)
    assert expected is not None and got is not None and got.text == expected.text
    await first.aieng_pipeline_close()
    await second.aieng_pipeline_close()
    gc.collect()
    assert session() is None
