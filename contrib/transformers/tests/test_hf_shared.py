"""One copy of a model's weights per process: components loading the same files at the same
dtype and device share the model; anything that differs loads its own; closing the last
user frees it; two threads loading one model at once load it once; a component that cuts
a draft from the shared model changes nothing the others compute."""

from __future__ import annotations

import gc
import os
import shutil
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from aieng_hookspecs.types import Message, Request
from aieng_transformers import MiniLMEmbedder, MiniLMOptions, SmolLM2Backend, SmolLM2Options
from aieng_transformers.testing import random_llama, tiny_bert

pytestmark = pytest.mark.anyio

BOTH = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])

TEXTS = ["the cat sat on the mat", "a dog", "the stock market fell"]


def pointers(model: Any) -> list[int]:
    return [p.data_ptr() for p in model.parameters()]


def minilm(folder: Path, **options: Any) -> MiniLMEmbedder:
    return MiniLMEmbedder(MiniLMOptions(path=str(folder), **options))


def smollm2(folder: Path, **options: Any) -> SmolLM2Backend:
    return SmolLM2Backend(SmolLM2Options(path=str(folder), **options))


def ask(text: str) -> Request:
    return Request(messages=(Message("user", text),), max_tokens=6, temperature=0.0)


def counting(monkeypatch: pytest.MonkeyPatch, auto: Any) -> list[str]:
    """Record each ``auto.from_pretrained`` (slowed, so racing loads overlap)."""
    calls: list[str] = []
    original = auto.from_pretrained

    def load(*args: Any, **kwargs: Any) -> Any:
        calls.append(str(args[0]))
        time.sleep(0.2)
        return original(*args, **kwargs)

    monkeypatch.setattr(auto, "from_pretrained", load)
    return calls


def test_two_embedders_on_one_folder_share_the_weights(tmp_path: Path) -> None:
    """Two ``minilm`` on one folder at one dtype hold the same parameters (and give the
    same vectors); another dtype, or a copy of the folder elsewhere, loads its own; each
    keeps its own tokenizer (a call sets its truncation)."""
    folder = tiny_bert(tmp_path / "bert")
    first, second = minilm(folder), minilm(folder, max_length=8)
    a, b = first.load(), second.load()
    assert pointers(a.model) == pointers(b.model)
    assert a.tokenizer is not b.tokenizer
    assert (first.encode(TEXTS) == minilm(folder).encode(TEXTS)).all()
    half = minilm(folder, dtype="bfloat16").load()
    assert half.model is not a.model and half.model.dtype == torch.bfloat16
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert minilm(copy).load().model is not a.model


def test_share_false_loads_a_private_copy(tmp_path: Path) -> None:
    """``share = false`` gets a model of its own, which a host may change without changing
    what the sharing components compute; a pipeline file's ``share = "no"`` is refused."""
    folder = tiny_bert(tmp_path / "bert")
    public = minilm(folder)
    expected = public.encode(TEXTS)
    private = minilm(folder, share=False).load()
    assert private.model is not public.load().model
    with torch.no_grad():
        for parameter in private.model.parameters():
            parameter.zero_()
    assert (public.encode(TEXTS) == expected).all()
    llama = random_llama(tmp_path / "llama")
    assert smollm2(llama, share=False).load().model is not smollm2(llama).load().model
    with pytest.raises(TypeError, match="share"):
        MiniLMOptions(share="no")  # type: ignore[arg-type]


def test_a_forked_child_loads_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process forked after the load (another process id) never gets its parent's model:
    it loads its own, so the fork check (``ForkedModelError``) still sees a parent's."""
    folder = tiny_bert(tmp_path / "bert")
    parent = minilm(folder).load()
    monkeypatch.setattr(os, "getpid", lambda: -1)
    assert minilm(folder).load().model is not parent.model


def test_a_model_rewritten_on_disk_is_another_model(tmp_path: Path) -> None:
    """A folder whose weights changed since (re-converted, replaced) is loaded again, not
    answered with the copy of the old files."""
    folder = tiny_bert(tmp_path / "bert")
    held = minilm(folder)
    old = held.load().model
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    weights.write_bytes(data)  # same bytes, another file (modification time)
    assert minilm(folder).load().model is not old


@BOTH
async def test_closing_the_last_embedder_frees_the_model(tmp_path: Path) -> None:
    """Closing one component leaves the other working on the shared model; closing both
    frees it (nothing else holds it)."""
    folder = tiny_bert(tmp_path / "bert")
    first, second = minilm(folder), minilm(folder)
    expected = first.encode(TEXTS)
    model = weakref.ref(first.load().model)
    assert second.load().model is model()
    await first.aieng_pipeline_close()
    assert (second.encode(TEXTS) == expected).all()
    await second.aieng_pipeline_close()
    gc.collect()
    assert model() is None
    assert (first.encode(TEXTS) == expected).all()  # a later call loads it again


def test_two_threads_load_one_embedder_model_once(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Two components loading one model at the same time in two threads load it once."""
    folder = tiny_bert(tmp_path / "bert")
    calls = counting(monkeypatch, transformers.AutoModel)
    components = [minilm(folder), minilm(folder)]
    threads = [threading.Thread(target=c.load) for c in components]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert components[0].load().model is components[1].load().model


def test_two_generators_on_one_folder_share_the_weights(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ``smollm2`` on one folder share the model (loaded once, also from two threads);
    another dtype loads its own; each keeps its own tokenizer and settings."""
    folder = random_llama(tmp_path / "llama")
    calls = counting(monkeypatch, transformers.AutoModelForCausalLM)
    components = [smollm2(folder), smollm2(folder, repetition_penalty=1.3)]
    threads = [threading.Thread(target=c.load) for c in components]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    a, b = components[0].load(), components[1].load()
    assert pointers(a.model) == pointers(b.model)
    assert a.tokenizer is not b.tokenizer and a is not b
    assert (a.repetition_penalty, b.repetition_penalty) == (1.0, 1.3)
    assert smollm2(folder, dtype="bfloat16").load().model is not a.model
    assert len(calls) == 2


async def test_a_draft_cut_from_the_shared_model_changes_nothing(tmp_path: Path) -> None:
    """A component speculating with a draft cut from the shared model (its first layers)
    leaves what the plain component generates as it was, and the shared model whole."""
    folder = random_llama(tmp_path / "llama")
    plain = smollm2(folder)
    before = await plain.aieng_generate(ask("hello there"))
    layers = len(plain.load().model.model.layers)
    drafted = smollm2(folder, speculative="draft", draft_layers=1)
    assert drafted.load().model is plain.load().model
    assert await drafted.aieng_generate(ask("hello there")) is not None
    after = await plain.aieng_generate(ask("hello there"))
    assert before is not None and after is not None and after.text == before.text
    assert len(plain.load().model.model.layers) == layers


async def test_closing_the_last_generator_frees_the_model(tmp_path: Path) -> None:
    """Closing both ``smollm2`` on one model frees it; closing one leaves the other
    generating as before."""
    folder = random_llama(tmp_path / "llama")
    first, second = smollm2(folder), smollm2(folder)
    expected = await first.aieng_generate(ask("hi"))
    model = weakref.ref(first.load().model)
    assert second.load().model is model()
    await first.aieng_pipeline_close()
    again = await second.aieng_generate(ask("hi"))
    assert expected is not None and again is not None and again.text == expected.text
    await second.aieng_pipeline_close()
    gc.collect()
    assert model() is None
