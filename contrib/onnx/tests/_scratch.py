"""Planting scratch files and folders, as a killed process leaves them, for the tests of
``remove_abandoned`` and of the exports that call it."""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["OLD", "leave"]

OLD = time.time() - 7200  # two hours: past remove_abandoned's default ten minutes


def leave(path: Path, *, folder: bool = False, age: float | None = OLD) -> Path:
    """A scratch file or folder (with a file inside) last changed ``age`` (now: None)."""
    if folder:
        path.mkdir(parents=True)
        (path / "model.onnx").write_bytes(b"half a model")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a model")
    if age is not None:
        for item in [*path.rglob("*"), path] if folder else [path]:
            os.utime(item, (age, age))
    return path
