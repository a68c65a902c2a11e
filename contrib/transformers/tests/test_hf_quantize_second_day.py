"""The second day of ``torch-int8``'s saved folders: a marker emptied or cut short (a
crash before the disk had it), weights cut short, a folder written by a newer version or
moved to another path."""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog
from aieng_transformers import TorchInt8Quantizer, TorchQuantizeOptions, load_quantized
from aieng_transformers._quantize import QUANTIZE_MARKER


def quantizer(tmp_path: Path) -> TorchInt8Quantizer:
    return TorchInt8Quantizer(TorchQuantizeOptions(output_dir=str(tmp_path / "out")))


def _empty(folder: Path) -> None:
    (folder / QUANTIZE_MARKER).write_bytes(b"")


def _cut(folder: Path) -> None:
    marker = folder / QUANTIZE_MARKER
    marker.write_bytes(marker.read_bytes()[:40])


def _keys_lost(folder: Path) -> None:
    (folder / QUANTIZE_MARKER).write_text("{}", encoding="utf-8")


def _weights_cut(folder: Path) -> None:
    weights = folder / "model-int8.pt"
    weights.write_bytes(weights.read_bytes()[:100])


DAMAGE: dict[str, Callable[[Path], None]] = {
    "empty marker": _empty, "cut marker": _cut, "marker without keys": _keys_lost,
    "weights cut": _weights_cut}


@pytest.fixture(scope="module")
def quantized(random_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One quantization, copied by each test (quantizing takes a second or two).
    out = tmp_path_factory.mktemp("quantized")
    result = quantizer(out).quantize(random_dir)
    assert result is not None
    return Path(result.model)


def _copy(quantized: Path, tmp_path: Path) -> Path:
    target = tmp_path / "out" / quantized.name
    shutil.copytree(quantized, target)
    return target


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_saved_folder_is_quantized_again(quantized: Path, random_dir: Path,
                                                   tmp_path: Path, damage: str) -> None:
    """A saved folder whose marker does not read, or whose weights are not the size its
    marker records, is quantized again with a warning naming it (before, a damaged
    marker failed every call with a raw ``JSONDecodeError`` / ``KeyError``, and cut
    weights were handed out as the result, failing in ``load_quantized``)."""
    target = _copy(quantized, tmp_path)
    expected = json.loads((target / QUANTIZE_MARKER).read_text(encoding="utf-8"))
    DAMAGE[damage](target)
    with structlog.testing.capture_logs() as logs:
        result = quantizer(tmp_path).quantize(random_dir)
    assert result is not None and Path(result.model) == target
    assert [e["folder"] for e in logs if e["event"] == "quantize.cache_damaged"] == \
        [str(target)]
    assert any(e["event"] == "quantize.finished" for e in logs)
    assert json.loads((target / QUANTIZE_MARKER).read_text(encoding="utf-8"))["modules"] \
        == expected["modules"]
    load_quantized(target)
    assert sorted(p.name for p in target.parent.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_load_quantized_names_a_damaged_folder(quantized: Path, tmp_path: Path,
                                               damage: str) -> None:
    """``load_quantized`` on a damaged folder says which file and what to do, instead of
    a ``JSONDecodeError``, a ``KeyError`` or torch's zip-archive error."""
    target = _copy(quantized, tmp_path)
    DAMAGE[damage](target)
    with pytest.raises(ValueError, match="quantize it again") as caught:
        load_quantized(target)
    assert str(target) in str(caught.value)


def test_load_quantized_refuses_a_newer_format(quantized: Path, tmp_path: Path) -> None:
    """A folder written by a newer aieng-transformers (a format number this one does not
    know) is refused, naming the file and the version found, not read as this layout."""
    target = _copy(quantized, tmp_path)
    marker = target / QUANTIZE_MARKER
    saved = json.loads(marker.read_text(encoding="utf-8"))
    marker.write_text(json.dumps({**saved, "format": 99}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"format 99.*newer aieng-transformers") as caught:
        load_quantized(target)
    assert str(marker) in str(caught.value)


def test_load_quantized_without_a_marker_says_so(quantized: Path, tmp_path: Path) -> None:
    """A folder without the marker (a plain HF folder, a copy in half) is named as not a
    finished torch-int8 folder."""
    target = _copy(quantized, tmp_path)
    (target / QUANTIZE_MARKER).unlink()
    with pytest.raises(FileNotFoundError, match="torch-int8"):
        load_quantized(target)


def test_a_moved_folder_still_loads(quantized: Path, tmp_path: Path) -> None:
    """A saved folder moved to another path (another machine, a path with spaces and
    non-ASCII characters) loads: nothing in it points to where it was written."""
    moved = tmp_path / "déplacé ici" / "modèle int8"
    moved.parent.mkdir()
    shutil.copytree(quantized, moved)
    assert load_quantized(moved) is not None


def test_a_newer_folder_is_refused_not_replaced(quantized: Path, random_dir: Path,
                                                tmp_path: Path) -> None:
    """A saved folder whose marker has a newer format is refused by ``quantize`` too,
    and left as it is: never discarded as damaged."""
    target = _copy(quantized, tmp_path)
    marker = target / QUANTIZE_MARKER
    marker.write_text(json.dumps({**json.loads(marker.read_text(encoding="utf-8")),
                                  "format": 2}), encoding="utf-8")
    written = marker.read_bytes()
    with pytest.raises(ValueError, match="newer aieng-transformers"):
        quantizer(tmp_path).quantize(random_dir)
    assert marker.read_bytes() == written


def test_a_damaged_folder_on_a_read_only_output_names_it(
        quantized: Path, random_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged saved folder that cannot be removed (a read-only output_dir) is an
    ``OSError`` naming the folder, the damage and what to set, not the scratch rename's
    raw error."""
    target = _copy(quantized, tmp_path)
    _empty(target)
    real_rename = Path.rename

    def read_only(self: Path, to: Path) -> Path:
        if self == target:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_rename(self, to)

    monkeypatch.setattr(Path, "rename", read_only)
    with pytest.raises(OSError, match="output_dir") as caught:
        quantizer(tmp_path).quantize(random_dir)
    assert str(target) in str(caught.value) and ".tmp" not in str(caught.value)
