"""One GGUF conversion and one quantization across processes: two workers starting at
once (two ``aieng serve`` processes sharing a cache) make each cache entry once; the
second waits on the lock file beside the entry (:func:`aieng_hookspecs.build_lock`, whose
own tests are in tests/test_build_lock.py), then loads the first one's."""

from __future__ import annotations

from pathlib import Path

from aieng_core.testing import race_processes

_CONVERT = """
from aieng_transformers import _convert
def fake(gguf, folder):  # the conversion, slow enough to overlap
    with open(here / "conversions", "a") as log:
        log.write("x\\n")
    time.sleep(0.5)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / _convert.MARKER).write_text(json.dumps({"format": 1, "files": {}}))
_convert._write = fake
print(_convert.convert_gguf(Path(sys.argv[3]), here / "cache"))
"""


def test_two_processes_convert_a_gguf_once(tmp_path: Path) -> None:
    """Two processes loading one GGUF into one cache at once: one converts (17 s for
    SmolLM2 on a core), the other waits and gets its folder."""
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF not really")
    outs = race_processes(_CONVERT, tmp_path, str(gguf))
    assert (tmp_path / "conversions").read_text().splitlines() == ["x"]
    assert outs[0] == outs[1] and Path(outs[0]).parent == tmp_path / "cache" / "transformers"
    # No lock file (nor scratch) is left beside the folder.
    assert [p.name for p in Path(outs[0]).parent.iterdir()] == [Path(outs[0]).name]


_QUANTIZE = """
from aieng_transformers import TorchInt8Quantizer, TorchQuantizeOptions, _quantize

def fake(folder, scratch, scheme, kind, *, keep_fp32):  # the work, slow enough to overlap
    with open(here / "quantized", "a") as log:
        log.write("x\\n")
    time.sleep(0.5)
    scratch.mkdir(parents=True)
    (scratch / "model-int8.pt").write_bytes(b"w")  # the size_after its marker records
    saved = {"scheme": scheme, "kind": kind, "size_before": 2, "size_after": 1,
             "quality": {"cosine": 0.99}, "modules": []}
    (scratch / _quantize.QUANTIZE_MARKER).write_text(json.dumps(saved))
    return saved
_quantize._write = fake
result = TorchInt8Quantizer(TorchQuantizeOptions(output_dir=str(here / "out"))).quantize(
    Path(sys.argv[3]))
print(result.model)
"""


def test_two_processes_quantize_once(tmp_path: Path) -> None:
    """Two processes quantizing one model with ``torch-int8`` at once: one quantizes, the
    other waits and answers with its folder."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"architectures": ["BertModel"]}', encoding="utf-8")
    (model / "model.safetensors").write_bytes(b"weights")
    outs = race_processes(_QUANTIZE, tmp_path, str(model))
    assert (tmp_path / "quantized").read_text().splitlines() == ["x"]
    assert outs[0] == outs[1] and Path(outs[0]).parent == tmp_path / "out"
