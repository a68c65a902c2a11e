"""The engine cache: one serialized engine per (ONNX, TensorRT, GPU, precision, profile)."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import structlog
from aieng_hookspecs import remove_abandoned as shared_remove_abandoned
from aieng_hookspecs import scratch_path

from ._profile import ShapeProfile

__all__ = ["CACHE_FORMAT", "EngineCache", "engine_cache_key", "external_data_digests",
           "onnx_digest", "remove_abandoned"]

log = structlog.get_logger(__name__)

#: Bumped when the key's parts or the cache layout change (2: the GPU's name; 3: the
#: builder's workspace limit).
CACHE_FORMAT = 3
# A scratch engine: ``.engine-<pid>-<random>.tmp`` (aieng_hookspecs.scratch_path).
_SCRATCH_PREFIX, _SCRATCH_SUFFIX = "engine", ".tmp"


def onnx_digest(path: Path) -> str:
    """The SHA-256 of an ONNX file's bytes (read in blocks)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tensors(message: Any) -> Iterator[Any]:
    """Every ``TensorProto`` in an ONNX message: initializers, sparse initializers,
    ``Constant`` and other attribute tensors, in subgraphs and functions too."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        # One message, or a repeated field's container of them.
        for item in (value,) if hasattr(value, "ListFields") else value:
            if field.message_type.name == "TensorProto":
                yield item
            else:
                yield from _tensors(item)


def external_data_digests(path: Path) -> dict[str, str]:
    """``{location: SHA-256 of the file's bytes}`` of every external data file the ONNX
    model at ``path`` references (weights stored outside the ``.onnx`` file, exports over
    2 GB: ``model.onnx_data``), each resolved next to the model as TensorRT's parser and
    ONNX resolve it; ``{}`` for a model without external data, or for a file that is no
    ONNX model (TensorRT's parser reports that when it builds).

    :raises FileNotFoundError: when a referenced file is missing.
    """
    # Imported here, like TensorRT and torch: not when the plugin loads.
    onnx: Any = importlib.import_module("onnx")
    decode_error: Any = importlib.import_module("google.protobuf.message").DecodeError
    try:
        model = onnx.load(str(path), load_external_data=False)
    except decode_error:
        return {}
    locations = sorted({entry.value for tensor in _tensors(model)
                        if tensor.data_location == onnx.TensorProto.EXTERNAL
                        for entry in tensor.external_data if entry.key == "location"})
    digests = {}
    for location in locations:
        data = path.parent / location
        if not data.is_file():
            raise FileNotFoundError(
                f"the ONNX model {str(path)!r} keeps weights in {location!r}, and "
                f"{str(data)!r} is no file: keep the export's data files next to it")
        digests[location] = onnx_digest(data)
    return digests


def engine_cache_key(*, onnx_sha256: str, trt_version: str,
                     compute_capability: tuple[int, int], precision: str,
                     profile: ShapeProfile, workspace_mb: int,
                     device_name: str | None = None,
                     external_data: Mapping[str, str] | None = None) -> str:
    """The cache key of an engine: a TensorRT engine is only valid for the ONNX graph it
    was built from (its bytes and those of its external data files, ``external_data``:
    ``{location: SHA-256}``), the TensorRT version that built it, the GPU it was tuned on
    (its compute capability and model, ``device_name``: TensorRT's default engines are for
    the GPU model that built them, not every GPU of its compute capability), its precision,
    its shape profile and the builder's workspace limit (``workspace_mb``: the tactics
    TensorRT may choose are those that fit it); a change in any gives another key. What
    does not change the engine (the device index, the tokenizer, the cache folder, the
    model id) is not in it.
    """
    parts: dict[str, object] = {
        "format": CACHE_FORMAT, "onnx": onnx_sha256, "tensorrt": trt_version,
        "sm": list(compute_capability), "gpu": device_name, "precision": precision,
        "profile": list(profile.as_key()), "workspace_mb": workspace_mb}
    if external_data:  # absent without external data: those models keep their keys
        parts["external"] = dict(external_data)
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
