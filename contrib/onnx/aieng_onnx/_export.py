"""From a Hugging Face encoder folder to ONNX files on disk, once: export and int8 variant.

An export is keyed by the model files' contents, the exporter's version and the opset, so
a changed model or exporter gives a new folder and an unchanged one is never exported
twice. Every file is written under a temporary name and renamed into place: a crash or a
second process never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import structlog

from ._quantize import quantize_int8

__all__ = ["EXPORT_FILE", "export_key", "exported", "int8_variant", "scratch_name",
           "weights_size"]

log = structlog.get_logger(__name__)

#: The ONNX file inside an export folder (fp32).
EXPORT_FILE = "model.onnx"
_CHUNK = 1 << 20


def scratch_name(folder: Path, prefix: str, suffix: str = "") -> Path:
    """A fresh hidden name in ``folder`` to write to before renaming into place.

    Not ``tempfile``: its files and folders are private (0600 / 0700), and a cache is
    shared by the user's processes under their umask.
    """
    return folder / f".{prefix}-{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def export_key(folder: Path, opset: int) -> str:
    """The cache key of ``folder``'s export at ``opset``: a hash of the folder's top-level
    files (config, weights, tokenizer), the exporter's versions and the opset."""
    files = {p.name: _file_digest(p) for p in sorted(folder.iterdir()) if p.is_file()}
    parts = {"files": files, "opset": opset, "optimum-onnx": _version("optimum-onnx"),
             "optimum": _version("optimum"), "torch": _version("torch"),
             "transformers": _version("transformers")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _export(folder: Path, target: Path, opset: int) -> None:
    from optimum.exporters.onnx import main_export  # type: ignore[import-untyped]

    # library_name: a sentence-transformers folder would otherwise be exported with its
    # pooling head, which needs sentence-transformers; pooling happens in numpy here.
    main_export(str(folder), str(target), task="feature-extraction", opset=opset,
                device="cpu", library_name="transformers", local_files_only=True,
                do_validation=False)


def exported(folder: Path, cache: Path, *, opset: int) -> tuple[Path, bool]:
    """The export folder of the encoder in ``folder`` (``model.onnx``, config, tokenizer),
    exported now unless the cache holds it; blocking.

    :param folder: a Hugging Face encoder folder.
    :param cache: the cache root; exports go to ``cache/onnx/<name>-<key>``.
    :param opset: the ONNX opset to export with.
    :returns: the folder, and whether it was exported by this call.
    """
    key = export_key(folder, opset)
    target = cache / "onnx" / f"{folder.name}-{key[:16]}"
    if (target / EXPORT_FILE).is_file():
        log.debug("onnx.export_cached", folder=str(target))
        return target, False
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_name(target.parent, "export")
    try:
        _export(folder, scratch, opset)
        try:
            scratch.rename(target)
        except OSError:
            if not (target / EXPORT_FILE).is_file():
                raise
            # Another process exported the same model meanwhile: keep its folder.
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("onnx.exported", source=str(folder), folder=str(target), opset=opset,
             seconds=round(time.perf_counter() - started, 3))
    return target, True


def int8_variant(folder: Path) -> Path:
    """The int8 (dynamic, per-channel) file beside ``folder/model.onnx``, quantized now
    unless present; blocking. Its name carries the ONNX Runtime version that made it."""
    import onnxruntime  # type: ignore[import-untyped]

    target = folder / f"model.int8.ort{onnxruntime.__version__}.onnx"
    if target.is_file():
        return target
    started = time.perf_counter()
    scratch = scratch_name(folder, "int8", ".onnx")
    try:
        quantize_int8(folder / EXPORT_FILE, scratch)
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
    log.info("onnx.quantized", folder=str(folder), file=target.name,
             seconds=round(time.perf_counter() - started, 3))
    return target


def weights_size(model: Path) -> int:
    """Bytes of an ONNX model: the file plus any external-data files beside it that it
    names (``<file>.data`` and the like)."""
    size = model.stat().st_size
    for extra in model.parent.glob(model.name + ".*"):
        if extra.is_file() and extra.suffix != ".onnx":
            size += extra.stat().st_size
    return size
