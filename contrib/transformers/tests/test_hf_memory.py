"""The KV-cache estimate of sliding-window models: GGUF headers, and the backends whose
cache keeps every token (speculation, a model run elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aieng_transformers import SmolLM2Backend, SmolLM2Options
from aieng_transformers._memory import footprint


def _gguf(path: Path, arch: str, *, layers: int, window: int | None) -> Path:
    import gguf  # type: ignore[import-untyped]

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(layers)
    writer.add_context_length(100)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(1)
    writer.add_key_length(8)
    writer.add_value_length(8)
    writer.add_layer_norm_rms_eps(1e-6)
    if window is not None:
        writer.add_sliding_window(window)
    writer.add_tensor("token_embd.weight", np.zeros((64, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(("arch", "layers", "window"), [
    ("gemma2", 5, 8), ("gemma3", 7, 8), ("llama", 4, None)])
def test_gguf_sliding_layers_are_transformers_own(tmp_path: Path, arch: str, layers: int,
                                                   window: int | None) -> None:
    """A Gemma 2 / 3 GGUF names its window; its layers are laid out as the config
    transformers' GGUF loader makes from the header says (what a conversion then
    keeps); a Llama GGUF (Mistral's too) has none."""
    from transformers import DynamicCache
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    file = _gguf(tmp_path / f"{arch}.gguf", arch, layers=layers, window=window)
    read = dict(load_gguf_checkpoint(str(file), return_tensors=False)["config"])
    config = CONFIG_MAPPING[read.pop("model_type")](**read)
    kinds = [bool(getattr(layer, "is_sliding", False))
             for layer in DynamicCache(config=config).layers]
    model = footprint(file)
    assert model.sliding_layers == sum(kinds)
    assert model.sliding_window == (window if any(kinds) else None)
    full = 2 * layers * 8 * 100 * 2
    capped = full - 2 * sum(kinds) * 8 * (100 - 7) * 2
    assert model.kv_cache_bytes(bytes_per_param=2, context=100) == capped
    assert model.kv_cache_bytes(bytes_per_param=2, context=100, windowed=False) == full


@pytest.fixture(scope="module")
def mistral_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Mistral 7B v0.1-like model: a window of 8 on both layers, context 100."""
    from transformers import MistralConfig, MistralForCausalLM

    folder = tmp_path_factory.mktemp("mistral")
    config = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=100,
                           sliding_window=8)
    MistralForCausalLM(config).save_pretrained(str(folder))
    return folder


class _Elsewhere(SmolLM2Backend):
    """A subclass that opens the model on another runtime (as aieng-onnx's does)."""

    def _open(self, folder: Path) -> object:  # type: ignore[override]
        raise NotImplementedError


def test_backend_counts_the_window_only_where_its_cache_keeps_it(mistral_dir: Path) -> None:
    """Plain decoding keeps 7 tokens per layer (transformers' sliding cache); under
    speculation (a full, croppable cache for greedy requests) and in a subclass that
    runs the model elsewhere every token is counted, as before."""
    per_token = 2 * 2 * 2 * 8 * 4  # keys and values, 2 layers, 2 KV heads of 8, fp32
    plain = SmolLM2Backend(SmolLM2Options(path=str(mistral_dir)))
    row = plain.memory_estimate(context=100)
    assert row["kv_cache_bytes"] == per_token * 7
    assert (row["sliding_layers"], row["sliding_window"]) == (2, 8)
    assert plain.memory_estimate(context=5)["kv_cache_bytes"] == per_token * 5
    for backend in (SmolLM2Backend(SmolLM2Options(path=str(mistral_dir),
                                                  speculative="prompt-lookup")),
                    _Elsewhere(SmolLM2Options(path=str(mistral_dir)))):
        row = backend.memory_estimate(context=100)
        assert row["kv_cache_bytes"] == per_token * 100
        assert (row["sliding_layers"], row["sliding_window"]) == (0, None)


def test_a_transformers_that_keeps_every_token_is_counted_in_full(
        mistral_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Releases of transformers before DynamicCache(config=...) (the range allows 4.45)
    keep every token on sliding-window layers too: the estimate counts them all there."""
    import aieng_transformers._generator as generator

    per_token = 2 * 2 * 2 * 8 * 4
    monkeypatch.setattr(generator, "windows_kept", lambda: False)
    row = SmolLM2Backend(SmolLM2Options(path=str(mistral_dir))).memory_estimate(context=100)
    assert row["kv_cache_bytes"] == per_token * 100
