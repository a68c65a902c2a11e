"""The numbers ``memory_estimate`` / ``aieng models`` report, against a hand computation
from the model's config (not from the estimate's own code)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _tiny import random_llama
from aieng_transformers import SmolLM2Backend, SmolLM2Options
from aieng_transformers.testing import chain_llama


def _parameters(folder: Path) -> int:
    """The weights in the folder's safetensors file, counted from its tensors' shapes."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "np") as weights:
        names = list(weights.keys())
        return sum(math.prod(weights.get_slice(k).get_shape()) for k in names)


def _kv_bytes(folder: Path, tokens: int) -> int:
    """2 (keys, values) x layers x kv_heads x head_dim x tokens x 4 bytes, by hand."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    return 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim \
        * tokens * 4


@pytest.fixture(scope="module")
def short_main(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The main model: a 64-token context."""
    return chain_llama(tmp_path_factory.mktemp("main64"), max_positions=64)


@pytest.fixture(scope="module")
def long_draft(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A draft model of a longer context (256 tokens) than the main model's."""
    return random_llama(tmp_path_factory.mktemp("draft256"), max_positions=256)


@pytest.mark.parametrize(("context", "draft_tokens"), [(None, 64), (32, 32), (1000, 256)])
def test_a_draft_kv_cache_is_capped_at_the_main_context(
        short_main: Path, long_draft: Path, context: int | None, draft_tokens: int) -> None:
    """A separate draft never holds more tokens than the main model's context (the
    request stops there), nor more than its own: its KV cache is sized at
    min(draft context, main context) tokens (regression: a 256-token draft under a
    64-token model was sized at 256)."""
    backend = SmolLM2Backend(SmolLM2Options(path=str(short_main), speculative="draft",
                                            draft_path=str(long_draft)))
    estimate = backend.memory_estimate(context=context)
    main_tokens = context or 64
    assert estimate["context"] == main_tokens
    assert estimate["kv_cache_bytes"] == _kv_bytes(short_main, main_tokens)
    assert estimate["draft_bytes"] == _parameters(long_draft) * 4 + _kv_bytes(long_draft,
                                                                               draft_tokens)
    assert estimate["total_bytes"] == (estimate["weights_bytes"] + estimate["kv_cache_bytes"]
                                       + estimate["draft_bytes"])


def test_a_shorter_draft_keeps_its_own_context(tmp_path: Path, long_draft: Path) -> None:
    """The other way round: a 64-token draft under a 256-token model is sized at 64."""
    draft = random_llama(tmp_path / "draft64", max_positions=64)
    backend = SmolLM2Backend(SmolLM2Options(path=str(long_draft), speculative="draft",
                                            draft_path=str(draft)))
    estimate = backend.memory_estimate()
    assert estimate["context"] == 256
    assert estimate["draft_bytes"] == _parameters(draft) * 4 + _kv_bytes(draft, 64)
