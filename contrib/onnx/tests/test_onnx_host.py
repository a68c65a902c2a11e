"""aieng-onnx inside a host program: no network, and the host's process-wide state (global
random generators, root logger) as it was after an export, a quantization or a fusion."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import numpy as np
import pytest
import torch
from aieng_onnx import MiniLMOnnxEmbedder, MiniLMOnnxOptions, exported
from aieng_onnx._quantize import optimize_bert, quantize
from aieng_transformers.testing import no_network

from aieng_core.testing.processes import in_forked_child

pytestmark = pytest.mark.anyio


def _generators() -> tuple[object, ...]:
    return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist()


@contextlib.contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger with no handler, as in a host program that configured no logging
    (pytest's capture handlers, added for each test phase, are put back after)."""
    root = logging.getLogger()
    kept = root.handlers
    root.handlers = []
    try:
        yield root
    finally:
        root.handlers = kept


def test_an_export_leaves_the_hosts_random_generators(bert_dir: Path, tmp_path: Path) -> None:
    """Exporting draws optimum's dummy inputs, yet a host that seeded Python's, NumPy's and
    torch's global generators gets the same sequences after it as before."""
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    before = _generators()
    _, made = exported(bert_dir, tmp_path / "cache", opset=18)
    assert made
    assert _generators() == before


@pytest.mark.parametrize("scheme", ["int8", "q8"])
def test_quantizing_configures_no_root_logger(bert_dir: Path, tmp_path: Path,
                                              scheme: str) -> None:
    """ONNX Runtime's quantizer logs through ``logging.warning``; a host whose root logger
    has no handler still has none after a quantization (no ``basicConfig`` behind its
    back), and the quantized model is written."""
    folder, _ = exported(bert_dir, tmp_path / "cache", opset=18)
    target = tmp_path / f"model.{scheme}.onnx"
    with bare_root() as root:
        quantize(folder / "model.onnx", target, scheme)
        assert (root.handlers, root.level) == ([], logging.WARNING)
    assert target.is_file()


def test_fusing_configures_no_root_logger(bert_dir: Path, tmp_path: Path) -> None:
    """The same for ONNX Runtime's BERT fusions."""
    folder, _ = exported(bert_dir, tmp_path / "cache", opset=18)
    target = tmp_path / "model.fused.onnx"
    with bare_root() as root:
        optimize_bert(folder / "model.onnx", target, level=1, heads=0, hidden=0)
        assert root.handlers == []
    assert target.is_file()


def test_the_hosts_own_root_records_still_reach_stderr(
        capsys: pytest.CaptureFixture[str]) -> None:
    """While a library tool runs, a warning another thread of the host logs on its bare
    root logger is printed as without aieng (``logging.lastResort``), not swallowed, and
    the tool's own records are not printed."""
    from aieng_onnx._hoststate import host_state_kept

    with bare_root() as root:
        with host_state_kept():
            # The module-level function, as ONNX Runtime calls it: it runs basicConfig on
            # a root logger with no handler.
            logging.warning("the tool's warning")  # noqa: LOG015
            worker = threading.Thread(target=logging.warning,
                                      args=("the host's own warning",))
            worker.start()
            worker.join()
        assert root.handlers == []
    err = capsys.readouterr().err
    assert "the host's own warning" in err and "the tool's warning" not in err


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_export_quantize_and_embed_with_no_network(bert_dir: Path, tmp_path: Path,
                                                         anyio_backend: str) -> None:
    """With every non-loopback connection and name lookup refused, ``minilm-onnx`` exports,
    quantizes and embeds a local model the same as with a network, trying no connection
    (no hub lookup), under either anyio backend (the int8 one on two ``workers``
    threads)."""
    cache = tmp_path / "a cache, é"
    with no_network() as attempts:
        fp32 = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(bert_dir), cache_dir=str(cache)))
        int8 = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(bert_dir), cache_dir=str(cache),
                                                    precision="int8", workers=2,
                                                    batch_size=1))
        vectors = await fp32.aieng_embed(["a b", "c"], None)
        quantized = await int8.aieng_embed(["a b", "c"], None)
    assert attempts == []
    assert vectors is not None and quantized is not None
    assert len(vectors) == 2 and len(quantized) == 2
    await int8.aieng_pipeline_close()
    assert not [t for t in threading.enumerate() if t.name.startswith("aieng-onnx-encode")]
    online = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(bert_dir),
                                                  cache_dir=str(tmp_path / "online")))
    expected = await anyio.to_thread.run_sync(online.encode, ["a b", "c"])
    assert np.allclose(np.asarray(vectors), np.asarray(expected), atol=1e-6)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX")
def test_a_forked_child_encodes_with_its_own_workers(bert_dir: Path, tmp_path: Path) -> None:
    """An embedder whose ``workers`` threads ran in the parent encodes in a forked child
    (which has none of those threads: work handed to them would never run) the same
    vectors, with workers of its own."""
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(bert_dir),
                                                    cache_dir=str(tmp_path / "cache"),
                                                    workers=2, batch_size=2))
    texts = [("a b c " * (i % 5 + 1)).strip() for i in range(8)]
    expected = embedder.encode(texts)

    def child() -> int:
        return 0 if np.allclose(embedder.encode(texts), expected, atol=1e-6) else 1

    assert in_forked_child(child) == 0


