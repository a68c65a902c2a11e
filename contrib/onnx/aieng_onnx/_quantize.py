"""ONNX Runtime's offline model tools: dynamic int8 quantization with per-channel weights,
and the BERT graph fusions of ``onnxruntime.transformers``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["NBITS_BLOCK", "matmuls_named", "optimize_bert", "quantize_int8", "quantize_nbits"]


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
