"""ONNX Runtime's offline model tools: dynamic int8 quantization with per-channel weights,
and the BERT graph fusions of ``onnxruntime.transformers``."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ._hoststate import host_state_kept

__all__ = ["NBITS_BLOCK", "SCHEMES", "Int8Weights", "int8_weights", "matmuls_named",
           "optimize_bert", "quantize", "quantize_int8", "quantize_nbits", "weights"]

Int8Weights = Literal["s8", "u8"]
#: CPU flags (Linux ``/proc/cpuinfo``) of x86 instructions that sum u8 × s8 products
#: exactly (``vpdpbusd``: AVX-512 VNNI, AVX-VNNI; AMX).
_EXACT_U8S8 = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@functools.cache
def int8_weights() -> Int8Weights:
    """The int8 weight type for this CPU: ``s8`` (signed weights, the fast u8 × s8
    kernels), except ``u8`` on an x86 CPU known to lack VNNI.

    Without VNNI, ONNX Runtime's u8 × s8 kernels add pairs of products in 16 bits with
    saturation (``vpmaddubsw``), which costs MiniLM's int8 vectors accuracy (mean cosine
    to fp32 0.989 instead of 0.990 on an AVX2-only AMD EPYC); u8 × u8 has no saturation
    (ONNX Runtime's quantization guide gives the same advice). Where the flags cannot be
    read (not Linux) the answer is ``s8``.
    """
    from aieng_transformers._cpu import cpu_flags

    flags = cpu_flags()
    return "s8" if flags is None or flags & _EXACT_U8S8 else "u8"


def weights(option: str) -> Int8Weights | None:
    """The weight type an ``int8_weights`` option names (``None`` for ``auto``: this
    CPU's, :func:`int8_weights`)."""
    return None if option == "auto" else option  # type: ignore[return-value]


def quantize_int8(source: Path, target: Path, *, keep: Sequence[str] = (),
                  weights: Int8Weights | None = None) -> None:
    """Write ``source`` quantized to ``target``: int8 weights, one scale per output channel,
    activations quantized at run time (uint8); blocking.

    Per-channel scales keep the small MiniLM's cosine to fp32 near 0.99+, where one scale
    per tensor loses more (DESIGN.md §4).

    :param keep: names of nodes left in float32.
    :param weights: ``s8`` or ``u8`` weights (default: :func:`int8_weights`, this CPU's).
    """
    from onnx import TensorProto

    kind = weights or int8_weights()
    # DefaultTensorType: shape inference knows no types for the outputs of ONNX Runtime's
    # contrib ops (a BERT-fused graph's Attention, SkipLayerNormalization, ...); they are
    # float. Graphs of standard ops are quantized exactly as without it.
    # host_state_kept: ONNX Runtime's quantizer logs through ``logging.warning``, which
    # would configure the host's root logger.
    with host_state_kept():
        from onnxruntime.quantization import (  # type: ignore[import-untyped]
            QuantType,
            quantize_dynamic,
        )

        quantize_dynamic(str(source), str(target), per_channel=True,
                         weight_type=QuantType.QInt8 if kind == "s8" else QuantType.QUInt8,
                         nodes_to_exclude=list(keep),
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})


#: Weights per scale of the block-wise (``MatMulNBits``) quantization.
NBITS_BLOCK = 32


def quantize_nbits(source: Path, target: Path, *, bits: int, keep: Sequence[str] = ()) -> None:
    """Write ``source`` with its ``MatMul`` weights quantized block-wise to ``target``:
    ``bits`` (8 or 4) per weight, symmetric, one float scale per :data:`NBITS_BLOCK`
    weights along the input axis, as ONNX Runtime's ``MatMulNBits`` operator;
    activations stay float and are quantized per block at run time for the int8 product
    (``accuracy_level`` 4). Weight-only and block-wise, so an outlier costs its block of
    32, not the whole tensor as with dynamic quantization's one activation scale;
    blocking.

    :param keep: names of ``MatMul`` nodes left in float32.
    """
    import onnx

    model = onnx.load(str(source))
    # Imported inside: the module runs ``logging.basicConfig(level=INFO)`` when imported,
    # which host_state_kept makes a no-op on a host's bare root logger.
    with host_state_kept():
        from onnxruntime.quantization.matmul_nbits_quantizer import (  # type: ignore[import-untyped]
            MatMulNBitsQuantizer,
        )

        quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=NBITS_BLOCK,
                                         is_symmetric=True, accuracy_level=4,
                                         nodes_to_exclude=list(keep))
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=False)


#: The quantization schemes: dynamic int8, block-wise q8 / q4 (``MatMulNBits``).
SCHEMES = ("int8", "q8", "q4")


def quantize(source: Path, target: Path, scheme: str, *, keep: Sequence[str] = (),
             weights: Int8Weights | None = None) -> None:
    """Write ``source`` quantized with ``scheme`` (one of :data:`SCHEMES`) to ``target``:
    :func:`quantize_int8` (with ``weights``) or :func:`quantize_nbits`; blocking.

    :raises ValueError: for another scheme.
    """
    if scheme == "int8":
        quantize_int8(source, target, keep=keep, weights=weights)
    elif scheme in SCHEMES:
        quantize_nbits(source, target, bits=int(scheme[1:]), keep=keep)
    else:
        raise ValueError(f"unknown scheme {scheme!r}; known: {list(SCHEMES)}")


def matmuls_named(model: Path, patterns: Sequence[str]) -> list[str]:
    """The names of ``model``'s ``MatMul`` nodes that contain one of ``patterns``.

    :raises ValueError: naming a pattern that matches no ``MatMul`` (a typo would
        otherwise quantize everything without a word).
    """
    import onnx

    names = [node.name for node in onnx.load(str(model), load_external_data=False).graph.node
             if node.op_type == "MatMul"]
    unmatched = [p for p in patterns if not any(p in name for name in names)]
    if unmatched:
        raise ValueError(f"keep_fp32 {unmatched} match no MatMul of {model.name} (its "
                         f"MatMuls are named like {names[:3]})")
    return [name for name in names if any(p in name for p in patterns)]


def optimize_bert(source: Path, target: Path, *, level: int, heads: int, hidden: int) -> None:
    """Write ``source`` with ``onnxruntime.transformers``' BERT fusions to ``target``
    (``optimize_model(model_type="bert", opt_level=level)``, CPU); blocking.

    ``heads`` and ``hidden`` come from the model's config (0: let the optimizer read them
    from the graph). A graph with nothing to fuse is written unchanged.
    """
    with host_state_kept():
        from onnxruntime.transformers.optimizer import (  # type: ignore[import-untyped]
            optimize_model,
        )

        model = optimize_model(str(source), model_type="bert", num_heads=heads,
                               hidden_size=hidden, opt_level=level, use_gpu=False)
        model.save_model_to_file(str(target))
