"""aieng-tensorrt: sentence embeddings from a TensorRT engine, component ``minilm-trt``.

The engine is built from an ONNX export of the encoder (all-MiniLM-L6-v2 from aieng-onnx,
or any BERT-style encoder) with an optimization profile of batch size and sequence length,
and cached by the ONNX bytes (and its external data files'), TensorRT version, GPU
compute capability and model, precision and profile. TensorRT, torch, tokenizers and onnx
are imported when the component opens, not when the plugin loads.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._cache import EngineCache, engine_cache_key
from ._component import MiniLMTensorRT
from ._engine import EngineBuildError
from ._options import TensorRTOptions
from ._profile import ShapeProfile
from ._runtime import TensorRTUnavailable

__all__ = ["EngineBuildError", "EngineCache", "MiniLMTensorRT", "ShapeProfile",
           "TensorRTOptions", "TensorRTUnavailable", "aieng_register_components",
           "engine_cache_key"]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer the ``minilm-trt`` embedder with its typed options."""
    registry.add("minilm-trt", MiniLMTensorRT, options=TensorRTOptions,
                 description="MiniLM sentence embeddings from a cached TensorRT engine (GPU).")
