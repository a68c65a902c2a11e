"""The export cache: its key follows every exporter version (and only the exporter's);
a damaged file in it (a truncated or empty ``model.onnx``, a variant cut short, a
``config.json`` that is no JSON: a full disk, a crash before the bytes reached it, a copy
in half) is made again with a warning, instead of failing every load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import structlog
from aieng_onnx import (
    CAUSAL_TASK,
    MiniLMOnnxEmbedder,
    MiniLMOnnxOptions,
    SmolLM2OnnxBackend,
    SmolLM2OnnxOptions,
    export_key,
)
from aieng_onnx import _embedder as embedder_module
from aieng_onnx import _export as export_module
from aieng_transformers.testing import random_llama
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TEXTS = ["the cat sat on the mat", "a dog", "stock market fell", ""]


EXPORTER = ("optimum", "optimum-onnx", "torch", "transformers")


@pytest.mark.parametrize("task", ["feature-extraction", CAUSAL_TASK])
def test_every_exporter_version_is_in_the_key(bert_dir: Path, task: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A new optimum, optimum-onnx, torch or transformers gives a new export (each one
    changes the key); a new ONNX Runtime (or onnx) does not: the export does not depend
    on it, its variants carry its version in their names."""
    real = export_module._version
    key = export_key(bert_dir, 18, task)
    keys = set()
    for bumped in (*EXPORTER, "onnxruntime", "onnxruntime-gpu", "onnx"):
        monkeypatch.setattr(export_module, "_version",
                            lambda name, bumped=bumped: "0.0.0-new" if name == bumped
                            else real(name))
        keys.add((bumped, export_key(bert_dir, 18, task) != key))
    assert keys == {*((name, True) for name in EXPORTER),
                    ("onnxruntime", False), ("onnxruntime-gpu", False), ("onnx", False)}
    monkeypatch.setattr(export_module, "_version", real)
    assert export_key(bert_dir, 18, task) == key
    assert export_key(bert_dir, 18, "feature-extraction") != export_key(bert_dir, 18,
                                                                        CAUSAL_TASK)


def embedder(folder: Path, cache: Path, **options: object) -> MiniLMOnnxEmbedder:
    return MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(folder), cache_dir=str(cache),
                                                providers=("cpu",), **options))  # type: ignore[arg-type]


def half(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[:len(data) // 2])


def empty(file: Path) -> None:
    file.write_bytes(b"")


def garbage(file: Path) -> None:
    file.write_bytes(b"\xff\x00 not a model" * 64)


DAMAGE: dict[str, Callable[[Path], None]] = {"half": half, "empty": empty, "garbage": garbage}


def damaged_events(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if e["event"] == "onnx.cache_damaged"]


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_export_is_exported_again(bert_dir: Path, tmp_path: Path,
                                            damage: str) -> None:
    """A cached ``model.onnx`` that does not parse is exported again, with a warning
    naming it, and the vectors are the first export's; before, every load failed with
    ONNX Runtime's ``INVALID_PROTOBUF`` until the folder was found and deleted by hand."""
    first = embedder(bert_dir, tmp_path)
    expected = first.encode(TEXTS)
    model = next((tmp_path / "onnx").glob("*/model.onnx"))
    DAMAGE[damage](model)
    again = embedder(bert_dir, tmp_path)
    with structlog.testing.capture_logs() as logs:
        got = again.encode(TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert again.exported is True
    events = damaged_events(logs)
    assert [e["file"] for e in events] == [str(model)]
    assert all(e["log_level"] == "warning" for e in events)
    assert [p.name for p in (tmp_path / "onnx").iterdir()] == [model.parent.name]
    check = embedder(bert_dir, tmp_path)
    check.load()
    assert check.exported is False


def test_a_damaged_int8_file_is_quantized_again(bert_dir: Path, tmp_path: Path) -> None:
    """A cut int8 variant is quantized again from the export, which is kept."""
    first = embedder(bert_dir, tmp_path, precision="int8", int8_weights="s8")
    expected = first.encode(TEXTS)
    int8 = next((tmp_path / "onnx").glob("*/model.int8.*.onnx"))
    half(int8)
    again = embedder(bert_dir, tmp_path, precision="int8", int8_weights="s8")
    with structlog.testing.capture_logs() as logs:
        got = again.encode(TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert again.exported is False  # the export was sound: only the variant is made again
    assert [e["file"] for e in damaged_events(logs)] == [str(int8)]


def test_a_damaged_config_is_exported_again(bert_dir: Path, tmp_path: Path) -> None:
    """The export folder's ``config.json`` cut short is no JSON: the folder is exported
    again (its width and token limit come from it)."""
    embedder(bert_dir, tmp_path).load()
    config = next((tmp_path / "onnx").glob("*/config.json"))
    half(config)
    again = embedder(bert_dir, tmp_path)
    with structlog.testing.capture_logs() as logs:
        again.load()
    assert again.exported is True
    assert [e["file"] for e in damaged_events(logs)] == [str(config)]


def test_another_failure_is_raised_and_keeps_the_cache(
        bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A load failing for another reason than a damaged file raises that error, and the
    cache is left as it was (nothing is exported again)."""
    embedder(bert_dir, tmp_path).load()
    before = sorted(p.name for p in (tmp_path / "onnx").glob("*/*"))

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no such provider today")

    monkeypatch.setattr(embedder_module, "shared_session", refuse)
    again = embedder(bert_dir, tmp_path)
    with structlog.testing.capture_logs() as logs, \
            pytest.raises(RuntimeError, match="no such provider today"):
        again.load()
    assert not damaged_events(logs)
    assert sorted(p.name for p in (tmp_path / "onnx").glob("*/*")) == before


def test_a_damaged_causal_export_is_exported_again(tmp_path: Path) -> None:
    """``smollm2-onnx`` does the same with its export, and decodes as before."""
    folder = random_llama(tmp_path / "llama")
    cache = tmp_path / "cache"

    def backend() -> SmolLM2OnnxBackend:
        return SmolLM2OnnxBackend(SmolLM2OnnxOptions(path=str(folder), cache_dir=str(cache),
                                                     providers=("cpu",)))

    first = backend()
    first.load()
    model = first.file
    assert model is not None
    text = "the cat sat"
    expected = first.perplexity(text, window=16)
    half(model)
    again = backend()
    with structlog.testing.capture_logs() as logs:
        again.load()
    assert again.exported is True
    assert [e["file"] for e in damaged_events(logs)] == [str(model)]
    assert again.perplexity(text, window=16) == pytest.approx(expected, rel=1e-5)


#: Texts the parity property draws from: any unicode (lone surrogates, controls, CJK,
#: emoji), empty strings, and texts far past 256 tokens (both models truncate there).
_TEXTS = st.one_of(
    st.text(max_size=40),
    st.just(""),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12).map(
        lambda word: " ".join([word] * 300)),
    st.sampled_from(["ok", "Zürich, 東京 and São Paulo", "\ud800 lone", "🙂" * 400]))


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(_TEXTS, min_size=1, max_size=6))
def test_fp32_equals_torch_on_any_text(shipped_fp32: MiniLMOnnxEmbedder,
                                       shipped_torch: object, texts: list[str]) -> None:
    """Needs the shipped model: on any unicode text, empty ones and ones past the 256
    tokens both truncate at, fp32 vectors are the torch ``minilm``'s (cosine ≥ 0.9999
    each) and unit vectors."""
    got = shipped_fp32.encode(texts)
    expected = shipped_torch.encode(texts)  # type: ignore[attr-defined]
    assert got.shape == expected.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosines = (got * expected).sum(axis=1)
    assert cosines.min() >= 0.9999, (cosines, texts)
