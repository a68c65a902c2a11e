"""``aieng models --dtype`` rows of ``smollm2-onnx``: the estimate of the component as if
configured at that precision, checked against a count of the model's own tensors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import pytest
from aieng_onnx import SmolLM2OnnxBackend, SmolLM2OnnxOptions
from aieng_transformers import aieng_register_commands
from aieng_transformers.testing import random_llama
from click.testing import CliRunner

#: Bytes per weight of the block-wise precisions: the weight, and a float32 scale per 32.
BLOCKWISE = {"q8": 1 + 4 / 32, "q4": 0.5 + 4 / 32}


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_llama(tmp_path_factory.mktemp("llama"))


def _counts(folder: Path) -> tuple[int, dict[str, int]]:
    """All weights of the folder's safetensors, and those of each tensor, by shape."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "np") as weights:
        names = list(weights.keys())
        sizes = {k: math.prod(weights.get_slice(k).get_shape()) for k in names}
    return sum(sizes.values()), sizes


def _rows(folder: Path, cache: Path, tmp_path: Path, dtype: str,
          **options: Any) -> dict[str, Any]:
    """The ``--json`` rows of ``aieng models PIPELINE --dtype dtype --context 50``."""
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in options.items())
    file = tmp_path / "estimate.toml"
    file.write_text(f"""
[pipeline]
name = "estimate"

[components.llm]
use = "smollm2-onnx"
path = "{folder}"
cache_dir = "{cache}"
{extra}""", encoding="utf-8")
    group = click.Group("aieng")
    aieng_register_commands(group)
    result = CliRunner().invoke(group, ["models", str(file), "--json", "--context", "50",
                                        "--dtype", dtype])
    assert result.exit_code == 0, result.output
    return {row["component"]: row for row in json.loads(result.stdout)}


@pytest.mark.parametrize("configured", ["fp32", "int8"])
@pytest.mark.parametrize("dtype", ["q8", "q4"])
def test_dtype_rows_keep_the_embeddings_float32(llama_dir: Path, tmp_path: Path,
                                                configured: str, dtype: str) -> None:
    """``--dtype q4`` / ``q8`` asks what the component takes at that precision: the token
    embeddings ``MatMulNBits`` leaves float32 count 4 bytes each, the other weights the
    block-wise bytes; the row is the estimate of the component configured at ``dtype``
    (regression: ``--dtype`` dropped them, under-counting the weights)."""
    cache = tmp_path / "cache"
    row = _rows(llama_dir, cache, tmp_path, dtype, precision=configured)["llm"]
    same = SmolLM2OnnxBackend(SmolLM2OnnxOptions(path=str(llama_dir), cache_dir=str(cache),
                                                 precision=dtype))
    expected = same.memory_estimate(context=50)
    assert {k: row[k] for k in expected} == {**expected, "model": row["model"]}
    total, sizes = _counts(llama_dir)
    embeddings = sum(n for name, n in sizes.items() if "embed_tokens" in name)
    assert embeddings > 0 and row["kept_fp32_parameters"] == embeddings
    by_hand = (total - embeddings) * BLOCKWISE[dtype] + embeddings * 4
    assert row["weights_bytes"] == pytest.approx(by_hand, abs=1)
    assert row["total_bytes"] == row["weights_bytes"] + row["kv_cache_bytes"]
    assert not cache.exists()  # nothing exported to estimate it


def test_dtype_rows_keep_the_components_keep_fp32(llama_dir: Path, tmp_path: Path) -> None:
    """A component's own ``keep_fp32`` still holds under ``--dtype q4`` (with the
    embeddings) and ``int8`` (alone); at a float ``--dtype`` nothing is quantized, so
    nothing is kept apart."""
    cache = tmp_path / "cache"
    total, sizes = _counts(llama_dir)
    down = sum(n for name, n in sizes.items() if "down_proj" in name)
    embeddings = sum(n for name, n in sizes.items() if "embed_tokens" in name)
    options = {"precision": "int8", "keep_fp32": ["down_proj"]}
    q4 = _rows(llama_dir, cache, tmp_path, "q4", **options)["llm"]
    assert q4["kept_fp32_parameters"] == down + embeddings
    assert q4["weights_bytes"] == pytest.approx(
        (total - down - embeddings) * BLOCKWISE["q4"] + (down + embeddings) * 4, abs=1)
    int8 = _rows(llama_dir, cache, tmp_path, "int8", **options)["llm"]
    assert int8["kept_fp32_parameters"] == down
    assert int8["weights_bytes"] == total - down + down * 4
    fp16 = _rows(llama_dir, cache, tmp_path, "fp16", **options)["llm"]
    assert "kept_fp32_parameters" not in fp16 and fp16["weights_bytes"] == total * 2
