"""The plugin module: registration, typed options, and pipelines built from config."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import aieng_transformers
import attrs
import pytest
from _tiny import CHAIN_TEXT
from aieng_hookspecs.types import Document

from aieng_core import ConfigError, Kernel
from aieng_core.registry import PluginInfo

Register = Callable[..., AbstractContextManager[PluginInfo]]

pytestmark = pytest.mark.anyio


async def test_registers_its_components(aieng_kernel: Kernel, register_plugin: Register) -> None:
    """The plugin offers ``minilm``, ``smollm2`` and ``torch-int8`` and loads without
    importing torch."""
    with register_plugin(aieng_transformers, "transformers") as info:
        assert info.status == "loaded", info.error
        assert set(info.components) == {"minilm", "smollm2", "torch-int8"}


async def test_generate_pipeline_from_config(aieng_kernel: Kernel, register_plugin: Register,
                                             chain_dir: Path) -> None:
    """A pipeline file naming ``smollm2`` with a ``path`` generates and streams through the
    kernel, opening (loading) the model before the first run."""
    config = {"pipeline": {"name": "local", "stages": ["generate"]},
              "components": {"llm": {"use": "smollm2", "path": str(chain_dir),
                                     "chat_template": "chatml"}}}
    with register_plugin(aieng_transformers, "transformers"):
        pipeline = aieng_kernel.pipeline(config)
    result = await pipeline.run("hi")
    assert result.status == "ok" and result.answer == CHAIN_TEXT
    pieces: list[str] = []
    streamed = await pipeline.run("hi", on_delta=lambda d: pieces.append(d.text))
    assert streamed.answer == "".join(pieces) == CHAIN_TEXT


async def test_embedder_serves_a_vector_pipeline(aieng_kernel: Kernel, register_plugin: Register,
                                                 bert_dir: Path) -> None:
    """``minilm`` with a ``path`` answers ``aieng_embed`` for a pipeline."""
    config = {"pipeline": {"name": "embed", "stages": ["retrieve"]},
              "components": {"docs": {"use": "memory"},
                             "enc": {"use": "minilm", "path": str(bert_dir), "batch_size": 4}}}
    with register_plugin(aieng_transformers, "transformers"):
        pipeline = aieng_kernel.pipeline(config)
    await pipeline.index([Document(id="a", text="the cat sat on the mat")])
    found = await pipeline.dispatcher.first("aieng_embed", {"texts": ["cat"], "model": None},
                                            stage="test")
    assert found is not None and found[0].shape == (1, 32)


@pytest.mark.parametrize(("options", "key"), [
    ({"chat_template": "vicuna"}, "chat_template"),
    ({"device": "gpu"}, "device"),
    ({"max_tokens": 3}, "max_tokens"),
    ({"path": 3}, "path"),
    ({"repetition_penalty": True}, "repetition_penalty"),
    ({"repetition_penalty": "2"}, "repetition_penalty"),
])
async def test_bad_options_fail_to_load(aieng_kernel: Kernel, register_plugin: Register,
                                        options: dict[str, object], key: str) -> None:
    """Unknown keys, unknown templates, bad devices and wrong types fail naming the key."""
    config = {"pipeline": {"name": "bad", "stages": ["generate"]},
              "components": {"llm": {"use": "smollm2", **options}}}
    with register_plugin(aieng_transformers, "transformers"), \
            pytest.raises(ConfigError, match=r"components\.llm"):
        aieng_kernel.pipeline(config)


def test_a_whole_repetition_penalty_is_a_float() -> None:
    """``repetition_penalty = 2`` in TOML is an integer: it means 2.0 (it was refused)."""
    from aieng_transformers import SmolLM2Options

    assert SmolLM2Options(repetition_penalty=2).repetition_penalty == 2.0


@pytest.mark.parametrize("name", ["batch_size", "max_length", "max_batch", "ngram_size",
                                  "max_proposal", "draft_layers", "max_wait_ms"])
def test_booleans_are_no_numbers(name: str) -> None:
    """A pipeline file's ``batch_size = true`` is an error naming the key, not a batch of 1
    (``bool`` is an ``int`` to Python); ``max_wait_ms`` refuses a string too, and takes a
    TOML integer as the float it means."""
    from aieng_transformers import MiniLMOptions, SmolLM2Options

    kinds = [kind for kind in (MiniLMOptions, SmolLM2Options)
             if name in attrs.fields_dict(kind)]
    assert kinds
    for kind in kinds:
        with pytest.raises(TypeError, match=name):
            kind(**{name: True})
        if name == "max_wait_ms":
            with pytest.raises(TypeError, match=name):
                kind(max_wait_ms="5")
            assert kind(max_wait_ms=2).max_wait_ms == 2.0
            assert isinstance(kind(max_wait_ms=2).max_wait_ms, float)
        else:
            with pytest.raises(ValueError, match=name):
                kind(**{name: 0})
            assert getattr(kind(**{name: 2}), name) == 2
