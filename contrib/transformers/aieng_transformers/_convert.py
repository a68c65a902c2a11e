"""GGUF to safetensors, once: the converted model is cached by the GGUF's content.

transformers' GGUF loader dequantizes every tensor and rebuilds the tokenizer from the
GGUF metadata, which takes seconds (about 17 s for SmolLM2-135M on one core); the cached
safetensors folder then loads in well under a second. The folder is written under a
temporary name and renamed into place, so a crash or a concurrent conversion never leaves
a half-written model where a reader would find it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import shutil
import time
from pathlib import Path
from typing import Any

import structlog
from aieng_hookspecs import MODEL_BUILD, build_lock, remove_abandoned, scratch_path

from ._digest import file_digest

__all__ = ["CONVERTER", "FORMAT_VERSION", "cached_folder", "convert_gguf",
           "converter_versions", "digest_memo", "fingerprint"]

log = structlog.get_logger(__name__)

#: Bumped when the layout or the conversion changes, so old caches are not reused.
FORMAT_VERSION = 1
#: Written last into a converted folder: what it was made from.
MARKER = "aieng-conversion.json"


#: The distributions whose code makes a conversion: transformers' GGUF loader and tokenizer
#: conversion, gguf's dequantization, tokenizers' ``tokenizer.json`` writer.
CONVERTER = ("transformers", "gguf", "tokenizers")


def converter_versions() -> dict[str, str]:
    """The installed versions of :data:`CONVERTER` (``absent`` for one not installed)."""
    versions = {}
    for name in CONVERTER:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def fingerprint(gguf: Path, memo: Path | None = None) -> str:
    """A short key of a GGUF file's conversion, from a SHA-256 of all its bytes (a tensor
    re-quantized in the middle of a file of the same size changes it) and the versions of
    the libraries that convert it (:func:`converter_versions`: an upgrade may convert
    differently, and a ``tokenizer.json`` written by a newer tokenizers may not load in
    an older one, two environments sharing one cache). Independent of the file's path
    and mtime, so a copy or a reinstalled package reuses its cache.

    :param memo: a folder keeping the file's digest per file version (path, inode, size,
        mtime, ctime), so that only the first load of a multi-GB file reads it whole.
    """
    digest = file_digest(gguf, memo)
    versions = ",".join(f"{name}={v}" for name, v in sorted(converter_versions().items()))
    return hashlib.sha256(f"aieng-gguf-v{FORMAT_VERSION}:{digest}:{versions}".encode()
                          ).hexdigest()[:16]


def digest_memo(cache_root: Path) -> Path:
    """Where the GGUF digests are kept under ``cache_root``."""
    return cache_root / "transformers" / "digests"


def cached_folder(gguf: Path, cache_root: Path) -> Path:
    """Where the conversion of ``gguf`` lives (or will) under ``cache_root``."""
    key = fingerprint(gguf, digest_memo(cache_root))
    return cache_root / "transformers" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path, cache_root: Path) -> Path:
    """The safetensors folder of ``gguf``, converting it first when it is not cached.

    :param gguf: the GGUF file.
    :param cache_root: the cache directory (created when missing).
    :returns: a Hugging Face model folder (config, ``model.safetensors``, tokenizer).
    :raises OSError: when ``gguf`` changed while it was converted (nothing is cached: the
        folder would hold the conversion of other bytes than its key's), or when the cache
        folder cannot be written (before converting: the message names the folder).

    Another process converting the same file (two workers starting at once) is waited
    for, and its folder used (:func:`aieng_hookspecs.build_lock`).
    """
    version = _version(gguf)
    target = cached_folder(gguf, cache_root)
    if _sound(target):
        return target
    with build_lock(target, log=log):
        # Looked at again under the lock: another process may have just converted it.
        if _sound(target):
            return target
        return _convert(gguf, target, version)


def _sound(target: Path) -> bool:
    # Whether ``target`` holds a finished conversion; a damaged one is discarded.
    if not (target / MARKER).is_file():
        return False
    damage = damaged(target)
    if damage is None:
        return True
    # A file cut short (a crash before the disk had it all) or edited: converted anew.
    log.warning("gguf.cache_damaged", folder=str(target), reason=damage)
    try:
        _discard_damaged(target)
    except OSError as exc:  # a read-only cache: neither loaded nor converted again
        raise OSError(exc.errno, f"the cached conversion {target} is damaged ({damage}) "
                      f"and cannot be removed ({exc.strerror or exc}): delete it, or set "
                      "the component's `cache_dir` option (or AIENG_CACHE_DIR) to a "
                      "writable folder") from exc
    return False


def _convert(gguf: Path, target: Path, version: tuple[int, ...]) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if discard_unmarked(target, MARKER):
            return target  # another process finished the same conversion meanwhile
        scratch = scratch_folder(target)
        scratch.mkdir()  # writable? (before the conversion's seconds, not after them)
        scratch.rmdir()
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write the conversion of {gguf.name} under "
                      f"{target.parent} ({exc.strerror or exc}): set the component's "
                      "`cache_dir` option (or AIENG_CACHE_DIR) to a writable folder") from exc
    started = time.perf_counter()
    log.info("gguf.convert.started", gguf=str(gguf), target=str(target))
    try:
        _write(gguf, scratch)
        if _version(gguf) != version:
            raise OSError(f"{gguf} changed while it was converted (still being written?): "
                          "nothing was cached; load it again once it is complete")
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


def _version(path: Path) -> tuple[int, ...]:
    # What changes when a file is rewritten or replaced (a rewrite changes the ctime).
    stat = path.stat()
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def scratch_folder(target: Path) -> Path:
    """A fresh name beside ``target`` to write its folder under before renaming it into
    place: ``.<target's name>-<pid>-<random>.tmp`` (:func:`aieng_hookspecs.scratch_path`).
    The scratch of writes into ``target`` whose process is gone (killed before its cleanup
    ran: hundreds of MB, never read) is removed first, when nothing in it changed for a
    while (:func:`aieng_hookspecs.remove_abandoned`)."""
    for removed in remove_abandoned(target.parent, target.name, ".tmp"):
        log.info("transformers.abandoned_scratch_removed", path=str(removed))
    return scratch_path(target.parent, target.name, ".tmp")


def damaged(folder: Path) -> str | None:
    """Why the converted ``folder`` cannot be loaded as it was written, or ``None``: a file
    the marker lists missing or of another size (the marker of a conversion by an earlier
    version lists none), a safetensors file whose header does not cover it exactly (cut
    short, or its header overwritten), an unreadable marker. Cheap (stat calls and
    headers): no tensor is read."""
    try:
        saved = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        sizes = saved.get("files") if isinstance(saved, dict) else None
        for name, size in (sizes.items() if isinstance(sizes, dict) else ()):
            actual = (folder / name).stat().st_size
            if actual != size:
                return f"{name} holds {actual} bytes, not the {size} written"
        for path in sorted(folder.glob("*.safetensors")):
            if not _whole_safetensors(path):
                return f"{path.name}: its header does not describe the file"
    except (OSError, ValueError) as exc:  # ValueError: JSON and UTF-8 decoding
        return f"{type(exc).__name__}: {exc}"
    return None


def _whole_safetensors(path: Path) -> bool:
    # The layout: an 8-byte little-endian header length, the JSON header, then the tensors'
    # bytes, which the header's data_offsets cover exactly.
    size = path.stat().st_size
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if size < 8 or length > size - 8:
            return False
        try:
            header = json.loads(handle.read(length))
            ends = [int(entry["data_offsets"][1]) for name, entry in header.items()
                    if name != "__metadata__"]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return False
    return 8 + length + max(ends, default=0) == size


def _discard_damaged(target: Path) -> None:
    # Moved aside first, so no reader sees it half removed; a sound folder found there (a
    # concurrent conversion renamed into place after our look) is put back.
    aside = scratch_path(target.parent, target.name, ".tmp")
    try:
        target.rename(aside)
    except FileNotFoundError:  # discarded meanwhile
        return
    if damaged(aside) is None:
        with contextlib.suppress(OSError):
            aside.rename(target)
    shutil.rmtree(aside, ignore_errors=True)


def discard_unmarked(target: Path, marker: str) -> bool:
    """Remove ``target`` when it exists without its ``marker`` file (copied in half,
    edited by hand: not ours to trust), first moving it aside so that no reader sees it
    half removed. Returns whether a finished folder is at ``target`` after all: one that a
    concurrent writer renamed into place after the caller looked for the marker is kept,
    never deleted (under a reader that just found it)."""
    if not target.exists() and not target.is_symlink():
        return False
    if (target / marker).is_file():  # finished meanwhile
        return True
    aside = scratch_path(target.parent, target.name, ".tmp")
    try:
        target.rename(aside)
    except FileNotFoundError:  # removed meanwhile
        return (target / marker).is_file()
    if (aside / marker).is_file():  # finished between the look and the move: put back
        with contextlib.suppress(OSError):
            aside.rename(target)
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)
    return (target / marker).is_file()


def _write(gguf: Path, folder: Path) -> None:
    import torch

    source: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False,
                              "gguf_file": gguf.name}
    with MODEL_BUILD:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

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
        "converter": converter_versions(),
        # Each file's size, so that one cut short later is found (:func:`damaged`).
        "files": {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()},
    }, indent=2) + "\n", encoding="utf-8")


def dtype_argument() -> str:
    """The name of ``from_pretrained``'s dtype argument: ``dtype`` from transformers 4.56,
    ``torch_dtype`` before."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
