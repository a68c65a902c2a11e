"""Where plugins keep what they derive and can rebuild (converted models, exports, hashes)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["user_cache_dir"]


def user_cache_dir(explicit: str | None = None) -> Path:
    """aieng's cache folder: ``explicit``, else ``$AIENG_CACHE_DIR``, else the user cache dir
    (``$XDG_CACHE_HOME/aieng`` or ``~/.cache/aieng`` on Linux, ``~/Library/Caches/aieng`` on
    macOS, ``%LOCALAPPDATA%\\aieng\\Cache`` on Windows).

    One place for every plugin, so one variable moves (or clears) all of aieng's caches.
    Nothing is created here; whoever writes creates what it writes.

    :param explicit: a folder the user chose (``~`` is expanded); empty means none.
    """
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("AIENG_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "aieng"
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        return base / "aieng" / "Cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "aieng"
