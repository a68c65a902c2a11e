"""The second day of the GGUF conversion cache: a converter upgraded (or two environments
of different versions sharing one cache), a cache folder moved to another path, the cache
on a read-only mount. The conversion itself is stubbed."""

from __future__ import annotations

import errno
import importlib.metadata
import shutil
from pathlib import Path

import pytest
from aieng_transformers import _convert
from aieng_transformers._convert import MARKER, cached_folder, convert_gguf


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "tiny.Q4.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return path


def _bump(monkeypatch: pytest.MonkeyPatch, bumped: str) -> None:
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "99.0.0" if name == bumped else real(name))


@pytest.mark.parametrize("library", ["transformers", "gguf", "tokenizers", "torch",
                                     "safetensors"])
def test_the_key_follows_the_converters_versions(gguf: Path, tmp_path: Path, library: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A new transformers (its GGUF loader and tokenizer conversion), gguf (the
    dequantization) or tokenizers (the ``tokenizer.json`` it writes, which an older one
    may not read) gives a new conversion folder; torch and safetensors, which only carry
    the float32 tensors to disk, do not (before, no version was in the key: a conversion
    by another transformers was served as this one's)."""
    before = cached_folder(gguf, tmp_path)
    _bump(monkeypatch, library)
    changed = cached_folder(gguf, tmp_path) != before
    assert changed is (library in _convert.CONVERTER)


def test_an_upgrade_converts_once_more(gguf: Path, tmp_path: Path, writes: list[Path],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """After an upgrade of transformers the GGUF is converted again into a folder of its
    own; the older environment, sharing the cache, keeps finding its own folder."""
    first = convert_gguf(gguf, tmp_path)
    _bump(monkeypatch, "transformers")
    second = convert_gguf(gguf, tmp_path)
    assert second != first and writes == [second.parent / writes[0].name, writes[1]]
    assert (first / MARKER).is_file() and (second / MARKER).is_file()
    monkeypatch.undo()
    monkeypatch.setattr(_convert, "_write", lambda *args: pytest.fail("converted again"))
    assert convert_gguf(gguf, tmp_path) == first


def test_a_moved_cache_serves_its_conversion(gguf: Path, tmp_path: Path,
                                             writes: list[Path]) -> None:
    """The cache folder copied to another path (another machine, a path with spaces and
    non-ASCII characters) serves the conversion without converting again: nothing in
    the key or the folder depends on where the cache is."""
    root = tmp_path / "cache"
    first = convert_gguf(gguf, root)
    moved = tmp_path / "nouvelle maison" / "cachè"
    shutil.copytree(root, moved)
    again = convert_gguf(gguf, moved)
    assert again == moved / first.relative_to(root) and len(writes) == 1


def test_a_damaged_conversion_on_a_read_only_cache_names_the_folder(
        gguf: Path, tmp_path: Path, writes: list[Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged conversion in a cache that cannot be written (a read-only mount) can
    neither be loaded nor made again: the error names the folder, what is wrong with it
    and what to set, instead of the raw rename error of the scratch name."""
    root = tmp_path / "cache"
    target = convert_gguf(gguf, root)
    (target / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    real_rename = Path.rename

    def read_only(self: Path, to: Path) -> Path:
        if self.parent == target.parent:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_rename(self, to)

    monkeypatch.setattr(Path, "rename", read_only)
    with pytest.raises(OSError, match="AIENG_CACHE_DIR") as caught:
        convert_gguf(gguf, root)
    message = str(caught.value)
    assert str(target) in message and "damaged" in message
    assert ".tmp" not in message
