"""A cache that cannot be written: exports and variants fail before the slow work, with an
error naming the folder and what to set (not the hidden scratch name from deep inside
the exporter or the quantizer)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from aieng_onnx import MiniLMOnnxEmbedder, MiniLMOnnxOptions
from aieng_onnx import _export as export_module

#: What every such error says to do.
HINT = r"set the component's cache_dir \(or \$AIENG_CACHE_DIR\) to a writable folder"


@pytest.fixture
def no_exporter(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The exporter replaced by a recorder: the calls it got."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(export_module, "_export_now", lambda *args: calls.append(args))
    return calls


def test_a_cache_dir_that_is_a_file_says_what_to_set(
        bert_dir: Path, tmp_path: Path, no_exporter: list[tuple[Any, ...]]) -> None:
    """A ``cache_dir`` where a folder cannot be made (a file is there) fails before the
    exporter runs, as the file system's error, naming the folder and the options."""
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder", encoding="utf-8")
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=str(bert_dir), cache_dir=str(blocker)))
    with pytest.raises(NotADirectoryError, match=HINT) as caught:
        embedder.load()
    assert str(blocker / "onnx") in str(caught.value)
    assert no_exporter == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs a user whom a folder's mode binds (root writes anyway)")
def test_a_read_only_cache_fails_before_exporting(
        bert_dir: Path, tmp_path: Path, no_exporter: list[tuple[Any, ...]]) -> None:
    """An existing read-only ``cache/onnx`` fails with ``PermissionError`` naming it, before
    the exporter loads the model (which would fail minutes later on a hidden name)."""
    folder = tmp_path / "cache" / "onnx"
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=HINT) as caught:
            export_module.exported(bert_dir, tmp_path / "cache", opset=18)
    finally:
        folder.chmod(0o755)
    assert str(folder) in str(caught.value)
    assert no_exporter == [] and list(folder.iterdir()) == []


@pytest.fixture(scope="module")
def fp32_only(bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT's export folder, in a cache of its own: no variant made yet."""
    folder, _ = export_module.exported(bert_dir, tmp_path_factory.mktemp("fp32-only"),
                                       opset=18)
    return folder


@pytest.mark.parametrize("make", ["int8", "q8", "bert"])
def test_a_variant_that_cannot_be_written_fails_before_its_work(
        fp32_only: Path, tmp_path: Path, make: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export folder where no scratch file can be made (a read-only cache holding the
    fp32 export only) fails before quantizing or fusing, naming the folder and the
    options."""
    folder = fp32_only
    blocker = tmp_path / "blocker"
    blocker.write_text("", encoding="utf-8")
    # Any scratch name lands under a file: its creation fails as in a read-only folder.
    monkeypatch.setattr(export_module, "scratch_path",
                        lambda parent, prefix, suffix="": blocker / f".{prefix}{suffix}")
    work: list[str] = []
    monkeypatch.setattr(export_module, "quantize", lambda *args, **kw: work.append("q"))
    monkeypatch.setattr(export_module, "optimize_bert", lambda *args, **kw: work.append("o"))
    with pytest.raises(NotADirectoryError, match=HINT) as caught:
        if make == "bert":
            export_module.optimized_variant(folder)
        else:
            export_module.quantized_variant(folder, precision=make, weights="s8")
    assert str(folder) in str(caught.value)
    assert work == [] and sorted(p.name for p in folder.iterdir() if 'onnx' in p.name) \
        == ["model.onnx"]
