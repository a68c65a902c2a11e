"""Reference windows on disk, so a restarted process compares against the same reference.

One JSON file per monitor::

    {"format": "aieng-drift-reference", "version": 1,
     "options": {"detectors": [...], "reference_size": 200, "embedding_model": null,
                 "words": 2},                                  # how words were split
     "windows": {"length": [7, 12, ...],                     # word counts
                 "vocabulary": [{"where": 1, "is": 1}, ...],   # token counts per request
                 "embedding": [[0.1, -0.3, ...], ...],         # one vector per request
                 "score:faithfulness": [0.9, 0.7, ...]}}

Written atomically (:func:`aieng_hookspecs.replace_file`): a temporary file in the same
folder, fsynced, renamed over the old one (``os.replace``), then the folder fsynced; a
crash at any point leaves the old file or the new one, never a mix. The file holds the
words of users' requests: a new one is created 0600 (a rewritten one keeps its
permissions). Python's float ``repr`` round-trips, so a loaded window
holds the very numbers that were saved.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from aieng_hookspecs import fsync_folder, replace_file

__all__ = ["FORMAT", "VERSION", "ReferenceFileError", "ReferenceStore", "SavedReference"]

#: The ``format`` field of a reference file.
FORMAT = "aieng-drift-reference"
#: The version of the file layout this module writes (and the newest it reads).
VERSION = 1


class ReferenceFileError(ValueError):
    """A reference file that cannot be used: unreadable, corrupt, of another format or a
    newer version, or made for another configuration. The message names the file.

    :param path: the file.
    :param problem: what is wrong with it, in words.
    """

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"drift reference file {str(path)!r}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self) -> tuple[type[ReferenceFileError], tuple[Path, str]]:
        # The constructor's arguments, not the message: pickle (a worker process sending
        # the error back to its host) calls the class with these.
        return type(self), (self.path, self.problem)


@attrs.frozen
class SavedReference:
    """A reference file as read (see :meth:`ReferenceStore.read`).

    :param path: the file.
    :param options: the writer's options that matter to the windows (``detectors``,
        ``reference_size``, ``embedding_model``).
    :param windows: the reference items by detector (word counts, token :class:`Counter`
        tables, vectors as lists, scores), validated.
    """

    path: Path
    options: Mapping[str, Any]
    windows: dict[str, list[Any]]


def _number(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value))


def _items(detector: str, items: Any) -> list[Any]:
    """The validated items of one window (``ValueError`` saying what is wrong)."""
    if not isinstance(items, list) or len(items) < 2:
        raise ValueError(f"window {detector!r} must be a list of at least 2 items")
    if detector == "length":
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in items):
            raise ValueError("window 'length' must hold word counts (integers >= 0)")
        return list(items)
    if detector == "vocabulary":
        tables: list[Counter[str]] = []
        for table in items:
            if not (isinstance(table, dict) and table and all(
                    isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool)
                    and n >= 1 for k, n in table.items())):
                raise ValueError("window 'vocabulary' must hold non-empty tables of "
                                 "token counts ({token: integer >= 1})")
            tables.append(Counter(table))
        return tables
    if detector == "embedding":
        if not all(isinstance(row, list) and row and all(_number(x) for x in row)
                   for row in items) or len({len(row) for row in items}) != 1:
            raise ValueError("window 'embedding' must hold non-empty vectors of finite "
                             "numbers, all of one length")
        return [[float(x) for x in row] for row in items]
    if detector.startswith("score:"):  # any metric name, as observe_score takes
        if not all(_number(x) for x in items):
            raise ValueError(f"window {detector!r} must hold finite numbers")
        return [float(x) for x in items]
    raise ValueError(f"unknown detector window {detector!r}")


def parse(path: Path, raw: bytes) -> SavedReference:
    """Parse and validate a reference file's bytes.

    :raises ReferenceFileError: naming ``path`` and the problem.
    """
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReferenceFileError(path, f"not valid JSON ({error}); delete it or fix it to "
                                       "take a new reference") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ReferenceFileError(path, f"not a drift reference file (no \"format\": "
                                       f"\"{FORMAT}\")")
    version = document.get("version")
    if version != VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > VERSION
        raise ReferenceFileError(path, f"version {version!r} " + (
            "was written by a newer aieng-drift" if newer else "is not a valid version")
            + f"; this one reads version {VERSION}")
    options, windows = document.get("options", {}), document.get("windows")
    if not isinstance(options, dict) or not isinstance(windows, dict):
        raise ReferenceFileError(path, "\"options\" and \"windows\" must be JSON objects")
    parsed: dict[str, list[Any]] = {}
    for detector, items in windows.items():
        try:
            parsed[detector] = _items(detector, items)
        except ValueError as error:
            raise ReferenceFileError(path, str(error)) from None
    return SavedReference(path, options, parsed)


class ReferenceStore:
    """One reference file: read, written atomically, deleted.

    Writes carry a generation (the monitor's count of reference changes); a write older
    than the last one written or deleted is skipped, so a save finishing late in a worker
    thread never puts back a reference that was replaced or reset meanwhile. Safe to call
    from several threads.

    :param path: the file (its folder is created at the first write).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._done = -1  # the newest generation written or deleted

    def read(self) -> SavedReference | None:
        """The saved reference, or ``None`` when there is no file.

        :raises ReferenceFileError: when the file cannot be read or used.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ReferenceFileError(self.path, f"cannot be read ({error})") from error
        return parse(self.path, raw)

    def write(self, generation: int, document: Mapping[str, Any]) -> bool:
        """Replace the file with ``document`` atomically, unless a newer generation was
        written or deleted already (``False``).

        :raises OSError: when the file cannot be written (the old file, if any, is kept
            and no temporary file is left).
        """
        text = json.dumps(document, separators=(",", ":"), allow_nan=False)
        with self._lock:
            if generation <= self._done:
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The file holds users' words: created 0600 (a file the user opened up keeps
            # its permissions when rewritten).
            replace_file(self.path, text, mode=0o600)
            self._done = generation
        return True

    def delete(self, generation: int) -> None:
        """Delete the file (if any); writes of older generations are skipped from now on."""
        with self._lock:
            self._done = max(self._done, generation)
            self.path.unlink(missing_ok=True)
            if self.path.parent.is_dir():
                fsync_folder(self.path.parent)
