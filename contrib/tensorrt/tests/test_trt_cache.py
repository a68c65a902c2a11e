"""Engine-cache keys and the cache folder (no TensorRT needed)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aieng_tensorrt import EngineCache, MiniLMTensorRT, ShapeProfile, TensorRTOptions
from aieng_tensorrt import engine_cache_key
from aieng_tensorrt._cache import onnx_digest
from hypothesis import given
from hypothesis import strategies as st

BASE = {"onnx_sha256": "a" * 64, "trt_version": "10.13.0.35",
        "compute_capability": (9, 0), "device_name": "NVIDIA H200",
        "precision": "fp16", "profile": ShapeProfile(), "workspace_mb": 1024}


def test_key_is_stable() -> None:
    """The same inputs give the same key, a SHA-256 hex digest."""
    key = engine_cache_key(**BASE)  # type: ignore[arg-type]
    assert key == engine_cache_key(**BASE)  # type: ignore[arg-type]
    assert len(key) == 64 and int(key, 16) >= 0


@pytest.mark.parametrize(("name", "value"), [
    ("onnx_sha256", "b" * 64),
    ("trt_version", "10.13.0.36"),
    ("compute_capability", (8, 9)),
    ("compute_capability", (9, 1)),
    ("device_name", "NVIDIA H100 80GB HBM3"),
    ("precision", "fp32"),
    ("profile", ShapeProfile(min_batch=2)),
    ("profile", ShapeProfile(opt_batch=8)),
    ("profile", ShapeProfile(max_batch=32)),
    ("profile", ShapeProfile(min_seq=8)),
    ("profile", ShapeProfile(opt_seq=64)),
    ("profile", ShapeProfile(max_seq=512)),
    ("workspace_mb", 2048),
])
def test_key_changes_with_each_input(name: str, value: object) -> None:
    """An engine built for other ONNX bytes, TensorRT, GPU, precision or profile is
    another cache entry; so is one built on another GPU model of the same compute
    capability (TensorRT's default engines are for the model they were built on: its
    ``HardwareCompatibilityLevel.NONE``; same capability is a level of its own)."""
    assert engine_cache_key(**{**BASE, name: value}) != engine_cache_key(**BASE)  # type: ignore[arg-type]


@given(st.lists(st.integers(1, 9), min_size=6, max_size=6).map(sorted),
       st.lists(st.integers(1, 9), min_size=6, max_size=6).map(sorted))
def test_distinct_profiles_distinct_keys(a: list[int], b: list[int]) -> None:
    """Two valid profiles share a key only when they are equal."""
    pa = ShapeProfile(a[0], a[1], a[2], a[3], a[4], a[5])
    pb = ShapeProfile(b[0], b[1], b[2], b[3], b[4], b[5])
    same = engine_cache_key(**{**BASE, "profile": pa}) == engine_cache_key(  # type: ignore[arg-type]
        **{**BASE, "profile": pb})
    assert same == (pa == pb)


def test_component_key_hashes_the_onnx_bytes(tmp_path: Path) -> None:
    """The component's key follows the ONNX file's bytes, not its name or time."""
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"graph-1")
    embedder = MiniLMTensorRT(TensorRTOptions(onnx_path=str(onnx)))
    first = embedder.cache_key("10.0", (8, 6))
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(b"graph-1")
    assert MiniLMTensorRT(TensorRTOptions(onnx_path=str(copy))).cache_key("10.0", (8, 6)) \
        == first
    onnx.write_bytes(b"graph-2")
    assert embedder.cache_key("10.0", (8, 6)) != first
    assert onnx_digest(copy) == "%s" % __import__("hashlib").sha256(b"graph-1").hexdigest()


def test_cache_stores_and_loads(tmp_path: Path) -> None:
    """A stored engine loads back byte for byte; a missing key is None; no temp file
    remains."""
    cache = EngineCache(tmp_path / "engines")
    assert cache.load("k") is None
    path = cache.store("k", b"\x00engine")
    assert path == tmp_path / "engines" / "k.engine"
    assert cache.load("k") == b"\x00engine"
    assert [p.name for p in (tmp_path / "engines").iterdir()] == ["k.engine"]


def test_cache_dir_follows_aieng_cache_dir(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``cache_dir``, engines go under aieng's cache folder (``$AIENG_CACHE_DIR``,
    as for the onnx and transformers caches) in ``tensorrt/``; an explicit ``cache_dir``
    is the engines' folder itself."""
    monkeypatch.setenv("AIENG_CACHE_DIR", str(tmp_path / "aieng"))
    embedder = MiniLMTensorRT(TensorRTOptions(onnx_path="m.onnx"))
    assert embedder.engine_cache().folder == tmp_path / "aieng" / "tensorrt"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    chosen = MiniLMTensorRT(TensorRTOptions(onnx_path="m.onnx", cache_dir="~/engines"))
    assert chosen.engine_cache().folder == tmp_path / "home" / "engines"


def test_stored_engines_are_shared_like_the_other_cache_files(
        tmp_path: Path) -> None:
    """An engine is written with the user's umask (readable by their other processes
    and accounts the umask allows, like every file of aieng's cache), not the private
    0600 of ``tempfile``."""
    previous = os.umask(0o022)
    try:
        path = EngineCache(tmp_path / "engines").store("k", b"engine")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_abandoned_scratch_engines_are_removed(tmp_path: Path) -> None:
    """A process killed while writing an engine leaves its scratch file (hundreds of MB)
    behind; the next store removes those of processes that are gone and untouched for
    a while, and nothing else: not a live process's, not a fresh one (a writer in another
    container looks dead from here), not a file of another name."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    old = time.time() - 7200  # two hours: past the abandonment delay
    folder = tmp_path / "engines"
    folder.mkdir()

    def leave(name: str, *, age: float | None = old) -> Path:
        path = folder / name
        path.write_bytes(b"half an engine")
        if age is not None:
            os.utime(path, (age, age))
        return path

    dead = leave(f".engine-{gone.pid}-0123456789ab.tmp")
    fresh = leave(f".engine-{gone.pid}-0123456789ac.tmp", age=None)
    live = leave(f".engine-{os.getpid()}-0123456789ad.tmp")
    other = leave(".engine-notes")
    EngineCache(folder).store("k", b"engine")
    assert not dead.exists() and fresh.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [fresh.name, live.name, other.name, "k.engine"])


def test_a_failed_write_leaves_no_scratch(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails (a full disk) removes its scratch file and keeps the engine
    that was cached before."""
    cache = EngineCache(tmp_path / "engines")
    cache.store("k", b"old engine")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        cache.store("k", b"new engine")
    assert [p.name for p in (tmp_path / "engines").iterdir()] == ["k.engine"]
    assert cache.load("k") == b"old engine"


#: Each option but ``onnx_path`` (its bytes are the key, not its name: tested above) with
#: another value, and whether that value builds another engine.
OTHER_VALUES: dict[str, tuple[object, bool]] = {
    "precision": ("fp32", True),
    "batch": ((1, 8, 64), True),
    "seq": ((1, 64, 256), True),
    "workspace_mb": (2048, True),  # the tactics TensorRT may pick are those that fit
    "tokenizer_path": ("elsewhere/tokenizer.json", False),
    "cache_dir": ("elsewhere", False),
    "device": (1, False),  # the same GPU model: the key has its name and capability
    "model": ("another-id", False),
}


def test_every_option_that_changes_the_engine_is_in_the_key(tmp_path: Path) -> None:
    """An option that changes the built engine gives another key (the workspace limit was
    left out: two pipelines differing only in it shared one engine); an option that does
    not (the device index of the same GPU model, the tokenizer, the cache folder, the
    model id) keeps the key, so no engine is built again for it. Every option is one or
    the other: a new option fails here until it is classified."""
    import attrs

    fields = {field.name for field in attrs.fields(TensorRTOptions)}
    assert set(OTHER_VALUES) == fields - {"onnx_path"}
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"graph-1")
    options = TensorRTOptions(onnx_path=str(onnx))
    base = MiniLMTensorRT(options).cache_key("10.13.0.35", (9, 0), "NVIDIA H200")
    changed = {name: MiniLMTensorRT(attrs.evolve(options, **{name: value})).cache_key(
        "10.13.0.35", (9, 0), "NVIDIA H200") != base
        for name, (value, _) in OTHER_VALUES.items()}
    assert changed == {name: builds for name, (_, builds) in OTHER_VALUES.items()}
