"""aieng-transformers inside a host program: no network, the host's process-wide state (torch
threads, global random generators, logging, warnings) as it was, and a model loaded before
an ``os.fork()`` used in the child."""

from __future__ import annotations

import logging
import os
import random
import threading
import warnings
from pathlib import Path

import anyio
import numpy as np
import pytest
import torch
import transformers
from _tiny import chain_llama, random_llama, tiny_bert, tiny_gguf
from aieng_hookspecs.types import Message, Request
from aieng_transformers import (
    ForkedModelError,
    MiniLMEmbedder,
    MiniLMOptions,
    SmolLM2Backend,
    SmolLM2Options,
)
from aieng_transformers.testing import CHAIN_TEXT, no_network

from aieng_core.testing.processes import in_forked_child

pytestmark = pytest.mark.anyio

BOTH = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


def ask(text: str, **params: object) -> Request:
    return Request(messages=(Message("user", text),), **params)  # type: ignore[arg-type]


def _host_state() -> dict[str, object]:
    return {
        "threads": torch.get_num_threads(),
        "interop": torch.get_num_interop_threads(),
        "grad": torch.is_grad_enabled(),
        "dtype": torch.get_default_dtype(),
        "torch_rng": torch.get_rng_state().tolist(),
        "random": random.getstate(),
        "numpy": np.random.get_state()[1].tolist(),
        "verbosity": transformers.logging.get_verbosity(),
        "warnings": list(warnings.filters),
        "root": (list(logging.getLogger().handlers), logging.getLogger().level),
        "environ": dict(os.environ),
    }


@BOTH
async def test_local_models_run_with_no_network(chain_dir: Path, bert_dir: Path,
                                                tmp_path: Path, anyio_backend: str) -> None:
    """With every non-loopback connection and name lookup refused, a local model folder
    loads (config, weights, tokenizer, chat template) and generates, streams and embeds
    what it does with a network, trying no connection (no hub lookup), on either backend."""
    online = SmolLM2Backend(SmolLM2Options(path=str(chain_dir)))
    expected = await online.aieng_generate(ask("hi", max_tokens=32))
    with no_network() as attempts:
        backend = SmolLM2Backend(SmolLM2Options(path=str(chain_dir)))
        embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir)))
        completion = await backend.aieng_generate(ask("hi", max_tokens=32))
        stream = backend.aieng_stream(ask("hi", max_tokens=32))
        assert stream is not None
        streamed = "".join([delta.text async for delta in stream])
        vectors = await embedder.aieng_embed(["a b", "c"], None)
    assert attempts == []
    assert completion is not None and expected is not None
    assert completion.text == streamed == expected.text
    assert vectors is not None and vectors.shape[0] == 2


@BOTH
async def test_a_gguf_converts_and_loads_with_no_network(tmp_path: Path,
                                                         anyio_backend: str) -> None:
    """With no network, a GGUF file is converted to safetensors (into a cache under a path
    with a space and a non-ASCII letter), loaded and generates, then loads again from the
    cache, trying no connection (no hub lookup for the tokenizer or the config)."""
    gguf = tiny_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "cache dir é"
    request = ask("hi", max_tokens=4)
    with no_network() as attempts:
        first = await SmolLM2Backend(SmolLM2Options(path=str(gguf), cache_dir=str(cache))
                                     ).aieng_generate(request)
        again = await SmolLM2Backend(SmolLM2Options(path=str(gguf), cache_dir=str(cache))
                                     ).aieng_generate(request)
    assert attempts == []
    assert first is not None and again is not None and first.text == again.text
    assert [p.name for p in (cache / "transformers").glob("tiny-*")]


def test_shipped_models_load_with_no_network(shipped_smollm2: SmolLM2Backend,
                                             smollm2_cache: Path) -> None:
    """Needs the shipped models: the packaged MiniLM and SmolLM2's cached conversion load
    with no network and no connection tried (no hub lookup for either)."""
    with no_network() as attempts:
        MiniLMEmbedder(MiniLMOptions()).load()
        SmolLM2Backend(SmolLM2Options(cache_dir=str(smollm2_cache))).load()
    assert attempts == []


@BOTH
async def test_the_hosts_global_state_is_kept(chain_dir: Path, bert_dir: Path,
                                              anyio_backend: str) -> None:
    """Loading, seeded sampling and embedding leave the host's torch threads (its own
    count, not ours), global random generators (Python, NumPy, torch), grad mode, default
    dtype, transformers' verbosity, warnings filters, root logger and environment as
    they were."""
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        random.seed(11)
        np.random.seed(11)
        torch.manual_seed(11)
        before = _host_state()
        backend = SmolLM2Backend(SmolLM2Options(path=str(chain_dir), model="host-state"))
        embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir), model="host-state"))
        await backend.aieng_generate(ask("hi", max_tokens=6, temperature=1.0, seed=5))
        await backend.aieng_generate(ask("hi", max_tokens=6, temperature=1.0))
        await embedder.aieng_embed(["a b"], None)
        assert _host_state() == before
    finally:
        torch.set_num_threads(threads)


@BOTH
async def test_batched_calls_then_close_leave_no_thread(chain_dir: Path, bert_dir: Path,
                                                       anyio_backend: str) -> None:
    """Concurrent calls are batched (``max_batch``) on either backend, each caller getting
    its own answer, and closing the pipeline ends the batchers' threads."""
    backend = SmolLM2Backend(SmolLM2Options(path=str(chain_dir), model="batched",
                                            max_batch=4, max_wait_ms=50))
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir), model="batched",
                                            max_batch=8, max_wait_ms=50))
    texts: dict[int, str] = {}
    shapes: dict[int, tuple[int, ...]] = {}
    await backend.aieng_pipeline_open()
    await embedder.aieng_pipeline_open()
    try:
        async with anyio.create_task_group() as group:
            for i in range(3):
                async def one(i: int = i) -> None:
                    completion = await backend.aieng_generate(ask("hi", max_tokens=32))
                    vectors = await embedder.aieng_embed(["a b"] * (i + 1), None)
                    assert completion is not None and vectors is not None
                    texts[i], shapes[i] = completion.text, vectors.shape
                group.start_soon(one)
    finally:
        await backend.aieng_pipeline_close()
        await embedder.aieng_pipeline_close()
    assert set(texts.values()) == {CHAIN_TEXT} and [shapes[i][0] for i in range(3)] == [1, 2, 3]
    assert backend.batcher().batches < 3
    assert not [t.name for t in threading.enumerate() if t.name.startswith("aieng-batch")]


def test_the_tiny_model_builders_leave_the_callers_generator(tmp_path: Path) -> None:
    """The testing kit's model builders (seeded: the same weights every time) leave the
    caller's global torch generator where it was."""
    torch.manual_seed(3)
    before = torch.get_rng_state()
    random_llama(tmp_path / "random")
    chain_llama(tmp_path / "chain")
    tiny_bert(tmp_path / "bert")
    assert torch.equal(torch.get_rng_state(), before)


def _generate(backend: SmolLM2Backend, request: Request) -> str:
    """The completion's text, decoded in this thread (no event loop)."""
    generation = backend.load().start(request)
    pieces = []
    while True:
        step = generation.step()
        pieces.append(step.text)
        if step.finish is not None:
            return "".join(pieces)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX")
def test_a_forked_child_with_torch_threads_is_refused_clearly(random_dir: Path,
                                                               bert_dir: Path) -> None:
    """A model loaded before a fork, used in the child with several torch threads (whose
    OpenMP pool the fork left behind: its first parallel operator would hang) raises
    ``ForkedModelError`` saying what to do; with one thread, as it says, the child
    generates the parent's text and embeds."""
    backend = SmolLM2Backend(SmolLM2Options(path=str(random_dir), model="forked"))
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir), model="forked"))
    request = ask("hi", max_tokens=5)
    expected = _generate(backend, request)
    embedder.load()
    threads = torch.get_num_threads()

    def child() -> int:
        refused = 0
        for use in (lambda: backend.load(), lambda: embedder.encode(["a"])):
            try:
                use()
            except ForkedModelError as exc:
                refused += "torch.set_num_threads(1)" in str(exc)
        torch.set_num_threads(1)
        text = _generate(backend, request)
        return 0 if refused == 2 and text == expected and embedder.encode(["a"]).shape[0] == 1 \
            else 1

    torch.set_num_threads(2)
    try:
        assert in_forked_child(child) == 0
    finally:
        torch.set_num_threads(threads)
