"""GGUF to safetensors, once: the converted model is cached by the GGUF's fingerprint.

transformers' GGUF loader dequantizes every tensor and rebuilds the tokenizer from the
GGUF metadata, which takes seconds (about 17 s for SmolLM2-135M on one core); the cached
safetensors folder then loads in well under a second. The folder is written under a
temporary name and renamed into place, so a crash or a concurrent conversion never leaves
a half-written model where a reader would find it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import structlog

__all__ = ["FORMAT_VERSION", "cached_folder", "convert_gguf", "fingerprint"]

log = structlog.get_logger(__name__)

#: Bumped when the layout or the conversion changes, so old caches are not reused.
FORMAT_VERSION = 1
#: Written last into a converted folder: what it was made from.
MARKER = "aieng-conversion.json"
_SAMPLE = 4 << 20  # bytes hashed at each end of the file
#: A dead process's scratch folder unchanged this long is removed (seconds).
_ABANDONED_S = 600.0


def fingerprint(gguf: Path) -> str:
    """A short content key of a GGUF file: its size and a SHA-256 of its first and last
    4 MiB (the header, with every tensor's name, shape and offset, and the tail of the
    data). Cheap on multi-GB files, and independent of the file's path and mtime, so a
    reinstalled package reuses its cache."""
    size = gguf.stat().st_size
    digest = hashlib.sha256(f"aieng-gguf-v{FORMAT_VERSION}:{size}:".encode())
    with gguf.open("rb") as handle:
        digest.update(handle.read(_SAMPLE))
        if size > 2 * _SAMPLE:
            handle.seek(size - _SAMPLE)
        digest.update(handle.read(_SAMPLE))
    return digest.hexdigest()[:16]


def cached_folder(gguf: Path, cache_root: Path) -> Path:
    """Where the conversion of ``gguf`` lives (or will) under ``cache_root``."""
    return cache_root / "transformers" / f"{gguf.stem}-{fingerprint(gguf)}"


def convert_gguf(gguf: Path, cache_root: Path) -> Path:
    """The safetensors folder of ``gguf``, converting it first when it is not cached.

    :param gguf: the GGUF file.
    :param cache_root: the cache directory (created when missing).
    :returns: a Hugging Face model folder (config, ``model.safetensors``, tokenizer).
    """
    target = cached_folder(gguf, cache_root)
    if (target / MARKER).is_file():
        return target
    if target.exists():  # no marker: not ours to trust (copied in half, edited by hand)
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(target)
    scratch = target.parent / f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    started = time.perf_counter()
    log.info("gguf.convert.started", gguf=str(gguf), target=str(target))
    try:
        _write(gguf, scratch)
        try:
            scratch.rename(target)
        except OSError:
            if not (target / MARKER).is_file():  # not a concurrent writer's finished copy
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("gguf.convert.finished", gguf=str(gguf), target=str(target),
             seconds=round(time.perf_counter() - started, 3))
    return target


def _remove_abandoned(target: Path) -> None:
    # Scratch folders of conversions into ``target`` whose process is gone (killed before
    # its cleanup ran): hundreds of MB each, never read, so removed before a new one. Only
    # when nothing in one changed for a while too: a writer in another PID namespace
    # sharing the cache (a container) looks dead from here.
    now = time.time()
    for scratch in target.parent.glob(f".{glob.escape(target.name)}.*-*.tmp"):
        pid = scratch.name[len(target.name) + 2:].rpartition("-")[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            changed = max([scratch.stat().st_mtime,
                           *(f.stat().st_mtime for f in scratch.rglob("*"))])
        except OSError:  # removed meanwhile
            continue
        if now - changed > _ABANDONED_S:
            shutil.rmtree(scratch, ignore_errors=True)


def _alive(pid: int) -> bool:
    if os.name != "posix":  # no signal-0 probe (Windows' os.kill would interrupt it)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, as another user's process
        return True
    return True


def _write(gguf: Path, folder: Path) -> None:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source: dict[str, Any] = {"local_files_only": True, "gguf_file": gguf.name}
    tokenizer: Any = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
        str(gguf.parent), **source)
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), **source, **{dtype_argument(): torch.float32})
    eos = model.config.eos_token_id
    if isinstance(eos, int) and tokenizer.eos_token_id != eos:
        # transformers' GGUF tokenizer conversion can name the wrong end-of-sequence token
        # (SmolLM2: <|im_start|> instead of the GGUF's own eos id 2, <|im_end|>); the
        # model config carries the GGUF's value, so the tokenizer follows it.
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
    folder.mkdir(parents=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    (folder / MARKER).write_text(json.dumps({
        "format": FORMAT_VERSION,
        "source": str(gguf),
        "size": gguf.stat().st_size,
        "transformers": transformers.__version__,
    }, indent=2) + "\n", encoding="utf-8")


def dtype_argument() -> str:
    """The name of ``from_pretrained``'s dtype argument: ``dtype`` from transformers 4.56,
    ``torch_dtype`` before."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
