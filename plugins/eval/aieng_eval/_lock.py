"""The lockfile ``lock.json``: what ran, so a run can be replayed and its drift reported.

It records the versions of aieng and of every loaded plugin, the pipeline file's hash and
resolved config, the models the run called, the hashes of files the components were given
as options (model folders, indexes), the dataset's hash, the seeds and the interpreter.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
from aieng_hookspecs import CacheDirError, replace_file, user_cache_dir

__all__ = [
    "LOCK_FORMAT",
    "FileHasher",
    "add_layout",
    "component_paths",
    "environment",
    "format_problem",
    "jsonable",
    "lock_drift",
    "same_input",
    "sha256_file",
]

#: Version of the lockfile's layout.
LOCK_FORMAT = 1
_CHUNK = 1 << 20
#: Files at least this large have their hash cached by (path, size, mtime, inode, ctime).
CACHE_MIN_BYTES = 1 << 20
#: What follows the path in a cache key: ``|size|mtime|inode|ctime`` (``|size|mtime`` in
#: caches of earlier versions).
_KEY_TAIL = re.compile(r"\|\d+\|-?\d+(?:\|\d+\|-?\d+)?")
#: A cache key of this version: the path, then ``|size|mtime|inode|ctime``.
_KEY = re.compile(r"(.*)\|\d+\|-?\d+\|\d+\|-?\d+", re.DOTALL)
#: The most files the hash cache remembers, the most recently hashed or used kept: a
#: project whose runs hash a new checkpoint folder each time would grow it for ever.
MAX_CACHE_ENTRIES = 4096
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_path() -> Path:
    """Where file hashes are cached: ``file-hashes.json`` in aieng's cache folder
    (:func:`aieng_hookspecs.user_cache_dir`)."""
    return user_cache_dir() / "file-hashes.json"


class FileHasher:
    """Hashes files and folders; large files are hashed once and cached by
    (path, size, mtime, inode, ctime) in a JSON file, so a multi-gigabyte model is not
    re-read per run. The inode and the ctime tell a file of the same size swapped in with
    its mtime kept (``cp -p``, ``rsync -t``, ``touch -r``): a rename gives another inode,
    a write or ``utime`` a new ctime, which no tool can set back. Entries of earlier
    versions, keyed by (path, size, mtime), are misses: those files are hashed once more.

    Blocking: call it from a worker thread.

    :param cache: the cache file (``None``: :func:`default_cache_path`; when no cache
        folder can be named, no home folder and no ``AIENG_CACHE_DIR``, as in a container
        run under a user id without one: no cache, every file is hashed, and
        ``cache_path`` is ``None``).
    """

    def __init__(self, cache: Path | None = None) -> None:
        if cache is None:
            try:
                cache = default_cache_path()
            except CacheDirError:  # an optimisation only: hash every time
                cache = None
        self.cache_path = cache
        self._cache: dict[str, str] | None = None
        self._dirty = False
        #: files actually read (not answered from the cache); tests read it.
        self.reads = 0

    def _entries(self) -> dict[str, str]:
        if self._cache is None:
            if self.cache_path is None:
                self._cache = {}
                return self._cache
            try:
                loaded = json.loads(self.cache_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # none yet, a folder, damaged: hash again
                loaded = {}
            # Only hashes: a value of another form (a later version's) is never one.
            self._cache = {str(k): v for k, v in loaded.items()
                           if isinstance(v, str) and _SHA256.fullmatch(v)} \
                if isinstance(loaded, dict) else {}
        return self._cache

    def file(self, path: Path) -> str:
        """The SHA-256 of one file."""
        stat = path.stat()
        if stat.st_size < CACHE_MIN_BYTES:
            self.reads += 1
            return sha256_file(path)
        resolved = str(path.resolve())
        key = (f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}|"
               f"{stat.st_ctime_ns}")
        entries = self._entries()
        if key in entries and next(reversed(entries)) != key:
            entries[key] = entries.pop(key)  # the most recently used last: kept longest
            self._dirty = True
        if key not in entries:
            self.reads += 1
            # The file changed: forget its older versions (and its entries of earlier
            # versions' keys), so the cache stays as large as the set of files hashed, not
            # growing with every rewrite of a model.
            for stale in [k for k in entries if k.startswith(resolved + "|")
                          and _KEY_TAIL.fullmatch(k[len(resolved):])]:
                del entries[stale]
            entries[key] = sha256_file(path)
            self._dirty = True
        return entries[key]

    def path(self, path: Path) -> dict[str, Any]:
        """``kind``, ``sha256`` and ``size`` of a file, or of a folder (the hash of its
        files' relative paths and hashes, in sorted order)."""
        if path.is_file():
            return {"kind": "file", "sha256": self.file(path), "size": path.stat().st_size}
        digest = hashlib.sha256()
        size = 0
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = child.relative_to(path).as_posix()
            digest.update(f"{rel}\0{self.file(child)}\n".encode())
            size += child.stat().st_size
        return {"kind": "dir", "sha256": digest.hexdigest(), "size": size}

    def save(self) -> None:
        """Write the cache back if it changed (a failure to write is not an error),
        without the entries of files that are gone (a deleted checkpoint folder) or of an
        earlier version's keys, and at most :data:`MAX_CACHE_ENTRIES` of them, the least
        recently used dropped first."""
        if not self._dirty or self._cache is None or self.cache_path is None:
            return
        kept: dict[str, str] = {}
        for key, digest in reversed(self._cache.items()):
            if len(kept) >= MAX_CACHE_ENTRIES:
                break
            found = _KEY.fullmatch(key)
            if found and os.path.isfile(found.group(1)):
                kept[key] = digest
        self._cache = dict(reversed(kept.items()))
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            replace_file(self.cache_path, json.dumps(self._cache, indent=0))
            self._dirty = False
        except OSError:
            pass


def _option_values(options: object) -> Iterable[tuple[str, object]]:
    if options is None:
        return []
    if attrs.has(type(options)):
        return [(f.name, getattr(options, f.name))
                for f in attrs.fields(type(options))]  # type: ignore[arg-type]
    if isinstance(options, Mapping):
        return list(options.items())
    return []


def component_paths(components: Mapping[str, Any],
                    bases: Iterable[Path]) -> list[tuple[str, str, Path]]:
    """``(component, option, path)`` for each component option naming an existing file or
    folder (a string, or strings in a list), tried as given and relative to each base."""
    found = []
    bases = list(bases)
    for name, component in components.items():
        for option, value in _option_values(getattr(component, "options", None)):
            candidates = [value] if isinstance(value, str) else (
                [v for v in value if isinstance(v, str)]
                if isinstance(value, (list, tuple)) else [])
            for text in candidates:
                if not text or "\n" in text or len(text) > 4096:
                    continue
                for base in [Path.cwd(), *bases]:
                    path = Path(text) if Path(text).is_absolute() else base / text
                    try:
                        exists = path.exists()
                    except OSError:
                        exists = False
                    if exists:
                        found.append((name, option, path.resolve()))
                        break
    return found


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def environment(plugins: Iterable[Any]) -> dict[str, Any]:
    """aieng's version, every plugin's distribution and version, and the interpreter."""
    return {
        "aieng": _version("aieng"),
        "aieng_eval": _version("aieng-eval"),
        "plugins": sorted(
            ({"name": p.name, "distribution": p.distribution, "version": p.version,
              "status": p.status} for p in plugins),
            key=lambda p: str(p["name"])),
        "python": {"version": platform.python_version(),
                   "implementation": platform.python_implementation(),
                   "platform": platform.platform(), "executable": sys.executable},
    }


def jsonable(value: Any) -> Any:
    """A config value as strict JSON: infinite and NaN floats become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def format_problem(lock: Mapping[str, Any]) -> str | None:
    """Why this aieng-eval cannot read a lockfile's layout, or ``None`` when it can: a
    ``format`` above :data:`LOCK_FORMAT` (a later aieng-eval wrote it: its records may
    hold what this one would misread), or one that is no layout number. A lockfile
    without ``format`` is of layout 1."""
    found = lock.get("format", 1)
    if isinstance(found, bool) or not isinstance(found, int) or found < 1:
        return f"its format {found!r} is not a layout number (1, 2, ...)"
    if found <= LOCK_FORMAT:
        return None
    writer = lock.get("aieng_eval")
    known = isinstance(writer, str) and bool(writer)
    return (f"it has layout {found}, written by "
            f"{f'aieng-eval {writer}' if known else 'a later aieng-eval'}; this aieng-eval "
            f"({_version('aieng-eval') or 'unknown version'}) reads layout {LOCK_FORMAT}: "
            f"upgrade aieng-eval{f' (to {writer} or later)' if known else ''} to read it")


#: The lockfile entries whose file a replay looks for where the run folder moved.
MOVABLE = ("pipeline", "judge_pipeline", "dataset")


def add_layout(lock: Mapping[str, Any], run_dir: Path) -> None:
    """Add to each entry of :data:`MOVABLE` naming a file its path relative to the run
    folder (``from_run_dir``), so that a replay of the run folder moved or copied with
    its project finds the file at its new place (the ``path`` stays absolute). Not
    recorded where no relative path exists (another drive)."""
    base = run_dir.resolve()
    for key in MOVABLE:
        entry = lock.get(key)
        if isinstance(entry, dict) and entry.get("path"):
            try:
                entry["from_run_dir"] = Path(os.path.relpath(entry["path"], base)).as_posix()
            except ValueError:
                pass


def same_input(key: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether two lockfiles' ``key`` (``pipeline``, ``judge_pipeline``, ``dataset``) has
    the same hash. A dataset's ``sha256`` ignores its line endings; lockfiles of earlier
    versions hashed its bytes as they were, which the new lockfile keeps as
    ``file_sha256``."""
    before = (old.get(key) or {}).get("sha256")
    after = new.get(key) or {}
    return before == after.get("sha256") or (
        key == "dataset" and before is not None and before == after.get("file_sha256"))


def lock_drift(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between a locked environment and the current one:
    versions, the pipeline's and the dataset's hashes, and hashed files."""
    drift = []
    if old.get("aieng") != new.get("aieng"):
        drift.append(f"aieng version {old.get('aieng')!r} -> {new.get('aieng')!r}")
    before = {p["name"]: p for p in old.get("plugins", [])}
    after = {p["name"]: p for p in new.get("plugins", [])}
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a is None:
            drift.append(f"plugin {name!r} is new ({b and b.get('distribution')} "
                         f"{b and b.get('version')})")
        elif b is None:
            drift.append(f"plugin {name!r} ({a.get('distribution')} {a.get('version')}) "
                         "is no longer installed")
        elif (a.get("version"), a.get("status")) != (b.get("version"), b.get("status")):
            drift.append(f"plugin {name!r}: {a.get('distribution')} {a.get('version')} "
                         f"({a.get('status')}) -> {b.get('version')} ({b.get('status')})")
    if old.get("python", {}).get("version") != new.get("python", {}).get("version"):
        drift.append(f"python {old.get('python', {}).get('version')} -> "
                     f"{new.get('python', {}).get('version')}")
    for key in ("pipeline", "judge_pipeline", "dataset"):
        a_hash = (old.get(key) or {}).get("sha256")
        b_hash = (new.get(key) or {}).get("sha256")
        if not same_input(key, old, new):
            drift.append(f"{key} file hash {str(a_hash)[:12]} -> {str(b_hash)[:12]}")
    files_before = {f["path"]: f["sha256"] for f in old.get("files", [])}
    files_after = {f["path"]: f["sha256"] for f in new.get("files", [])}
    for path in sorted(files_before):
        if path not in files_after:
            drift.append(f"file {path} is missing now")
        elif files_before[path] != files_after[path]:
            drift.append(f"file {path} changed (sha256 {files_before[path][:12]} -> "
                         f"{files_after[path][:12]})")
    return drift
