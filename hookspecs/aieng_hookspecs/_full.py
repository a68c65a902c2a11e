"""A write refused for want of space, told apart from other failures and said one way.

A full disk reaches a component as an ``OSError`` (``ENOSPC``; ``EDQUOT`` past a quota;
``EFBIG`` past ``ulimit -f``), as SQLite's ``SQLITE_FULL`` ("database or disk is full"), or
as a library's own error that kept only the text (tantivy, safetensors, ONNX). Each
component says what it kept; this module says the rest alike everywhere: which file
system, how much is free, what to do.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

__all__ = ["DISK_FULL", "disk_full", "disk_full_hint"]

#: The OS errors (``errno``) of a write refused for want of space.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

_SQLITE_FULL = 13
#: What libraries that keep only the text of the OS's error say.
_TEXTS = ("no space left on device", "database or disk is full", "disk quota exceeded",
          "file too large")


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error it was raised from (``__cause__`` / ``__context__``), is
    a write refused for want of space: an ``OSError`` with an errno in :data:`DISK_FULL`,
    SQLite's ``SQLITE_FULL``, or a library's error whose text says so."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return True
        if isinstance(exc, sqlite3.Error) and \
                getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_FULL:
            return True
        if any(text in str(exc).lower() for text in _TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_hint(path: str | os.PathLike[str], kept: str) -> str:
    """The words for a write to ``path`` refused for want of space: ``"<path>: the disk is
    full (<mount point>, <n> bytes free); <kept>; free space there, or give a folder on
    another disk, and try again"``.

    :param path: the file or folder that was being written.
    :param kept: what the component kept (``"nothing of this write was kept; the index
        holds what it held before"``).
    """
    where = Path(path)
    probe = next((folder for folder in (where, *where.parents) if folder.exists()), where)
    try:
        found = os.statvfs(probe)
        free = f"{found.f_bavail * found.f_frsize:,} bytes free"
    except (OSError, AttributeError):  # gone, or not POSIX
        free = "free space unknown"
    return (f"{where}: the disk is full ({_mount_point(probe)}, {free}); {kept}; free space "
            "there, or give a folder on another disk, and try again")


def _mount_point(path: Path) -> Path:
    path = path.absolute()
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path
