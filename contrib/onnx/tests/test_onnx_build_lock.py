"""One export and one variant across processes: two workers starting at once (two
``aieng serve`` processes sharing a cache) make each cache entry once; the second waits on
the lock file beside the entry, then loads the first one's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from aieng_onnx import _export as export_module

from aieng_core.testing import race_processes

_EXPORT = """
from aieng_onnx import _export
def fake(folder, target, opset, task):  # the exporter, slow enough to overlap
    with open(here / "exports", "a") as log:
        log.write("x\\n")
    time.sleep(0.5)
    (target / "model.onnx").write_bytes(b"exported")
_export._export_now = fake
folder, made = _export.exported(Path(sys.argv[3]), here / "cache", opset=18)
print(json.dumps([str(folder), made, (folder / "model.onnx").read_text()]))
"""


def test_two_processes_export_once(bert_dir: Path, tmp_path: Path) -> None:
    """Two processes exporting one model into one cache at once: one exports, the other
    waits for it and gets its folder (not a second export: minutes, and a second copy of
    the model in memory)."""
    outs = [json.loads(line) for line in race_processes(_EXPORT, tmp_path, str(bert_dir))]
    assert (tmp_path / "exports").read_text().splitlines() == ["x"]
    folders = {out[0] for out in outs}
    assert len(folders) == 1 and Path(folders.pop()).parent == tmp_path / "cache" / "onnx"
    assert sorted(out[1] for out in outs) == [False, True]
    assert all(out[2] == "exported" for out in outs)


_INT8 = """
from aieng_onnx import MiniLMOnnxEmbedder, MiniLMOnnxOptions, _export

real = _export.quantize
def counted(*args, **kwargs):  # the real quantization, then a pause: the two overlap
    with open(here / "quantized", "a") as log:
        log.write("x\\n")
    real(*args, **kwargs)
    time.sleep(0.5)
_export.quantize = counted
embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(path=sys.argv[3], cache_dir=sys.argv[4],
                                                precision="int8", providers=("cpu",)))
vector = embedder.encode(["the cat sat on the mat"])[0]
print(json.dumps([round(float(x), 6) for x in vector]))
"""


def test_two_processes_quantize_once_and_load_the_same(bert_dir: Path, onnx_cache: Path,
                                                       tmp_path: Path) -> None:
    """Two workers opening an int8 ``minilm-onnx`` at once, over a cache holding the fp32
    export only: the int8 file is quantized once (the real quantization), and both load
    it and embed alike."""
    folder, _ = export_module.exported(bert_dir, onnx_cache, opset=18)
    cache = tmp_path / "cache"
    shutil.copytree(folder, cache / "onnx" / folder.name,
                    ignore=shutil.ignore_patterns("model.*.onnx", ".*"))
    outs = [json.loads(line) for line in race_processes(_INT8, tmp_path, str(bert_dir), str(cache))]
    assert (tmp_path / "quantized").read_text().splitlines() == ["x"]
    assert outs[0] == outs[1]
    made = sorted(p.name for p in (cache / "onnx" / folder.name).glob("model.*.onnx"))
    assert len(made) == 1 and ".int8" in made[0]


def test_no_lock_file_is_left(bert_dir: Path, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock file beside an entry lives while it is built: the cache keeps the export
    and no lock (nor scratch) once it is made."""
    seen: list[bool] = []

    def export(folder: Path, target: Path, opset: int, task: str) -> None:
        seen.append(any(p.name.endswith(".lock") for p in target.parent.iterdir()))
        (target / "model.onnx").write_bytes(b"exported")

    monkeypatch.setattr(export_module, "_export_now", export)
    folder, made = export_module.exported(bert_dir, tmp_path, opset=18)
    assert made and seen == [True]
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
