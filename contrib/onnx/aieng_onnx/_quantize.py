"""ONNX Runtime's offline model tools: dynamic int8 quantization with per-channel weights,
and the BERT graph fusions of ``onnxruntime.transformers``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["NBITS_BLOCK", "SCHEMES", "matmuls_named", "optimize_bert", "quantize",
           "quantize_int8", "quantize_nbits"]


def quantize_int8(source: Path, target: Path, *, keep: Sequence[str] = ()) -> None:
    """Write ``source`` quantized to ``target``: int8 weights, one scale per output channel,
    activations quantized at run time (uint8); blocking.

    Per-channel scales keep the small MiniLM's cosine to fp32 near 0.99+, where one scale
    per tensor loses more (DESIGN.md §4).

    :param keep: names of nodes left in float32.
    """
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic  # type: ignore[import-untyped]

    # DefaultTensorType: shape inference knows no types for the outputs of ONNX Runtime's
    # contrib ops (a BERT-fused graph's Attention, SkipLayerNormalization, ...); they are
    # float. Graphs of standard ops are quantized exactly as without it.
    quantize_dynamic(str(source), str(target), per_channel=True,
                     weight_type=QuantType.QInt8, nodes_to_exclude=list(keep),
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
    from onnxruntime.quantization.matmul_nbits_quantizer import (  # type: ignore[import-untyped]
        MatMulNBitsQuantizer,
    )

    model = onnx.load(str(source))
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=NBITS_BLOCK,
                                     is_symmetric=True, accuracy_level=4,
                                     nodes_to_exclude=list(keep))
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)


#: The quantization schemes: dynamic int8, block-wise q8 / q4 (``MatMulNBits``).
SCHEMES = ("int8", "q8", "q4")


def quantize(source: Path, target: Path, scheme: str, *, keep: Sequence[str] = ()) -> None:
    """Write ``source`` quantized with ``scheme`` (one of :data:`SCHEMES`) to ``target``:
    :func:`quantize_int8` or :func:`quantize_nbits`; blocking.

    :raises ValueError: for another scheme.
    """
    if scheme == "int8":
        quantize_int8(source, target, keep=keep)
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
    from onnxruntime.transformers.optimizer import optimize_model  # type: ignore[import-untyped]

    model = optimize_model(str(source), model_type="bert", num_heads=heads, hidden_size=hidden,
                           opt_level=level, use_gpu=False)
    model.save_model_to_file(str(target))
