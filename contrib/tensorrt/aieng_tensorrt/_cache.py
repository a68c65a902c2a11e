"""The engine cache: one serialized engine per (ONNX, TensorRT, GPU, precision, profile)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import structlog
from aieng_hookspecs import remove_abandoned as shared_remove_abandoned
from aieng_hookspecs import scratch_path

from ._profile import ShapeProfile

__all__ = ["CACHE_FORMAT", "EngineCache", "engine_cache_key", "onnx_digest",
           "remove_abandoned"]

log = structlog.get_logger(__name__)

#: Bumped when the key's parts or the cache layout change (2: the GPU's name).
CACHE_FORMAT = 2
# A scratch engine: ``.engine-<pid>-<random>.tmp`` (aieng_hookspecs.scratch_path).
_SCRATCH_PREFIX, _SCRATCH_SUFFIX = "engine", ".tmp"


def onnx_digest(path: Path) -> str:
    """The SHA-256 of an ONNX file's bytes (read in blocks)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def engine_cache_key(*, onnx_sha256: str, trt_version: str,
                     compute_capability: tuple[int, int], precision: str,
                     profile: ShapeProfile, device_name: str | None = None) -> str:
    """The cache key of an engine: a TensorRT engine is only valid for the ONNX graph it
    was built from, the TensorRT version that built it, the GPU it was tuned on (its
    compute capability and model, ``device_name``: TensorRT's default engines are for the
    GPU model that built them, not every GPU of its compute capability), its precision
    and its shape profile; a change in any gives another key.
    """
    parts = {"format": CACHE_FORMAT, "onnx": onnx_sha256, "tensorrt": trt_version,
             "sm": list(compute_capability), "gpu": device_name, "precision": precision,
             "profile": list(profile.as_key())}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class EngineCache:
    """Serialized engines in a folder, ``<key>.engine``, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, key: str) -> Path:
        """Where the engine of ``key`` lives."""
        return self.folder / f"{key}.engine"

    def load(self, key: str) -> bytes | None:
        """The cached engine of ``key``, or ``None``."""
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def store(self, key: str, engine: bytes) -> Path:
        """Write the engine of ``key`` (a scratch file ``.engine-<pid>-<random>.tmp``
        renamed into place, so a reader never sees half an engine).

        Not ``tempfile``: its files are private (0600), and the cache is shared by the
        user's processes under their umask. Scratch files of processes that are gone
        (killed mid-write) are removed first (:func:`remove_abandoned`).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_abandoned(self.folder)
        scratch = scratch_path(self.folder, _SCRATCH_PREFIX, _SCRATCH_SUFFIX)
        try:
            with scratch.open("xb") as handle:
                handle.write(engine)
                # On disk before the rename: a crash must not leave an empty engine
                # under the key's name.
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(scratch, self.path(key))
        except BaseException:
            scratch.unlink(missing_ok=True)
            raise
        return self.path(key)


def remove_abandoned(folder: Path) -> int:
    """Remove the scratch engines in ``folder`` whose process is gone and which were left
    untouched for ten minutes (:func:`aieng_hookspecs.remove_abandoned`: a writer in
    another PID namespace sharing the cache, a container, looks dead from here, so a
    fresh scratch is never touched), logging each. Returns how many were removed."""
    removed = shared_remove_abandoned(folder, _SCRATCH_PREFIX, _SCRATCH_SUFFIX)
    for scratch in removed:
        log.info("tensorrt.abandoned_scratch_removed", path=str(scratch))
    return len(removed)
