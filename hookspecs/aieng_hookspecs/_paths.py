"""Where plugins keep what they derive and can rebuild (converted models, exports, hashes),
and the scratch names they write it under before renaming it into place."""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import stat
import sys
import time
import uuid
from pathlib import Path

__all__ = ["ABANDONED_S", "UNWRITABLE", "CacheDirError", "fsync_folder", "remove_abandoned",
           "replace_file", "scratch_path", "user_cache_dir", "user_data_dir"]

#: The OS errors (``errno``) of a place this process may read but not write: a read-only
#: mount, ``chmod a-w``, a file of another owner. A store there opens for reading.
UNWRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class CacheDirError(RuntimeError):
    """No cache folder can be named: no folder given, no ``AIENG_CACHE_DIR``, and no home
    directory (``HOME`` unset for a user id without a home, as in a container run under an
    arbitrary user id)."""


def user_cache_dir(explicit: str | None = None) -> Path:
    """aieng's cache folder: ``explicit``, else ``$AIENG_CACHE_DIR``, else the user cache dir
    (``$XDG_CACHE_HOME/aieng`` or ``~/.cache/aieng`` on Linux, ``~/Library/Caches/aieng`` on
    macOS, ``%LOCALAPPDATA%\\aieng\\Cache`` on Windows).

    One place for every plugin, so one variable moves (or clears) all of aieng's caches.
    Nothing is created here; whoever writes creates what it writes.

    A relative folder is made absolute against the working directory of the call. A
    relative ``XDG_CACHE_HOME`` is ignored, as the XDG specification says.

    :param explicit: a folder the user chose (``~`` is expanded); empty means none.
    :raises CacheDirError: when none is given and there is no home directory.
    """
    if explicit:
        return Path(explicit).expanduser().absolute()
    env = os.environ.get("AIENG_CACHE_DIR")
    if env:
        return Path(env).expanduser().absolute()
    if sys.platform == "darwin":
        return _home() / "Library" / "Caches" / "aieng"
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else _home() / "AppData" / "Local"
        return base / "aieng" / "Cache"
    return _xdg("XDG_CACHE_HOME", ".cache") / "aieng"


def user_data_dir() -> Path:
    """aieng's folder for data the user keeps (the gateway's API keys):
    ``$XDG_DATA_HOME/aieng``, else ``~/.local/share/aieng``, on every platform. A relative
    ``XDG_DATA_HOME`` is ignored, as the XDG specification says. Nothing is created here.

    :raises CacheDirError: when there is no home directory (see :func:`user_cache_dir`).
    """
    return _xdg("XDG_DATA_HOME", ".local/share") / "aieng"


def _xdg(variable: str, under_home: str) -> Path:
    """An XDG base folder: the variable's value when absolute, else ``~/under_home``."""
    value = os.environ.get(variable)
    return Path(value) if value and Path(value).is_absolute() else _home() / under_home


def _home() -> Path:
    try:
        return Path.home()
    except (RuntimeError, KeyError) as error:  # HOME unset, no passwd entry for the user id
        uid = os.getuid() if hasattr(os, "getuid") else "?"
        raise CacheDirError(
            f"no cache folder: HOME is not set and user id {uid} has no home directory "
            f"({error}); set AIENG_CACHE_DIR (or XDG_CACHE_HOME) to a writable folder, or "
            "HOME") from error


#: How long a dead process's scratch must have been left untouched before
#: :func:`remove_abandoned` removes it (seconds).
ABANDONED_S = 600.0
# What follows ``.<prefix>-`` in a scratch name, before its suffix.
_PID_AND_TOKEN = re.compile(r"(?P<pid>[0-9]+)-[0-9a-f]{12}")


def scratch_path(folder: Path, prefix: str, suffix: str = "") -> Path:
    """A fresh hidden name in ``folder`` to write a file or folder to before renaming it
    into place: ``.<prefix>-<pid>-<12 hex digits><suffix>``. The process id in it lets
    :func:`remove_abandoned` find the scratch of processes killed before their cleanup
    ran. Nothing is created.

    Not ``tempfile``: its files and folders are private (0600 / 0700), and a cache is
    shared by the user's processes under their umask.

    :raises ValueError: for an empty ``prefix``, or one or a ``suffix`` with a path
        separator.
    """
    _check_parts(prefix, suffix)
    return folder / f".{prefix}-{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}"


def fsync_folder(folder: Path) -> None:
    """Make a rename or delete in ``folder`` durable: fsync the folder itself (POSIX; a
    no-op elsewhere, where folders cannot be opened)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: str | bytes, *, errors: str = "strict",
                 mode: int | None = None) -> None:
    """Write ``data`` (text as UTF-8, with ``errors`` for what does not encode) to ``path``
    whole or not at all: into a :func:`scratch_path` beside it, fsynced, renamed over it
    (``os.replace``), then the folder fsynced. A failure (a full disk, an interruption)
    leaves ``path`` as it was and removes the scratch; a power loss leaves the old file or
    the new one.

    The new file has the permissions of the file it replaces (a private file stays
    private; the scratch has them before any byte is written); a file that did not exist
    gets ``mode`` less the umask (default ``0o666``, as :func:`open` gives).

    :raises OSError: the write's, the rename's or the fsync's, unchanged.
    """
    try:
        kept: int | None = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:  # none yet (or not to be looked at: the rename says what is wrong)
        kept = None
    scratch = scratch_path(path.parent, path.name, ".tmp")
    try:
        # Created empty with its final permissions, then written: a text is never in a
        # file readable by more users than the one it replaces.
        made = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                       0o600 if kept is not None else 0o666 if mode is None else mode)
        try:
            if kept is not None and hasattr(os, "fchmod"):  # POSIX
                os.fchmod(made, kept)
        finally:
            os.close(made)
        if isinstance(data, str):
            scratch.write_text(data, encoding="utf-8", errors=errors)
        else:
            scratch.write_bytes(data)
        with open(scratch, "rb") as written:
            os.fsync(written.fileno())
        os.replace(scratch, path)
    except BaseException:
        try:
            scratch.unlink(missing_ok=True)
        except OSError:  # the folder went read-only meanwhile: remove_abandoned takes it
            pass
        raise
    fsync_folder(path.parent)


def remove_abandoned(folder: Path, prefix: str, suffix: str = "", *,
                     older_than: float = ABANDONED_S) -> list[Path]:
    """Remove the scratch files and folders of ``prefix`` and ``suffix`` in ``folder``
    (:func:`scratch_path`'s names) whose process is gone and in which nothing changed for
    ``older_than`` seconds: a writer in another PID namespace sharing the cache (a
    container) looks dead from here, so a fresh scratch is never touched, nor a live
    process's, nor a name of another prefix or suffix. A symbolic link is removed, never
    what it points to. Nothing is removed where processes cannot be probed (Windows).

    :returns: the paths removed (for the caller to log).
    :raises ValueError: for an empty ``prefix``, or one or a ``suffix`` with a path
        separator.
    """
    _check_parts(prefix, suffix)
    now, removed = time.time(), []
    try:
        entries = list(folder.glob(f".{glob.escape(prefix)}-*"))
    except OSError:  # no folder yet, or not readable: nothing to clean
        return []
    start = len(prefix) + 2
    for scratch in entries:
        name = scratch.name
        if not name.endswith(suffix):
            continue
        match = _PID_AND_TOKEN.fullmatch(name[start:len(name) - len(suffix)])
        if match is None or _alive(int(match["pid"])):
            continue
        try:
            mode = scratch.lstat().st_mode
            inside = scratch.rglob("*") if stat.S_ISDIR(mode) else ()
            changed = max([scratch.lstat().st_mtime, *(f.lstat().st_mtime for f in inside)])
        except OSError:  # removed meanwhile, or not readable: left alone
            continue
        if now - changed <= older_than:
            continue
        try:
            if stat.S_ISDIR(mode):
                shutil.rmtree(scratch)
            else:
                scratch.unlink()
        except FileNotFoundError:  # removed first by another process
            continue
        except OSError:  # not ours to remove (another user's, read-only): left alone
            continue
        removed.append(scratch)
    return removed


def _check_parts(prefix: str, suffix: str) -> None:
    separators = {"/", os.sep, *([os.altsep] if os.altsep else [])}
    if not prefix or any(sep in part for part in (prefix, suffix) for sep in separators):
        raise ValueError(f"a scratch name's prefix must be a non-empty name and its suffix "
                         f"a name's end, got {prefix!r} and {suffix!r}")


def _alive(pid: int) -> bool:
    if os.name != "posix":  # no signal-0 probe (Windows' os.kill would end the process)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process; no pid at all: left alone
        return True
    return True
