"""What aieng-onnx takes from aieng-transformers rather than repeating it: the model
lookup and its error, the cache folder, and the embedder's hooks."""

from __future__ import annotations

import json
from pathlib import Path

import aieng_onnx
import aieng_transformers
import click
import numpy as np
import pytest
from aieng_onnx import MiniLMOnnxEmbedder, MiniLMOnnxOptions
from aieng_transformers import aieng_register_commands
from click.testing import CliRunner

pytestmark = pytest.mark.anyio


def test_one_model_not_found_for_both_plugins(tmp_path: Path) -> None:
    """A missing model of either plugin is the same ``ModelNotFound``: one ``except``
    catches both (and it stays a ``FileNotFoundError``); the cache folder is found by
    the same rules."""
    assert aieng_onnx.ModelNotFound is aieng_transformers.ModelNotFound
    assert issubclass(aieng_onnx.ModelNotFound, FileNotFoundError)
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(tmp_path)))
    with pytest.raises(aieng_transformers.ModelNotFound, match="no config.json"):
        embedder.source()
    assert aieng_onnx.cache_root(str(tmp_path)) == aieng_transformers.cache_root(str(tmp_path))


def test_models_says_an_onnx_model_is_missing(tmp_path: Path) -> None:
    """``aieng models PIPELINE`` reports a ``minilm-onnx`` whose folder has no model as
    missing, with the message that says how to point at one, as it does for ``minilm``
    (regression: the ONNX plugin's own ``ModelNotFound`` was reported as a config that
    could not be read)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    file = tmp_path / "missing.toml"
    file.write_text(f'[pipeline]\nname = "missing"\n[components.onnx]\nuse = "minilm-onnx"\n'
                    f'path = "{empty}"\ncache_dir = "{tmp_path / "cache"}"\n', encoding="utf-8")
    group = click.Group("aieng")
    aieng_register_commands(group)
    result = CliRunner().invoke(group, ["models", str(file), "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["problem"] == (f"{str(empty)!r} is not a Hugging Face model folder (no "
                              "config.json): point `path` at one")


async def test_embedder_hooks_are_shared(bert_dir: Path, tmp_path: Path) -> None:
    """``minilm-onnx`` answers through the same hooks as ``minilm``: another model's call
    gets ``None``, an empty call a ``(0, width)`` array without loading anything, one
    string instead of a list a ``TypeError``; its batcher thread keeps its own name."""
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(bert_dir), providers=("cpu",),
                                                    cache_dir=str(tmp_path), max_batch=4))
    assert await embedder.aieng_embed(["the cat"], "another") is None
    empty = await embedder.aieng_embed([], None)
    assert empty is not None and empty.shape == (0, 64) and empty.dtype == np.float32
    assert embedder._encoder is None
    with pytest.raises(TypeError, match="not one str"):
        await embedder.aieng_embed("the cat", None)
    assert embedder.batcher().name == f"aieng-onnx-batch-{embedder.model}"
    await embedder.aieng_pipeline_open()
    try:
        vectors = await embedder.aieng_embed(["the cat", "a dog"], None)
        assert vectors is not None and vectors.shape == (2, 64)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    finally:
        await embedder.aieng_pipeline_close()
    assert not embedder.batcher().running
