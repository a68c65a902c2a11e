"""Engine-cache keys and the cache folder (no TensorRT needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aieng_tensorrt import EngineCache, MiniLMTensorRT, ShapeProfile, TensorRTOptions
from aieng_tensorrt import engine_cache_key
from aieng_tensorrt._cache import onnx_digest
from hypothesis import given
from hypothesis import strategies as st

BASE = {"onnx_sha256": "a" * 64, "trt_version": "10.13.0.35",
        "compute_capability": (9, 0), "precision": "fp16", "profile": ShapeProfile()}


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
    ("precision", "fp32"),
    ("profile", ShapeProfile(min_batch=2)),
    ("profile", ShapeProfile(opt_batch=8)),
    ("profile", ShapeProfile(max_batch=32)),
    ("profile", ShapeProfile(min_seq=8)),
    ("profile", ShapeProfile(opt_seq=64)),
    ("profile", ShapeProfile(max_seq=512)),
])
def test_key_changes_with_each_input(name: str, value: object) -> None:
    """An engine built for other ONNX bytes, TensorRT, GPU, precision or profile is
    another cache entry."""
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
