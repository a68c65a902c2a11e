"""A model loaded in a type this CPU only emulates (bfloat16 / float16 without their x86
instructions) says so with a ``dtype.emulated`` warning; float32, GPUs and CPUs with the
instructions load quietly."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from _tiny import random_llama
from aieng_transformers import MiniLMEmbedder, MiniLMOptions, SmolLM2Backend, SmolLM2Options, _cpu

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
SAPPHIRE_RAPIDS = AVX2 | {"avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16", "amx_tile"}


@pytest.fixture
def flags(monkeypatch: pytest.MonkeyPatch) -> dict[str, frozenset[str] | None]:
    """Set the CPU flags :mod:`aieng_transformers._cpu` reads (``value``)."""
    holder: dict[str, frozenset[str] | None] = {"value": AVX2}
    monkeypatch.setattr(_cpu, "cpu_flags", lambda: holder["value"])
    return holder


def test_emulated_types_are_those_without_instructions(
        flags: dict[str, frozenset[str] | None]) -> None:
    """bfloat16 and float16 are emulated on an AVX2-only x86 CPU, native with AVX-512
    BF16 / FP16 or AMX, never judged on a GPU, for float32, or where the flags are
    unknown (not x86)."""
    assert _cpu.emulated_dtype("bfloat16", "cpu") and _cpu.emulated_dtype("float16", "cpu")
    assert not _cpu.emulated_dtype("float32", "cpu")
    assert not _cpu.emulated_dtype("bfloat16", "cuda:0")
    flags["value"] = SAPPHIRE_RAPIDS
    assert not _cpu.emulated_dtype("bfloat16", "cpu") and not _cpu.emulated_dtype("float16", "cpu")
    flags["value"] = AVX2 | {"avx512_bf16"}
    assert not _cpu.emulated_dtype("bfloat16", "cpu") and _cpu.emulated_dtype("float16", "cpu")
    flags["value"] = None
    assert not _cpu.emulated_dtype("bfloat16", "cpu")


def test_loading_in_an_emulated_type_warns(flags: dict[str, frozenset[str] | None],
                                          bert_dir: Path, tmp_path: Path) -> None:
    """``minilm`` and ``smollm2`` loaded in bfloat16 on an AVX2-only CPU log
    ``dtype.emulated`` naming the type and what to use; in float32, or on a CPU with
    AMX, they do not."""
    causal = random_llama(tmp_path)

    def events(dtype: str) -> list[dict[str, object]]:
        with structlog.testing.capture_logs() as logs:
            MiniLMEmbedder(MiniLMOptions(path=str(bert_dir),
                                         dtype=dtype)).load()  # type: ignore[arg-type]
            SmolLM2Backend(SmolLM2Options(path=str(causal),
                                          dtype=dtype)).load()  # type: ignore[arg-type]
        return [e for e in logs if e["event"] == "dtype.emulated"]

    warned = events("bfloat16")
    assert [e["component"] for e in warned] == ["minilm", "causal-lm"]
    assert all(e["log_level"] == "warning" and "float32" in str(e["reason"]) for e in warned)
    assert events("float32") == []
    flags["value"] = SAPPHIRE_RAPIDS
    assert events("bfloat16") == []
