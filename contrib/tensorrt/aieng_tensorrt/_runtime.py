"""Finding TensorRT and a CUDA device, with errors that say what to do."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["INSTALL_HINT", "TensorRTUnavailable", "compute_capability", "device_name",
           "require_cuda", "require_tensorrt"]

INSTALL_HINT = ("install it on a machine with an NVIDIA GPU and driver: "
                "`pip install 'aieng-tensorrt[trt]'` (or `pip install tensorrt`, whose "
                "tensorrt-cu12-libs wheel is fetched from pypi.nvidia.com)")


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA device is missing: the ``minilm-trt`` embedder cannot run here."""


def require_tensorrt() -> Any:
    """The ``tensorrt`` module.

    :raises TensorRTUnavailable: when it does not import, saying how to install it.
    """
    try:
        return importlib.import_module("tensorrt")
    except ImportError as error:
        raise TensorRTUnavailable(
            f"the minilm-trt embedder needs TensorRT, which does not import here "
            f"({error}): {INSTALL_HINT}") from error


def require_cuda(device: int) -> Any:
    """``torch``, after checking that CUDA device ``device`` exists.

    :raises TensorRTUnavailable: when torch has no CUDA or no such device was found.
    """
    try:
        torch = importlib.import_module("torch")
    except ImportError as error:
        raise TensorRTUnavailable(f"the minilm-trt embedder needs torch with CUDA: "
                                  f"{error}") from error
    if not torch.cuda.is_available():
        build = getattr(torch.version, "cuda", None)
        why = ("this torch is a CPU-only build" if build is None
               else f"torch built for CUDA {build} found no device or driver")
        raise TensorRTUnavailable(f"no CUDA device was found ({why}): the minilm-trt "
                                  f"embedder runs TensorRT engines on an NVIDIA GPU only; "
                                  f"use the minilm or ONNX Runtime embedders on CPU")
    count = int(torch.cuda.device_count())
    if device >= count:
        raise TensorRTUnavailable(f"no CUDA device {device} was found ({count} visible)")
    return torch


def compute_capability(torch: Any, device: int) -> tuple[int, int]:
    """The ``(major, minor)`` compute capability of a CUDA device."""
    major, minor = torch.cuda.get_device_capability(device)
    return int(major), int(minor)


def device_name(torch: Any, device: int) -> str:
    """The model name of a CUDA device (``NVIDIA H200``)."""
    return str(torch.cuda.get_device_name(device))
