"""The tiny models of :mod:`aieng_transformers.testing`, and the shipped-model guard."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
           "chain_llama", "plant_scratch", "random_llama", "require_distribution",
           "tiny_bert"]


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
