"""The tiny models of :mod:`aieng_transformers.testing`, and the shipped-model guard."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from aieng_transformers._causal import CausalLM
from aieng_transformers.testing import (
    CHAIN_TEXT,
    CHATML,
    EOS_ID,
    SPECIALS,
    byte_id,
    byte_tokenizer,
    chain_llama,
    random_llama,
    require_distribution,
    tiny_bert,
)

__all__ = ["CHAIN_TEXT", "CHATML", "EOS_ID", "SPECIALS", "byte_id", "byte_tokenizer",
           "chain_llama", "plant_scratch", "prompt_lm", "random_llama",
           "require_distribution", "tiny_bert", "tiny_gguf"]


def plant_scratch(target: Path) -> tuple[Path, Path, Path]:
    """Three scratch folders of ``target`` as :func:`aieng_hookspecs.scratch_path` names
    them, each holding half a model: one of a dead process left for long (to remove), one
    of a dead process changed just now and one of this live process (both to keep)."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    abandoned = target.parent / f".{target.name}-{dead}-0123456789ab.tmp"
    recent = target.parent / f".{target.name}-{dead}-0123456789ac.tmp"
    live = target.parent / f".{target.name}-{os.getpid()}-0123456789ad.tmp"
    for scratch in (abandoned, recent, live):
        scratch.mkdir(parents=True)
        (scratch / "model.safetensors").write_bytes(b"half")
        if scratch != recent:
            for path in (scratch / "model.safetensors", scratch):
                os.utime(path, (0, 0))
    return abandoned, recent, live


def tiny_gguf(path: Path) -> Path:
    """Write a random 1-layer Llama (width 16) as a float32 GGUF file with a byte-level
    BPE tokenizer (two merges: transformers reads a one-element array as a scalar), that
    transformers' GGUF loader converts in a few seconds."""
    import gguf  # type: ignore[import-untyped]
    import numpy as np
    from tokenizers import pre_tokenizers  # type: ignore[import-untyped]

    tokens = [*SPECIALS, *sorted(pre_tokenizers.ByteLevel.alphabet()), "ĠĠ", "ab"]
    width, hidden, heads = 16, 32, 2
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(width)
    writer.add_feed_forward_length(hidden)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(width // heads)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
    writer.add_token_merges(["Ġ Ġ", "a b"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(EOS_ID)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (len(tokens), width), "output_norm.weight": (width,),
              "output.weight": (len(tokens), width)}
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        shapes[f"blk.0.{name}.weight"] = (width, width)
    shapes.update({"blk.0.attn_norm.weight": (width,), "blk.0.ffn_norm.weight": (width,),
                   "blk.0.ffn_gate.weight": (hidden, width),
                   "blk.0.ffn_up.weight": (hidden, width),
                   "blk.0.ffn_down.weight": (width, hidden)})
    for name, shape in shapes.items():
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


class _Config:
    max_position_embeddings = 4096
    name_or_path = "tiny"


class _Model:
    """A model-like object: enough for :class:`CausalLM` to render and encode prompts."""

    config = _Config()
    device = __import__("torch").device("cpu")

    def forward(self, input_ids: Any) -> Any:  # pragma: no cover - never run
        raise AssertionError


def prompt_lm(chat_template: str | None = CHATML, *, template: str = "auto",
              extra: tuple[str, ...] = (), added: tuple[str, ...] = (),
              tool_format: str | None = None) -> CausalLM:
    """A :class:`CausalLM` that renders and encodes prompts (no weights: it never
    generates) on the byte tokenizer with ``chat_template``, ``extra`` special tokens and
    ``added`` plain ones (as Qwen 2.5's ``<tool_call>``)."""
    tokenizer = byte_tokenizer(chat_template, extra)
    if added:
        tokenizer.add_tokens(list(added))
    lm = CausalLM(_Model(), tokenizer, template=template)  # type: ignore[arg-type]
    if tool_format is not None:
        lm.tool_format = tool_format  # type: ignore[assignment]
    return lm
