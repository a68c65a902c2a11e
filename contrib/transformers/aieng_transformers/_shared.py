"""One copy of a model's weights per process: loaded models shared by every component that
would load the same thing.

A host often builds several components on one model (the kernel's default ``minilm``, a
pipeline's own, a semantic cache's embedder; several pipelines naming ``smollm2``). Each
loading its own copy costs the weights again (~90 MB a MiniLM, ~270 MB a SmolLM2-135M in
float32). :func:`shared` hands out one loaded object per *key*: everything that makes two
loads interchangeable (:func:`files_identity` of the files read, dtype, device, providers...).

Entries are held weakly: the components hold them, and when the last one lets go (its
pipeline closes, or it is collected) the memory is freed. Two threads loading one key at
once load it once (a lock per key). A child process (``os.fork()``) never gets its parent's
entries (the process id is part of every key): it loads its own, as before.

Only read-only objects belong here: a component that changes its model (adapters, resized
embeddings, weights moved or rewritten) must load its own copy. What each component keeps
per call (caches, tokenizer settings, batchers) stays in the component.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["files_identity", "folder_identity", "loads", "shared"]

T = TypeVar("T")


class _KeyLock:
    # A lock per key, itself held weakly: it lives while a thread loads or waits.
    __slots__ = ("__weakref__", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()


_guard = threading.Lock()
_entries: weakref.WeakValueDictionary[Hashable, Any] = weakref.WeakValueDictionary()
_locks: weakref.WeakValueDictionary[Hashable, _KeyLock] = weakref.WeakValueDictionary()
#: Loads done per key in this process (what the tests count; never cleared).
_loads: dict[Hashable, int] = {}


def _after_fork() -> None:
    # A lock held by another thread at the fork stays held in the child forever: new ones.
    global _guard, _locks
    _guard = threading.Lock()
    _locks = weakref.WeakValueDictionary()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_after_fork)


def shared(key: Hashable, build: Callable[[], T], *, share: bool = True) -> T:
    """The live object of ``key``, else ``build()`` (blocking), remembered weakly;
    ``share`` false: ``build()``, private (neither looked up nor remembered).

    :param key: what makes two loads interchangeable (the process id is added).
    :param build: loads the object; it must support weak references (a torch module, an
        ``InferenceSession``, a plain class instance).
    """
    if not share:
        return build()
    full = (os.getpid(), key)
    with _guard:
        found = _entries.get(full)
        if found is not None:
            return found  # type: ignore[no-any-return]
        slot = _locks.get(full)
        if slot is None:
            slot = _locks[full] = _KeyLock()
    with slot.lock:
        with _guard:
            found = _entries.get(full)
        if found is not None:
            return found  # type: ignore[no-any-return]
        value = build()
        with _guard:
            _entries[full] = value
            _loads[key] = _loads.get(key, 0) + 1
        return value


def loads(key: Hashable) -> int:
    """How many times ``key`` was loaded in this process (for tests)."""
    return _loads.get(key, 0)


def files_identity(files: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
    """Each file's resolved path, size and modification time (nanoseconds), sorted: a
    model re-converted or replaced on disk is another model."""
    out = []
    for file in files:
        stat = file.stat()
        out.append((str(file.resolve()), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(out))


#: The files of a Hugging Face folder that make its model (its tokenizer files are not:
#: each component loads its own tokenizer).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json")
_NOT_WEIGHTS = frozenset({"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                          "vocab.json", "added_tokens.json"})


def folder_identity(folder: Path) -> tuple[Any, ...]:
    """The resolved folder and :func:`files_identity` of its config and weight files."""
    files = [f for f in folder.iterdir()
             if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES) and f.name not in _NOT_WEIGHTS]
    return (str(folder.resolve()), files_identity(files))
