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
           "require_distribution", "tiny_bert"]


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
