"""A model's memory footprint from its config alone: no weights are loaded.

weights = parameters x bytes-per-parameter; KV cache (decoders only) =
2 (keys and values) x layers x kv_heads x head_dim x context x bytes, where a layer with a
sliding window (Mistral 7B v0.1, Gemma 2 / 3, Qwen2 with ``use_sliding_window``) counts
at most ``sliding_window - 1`` tokens, as transformers' cache keeps them. Parameters are
counted from the safetensors headers (a few KiB read per file) or from a GGUF's header
(its tensor table; no weight is read).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import attrs

__all__ = ["BYTES", "QUANTIZED_KV", "ModelFootprint", "cache_precision", "footprint",
           "memory_estimate", "parameters_named", "sliding_layers"]

#: Bytes per weight, and per cached key or value, of the precisions an estimate knows
#: (``q8`` / ``q4``: block-wise weights with a float32 scale per 32 of them).
BYTES: dict[str, float] = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "q8": 1 + 4 / 32,
                           "q4": 0.5 + 4 / 32}
#: The KV cache's precision under quantized weights: float32 (torch's dynamic int8 and
#: ONNX Runtime's int8 / q8 / q4 quantize weights only; keys and values stay float32).
QUANTIZED_KV = "fp32"


def cache_precision(precision: str) -> str:
    """The KV cache's precision for weights at ``precision``: the same floating type, or
    :data:`QUANTIZED_KV` for quantized weights (``int8``, ``q8``, ``q4``)."""
    return precision if precision in ("fp32", "fp16", "bf16") else QUANTIZED_KV


@attrs.frozen
class ModelFootprint:
    """What the memory estimate needs.

    :param parameters: the number of weights.
    :param disk_bytes: the model's size on disk (all files of a folder, or the GGUF).
    :param layers: transformer layers (blocks).
    :param kv_heads: key/value heads per layer (grouped-query attention: fewer than the
        query heads).
    :param head_dim: the size of one head.
    :param context: the model's context length; ``None`` for an encoder, or a decoder
        whose config names none (ALiBi models such as BLOOM).
    :param decoder: whether the model keeps a KV cache (default: when it has a context).
    :param sliding_layers: how many of the layers attend within a sliding window only.
    :param sliding_window: that window (``None``: no layer has one); transformers' cache
        keeps the last ``sliding_window - 1`` tokens of such a layer.
    """

    parameters: int
    disk_bytes: int
    layers: int
    kv_heads: int
    head_dim: int
    context: int | None
    decoder: bool = attrs.field(
        default=attrs.Factory(lambda self: self.context is not None, takes_self=True))
    sliding_layers: int = 0
    sliding_window: int | None = None

    def kv_cache_bytes(self, *, bytes_per_param: float, context: int | None = None,
                       sequences: int = 1, windowed: bool = True) -> int:
        """2 x layers x kv_heads x head_dim x context x bytes, per sequence held at once
        (0 for an encoder, and for a decoder of no known context without ``context``);
        a sliding-window layer at most ``sliding_window - 1`` tokens, unless ``windowed``
        is false (a runtime or a cache that keeps every token)."""
        tokens = context if context is not None else self.context
        if not self.decoder or tokens is None:
            return 0
        cached = self.layers * tokens
        if windowed and self.sliding_window is not None and self.sliding_layers:
            kept = min(tokens, max(self.sliding_window - 1, 0))
            cached -= self.sliding_layers * (tokens - kept)
        return int(2 * cached * self.kv_heads * self.head_dim * bytes_per_param * sequences)

    def estimate(self, *, bytes_per_param: float, context: int | None = None,
                 kv_bytes: float | None = None, sequences: int = 1,
                 windowed: bool = True) -> dict[str, Any]:
        """The figures ``aieng models`` prints (bytes; the context the KV cache assumes).

        :param bytes_per_param: bytes per weight.
        :param kv_bytes: bytes per cached key or value (default: ``bytes_per_param``).
        :param sequences: sequences whose KV caches are held at once (a backend's
            ``max_batch``).
        :param windowed: whether sliding-window layers keep only their window (see
            :meth:`kv_cache_bytes`).
        """
        weights = int(self.parameters * bytes_per_param)
        kv = self.kv_cache_bytes(
            bytes_per_param=bytes_per_param if kv_bytes is None else kv_bytes,
            context=context, sequences=sequences, windowed=windowed)
        capped = windowed and self.decoder and self.sliding_window is not None
        return {"parameters": self.parameters, "disk_bytes": self.disk_bytes,
                "layers": self.layers, "kv_heads": self.kv_heads, "head_dim": self.head_dim,
                "context": (context or self.context) if self.decoder else None,
                "sliding_layers": self.sliding_layers if capped else 0,
                "sliding_window": self.sliding_window if capped else None,
                "sequences": sequences, "weights_bytes": weights, "kv_cache_bytes": kv,
                "total_bytes": weights + kv}


def memory_estimate(model: str, source: Path, *, precision: str, kv_precision: str | None = None,
                    context: int | None = None, sequences: int = 1,
                    keep_fp32: tuple[str, ...] = (), windowed: bool = True) -> dict[str, Any]:
    """What a backend's ``memory_estimate`` returns: its model id, the model's path, the
    precision of its weights and the figures of :meth:`ModelFootprint.estimate` for
    ``source`` (a folder or GGUF; only headers are read).

    :param kv_precision: the KV cache's (default: :func:`cache_precision` of ``precision``).
    :param keep_fp32: fragments of weight names (Hugging Face's: ``down_proj``) kept in
        float32 whatever ``precision`` says (aieng-onnx's ``keep_fp32``); their weights
        count 4 bytes each (``kept_fp32_parameters``).
    :param windowed: whether the runtime keeps only the window on sliding-window layers
        (transformers' own cache does; see :meth:`ModelFootprint.kv_cache_bytes`).
    :raises ValueError: for an unknown precision or a path that is no model.
    """
    if precision not in BYTES:
        raise ValueError(f"unknown precision {precision!r}; known: {sorted(BYTES)}")
    cache = kv_precision or cache_precision(precision)
    if cache not in BYTES:
        raise ValueError(f"unknown precision {cache!r}; known: {sorted(BYTES)}")
    figures = footprint(source).estimate(
        bytes_per_param=BYTES[precision], kv_bytes=BYTES[cache],
        context=context, sequences=sequences, windowed=windowed)
    result = {"model": model, "path": str(source), "precision": precision, **figures}
    if keep_fp32:
        kept = parameters_named(source, keep_fp32)
        extra = int(kept * (BYTES["fp32"] - BYTES[precision]))
        result.update(kept_fp32_parameters=kept, weights_bytes=figures["weights_bytes"] + extra,
                      total_bytes=figures["total_bytes"] + extra)
    return result


#: Hugging Face weight-name fragments and the GGUF tensor names llama.cpp gives them.
_GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v",
               "o_proj": "attn_output", "gate_proj": "ffn_gate", "up_proj": "ffn_up",
               "down_proj": "ffn_down", "lm_head": "output.", "embed_tokens": "token_embd"}


def parameters_named(source: Path, fragments: tuple[str, ...]) -> int:
    """Weights of ``source`` (a folder's safetensors, or a GGUF, by llama.cpp's names for
    Hugging Face's) in tensors whose names contain one of ``fragments``; headers only."""
    sizes: dict[str, int] = {}
    if source.is_file() and source.suffix.lower() == ".gguf":
        read_gguf_header(source, sizes)
        wanted = [_GGUF_NAMES.get(f, f) for f in fragments]
    else:
        for file in _weight_files(source):
            sizes.update(_safetensors_sizes(file))
        wanted = list(fragments)
    return sum(size for name, size in sizes.items() if any(w in name for w in wanted))


def footprint(path: Path) -> ModelFootprint:
    """Read a Hugging Face model folder's ``config.json`` and safetensors headers, or a
    GGUF file's metadata.

    :raises ValueError: when the folder has no ``config.json`` / the file is no GGUF.
    """
    if path.is_file() and path.suffix.lower() == ".gguf":
        return _from_gguf(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path} is neither a model folder with a config.json nor a .gguf")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    parameters = sum(sum(_safetensors_sizes(f).values()) for f in _weight_files(path))
    if not parameters:  # a pytorch_model.bin only: its size at 4 bytes per weight
        parameters = sum(f.stat().st_size for f in path.glob("*.bin")) // 4
    # Hugging Face's names, GPT-2's / BLOOM's, MPT's.
    heads = int(config.get("num_attention_heads") or config.get("n_head")
                or config.get("n_heads") or 1)
    hidden = int(config.get("hidden_size") or config.get("n_embd") or config.get("d_model")
                 or 0)
    architectures = config.get("architectures") or []
    decoder = any(str(a).endswith("ForCausalLM") or str(a).endswith("LMHeadModel")
                  for a in architectures)
    context = (config.get("max_position_embeddings") or config.get("n_positions")
               or config.get("max_seq_len"))
    sliding, window = sliding_layers(config)
    return ModelFootprint(
        parameters=parameters, disk_bytes=disk,
        layers=int(config.get("num_hidden_layers") or config.get("n_layer")
                   or config.get("n_layers") or 0),
        kv_heads=_kv_heads(config, heads),
        head_dim=int(config.get("head_dim") or (hidden // heads if heads else 0)),
        context=int(context) if decoder and context else None, decoder=decoder,
        sliding_layers=sliding, sliding_window=window)


#: Transformers' default ``sliding_window_pattern`` where a config names no
#: ``layer_types``: every ``pattern``-th layer attends globally, the others in the window.
_PATTERNS = {"gemma2": 2, "gemma3": 6, "gemma3_text": 6, "cohere2": 4}


def sliding_layers(config: dict[str, Any]) -> tuple[int, int | None]:
    """How many layers of a ``config.json`` keep a sliding-window KV cache, and the window,
    by transformers' rule (``DynamicCache(config=...)``): the window is ``sliding_window``
    (else ``attention_chunk_size``), off under Qwen's ``use_sliding_window = false``; the
    layers are the ``sliding_attention`` / ``chunked_attention`` ones of ``layer_types``,
    else those past Qwen's ``max_window_layers``, else all but every
    ``sliding_window_pattern``-th one (Gemma 2 / 3, Cohere 2), else every layer (Mistral
    7B v0.1, Phi-3). ``(0, None)`` when there is no window."""
    layers = int(config.get("num_hidden_layers") or 0)
    window = config.get("sliding_window") or config.get("attention_chunk_size")
    qwen = "use_sliding_window" in config or "max_window_layers" in config
    if not isinstance(window, int) or window <= 0 or (
            qwen and not config.get("use_sliding_window")):
        return 0, None
    types = config.get("layer_types")
    if isinstance(types, list):
        sliding = sum(kind in ("sliding_attention", "chunked_attention")
                      for kind in types[:layers])
    elif qwen:
        sliding = max(0, layers - int(config.get("max_window_layers") or 0))
    elif "sliding_window_pattern" in config or config.get("model_type") in _PATTERNS:
        pattern = int(config.get("sliding_window_pattern")
                      or _PATTERNS[str(config.get("model_type"))])
        sliding = sum(1 for i in range(layers) if (i + 1) % pattern)
    else:
        sliding = layers
    return sliding, window if sliding else None


def _kv_heads(config: dict[str, Any], heads: int) -> int:
    # The key/value heads a layer caches: GQA's num_key_value_heads; one for multi-query
    # attention (Falcon-7B, StarCoder's GPTBigCode: multi_query), except in Falcon's new
    # decoder architecture, whose cache transformers keeps at every query head; else all.
    if config.get("num_key_value_heads"):
        return int(config["num_key_value_heads"])
    if config.get("multi_query") and not config.get("new_decoder_architecture"):
        return 1
    return heads


#: The weights ``from_pretrained`` loads, in its order of preference: one file, or the
#: shards its index names.
WEIGHT_FORMATS = (("model.safetensors", "model.safetensors.index.json"),
                  ("pytorch_model.bin", "pytorch_model.bin.index.json"))


def loaded_weight_files(folder: Path, formats: tuple[tuple[str, str], ...] = WEIGHT_FORMATS
                        ) -> list[Path] | None:
    """The weight files ``from_pretrained`` loads from ``folder`` (of ``formats``), or
    ``None`` when it holds none of them. A folder may hold the same weights twice (a
    ``.bin`` beside the safetensors; Mistral's ``consolidated.safetensors`` beside the
    shards): only the loaded ones are listed."""
    for single, index in formats:
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            shards = json.loads((folder / index).read_text(encoding="utf-8"))
            return [folder / name for name in sorted(set(shards.get("weight_map", {}).values()))]
    return None


def _weight_files(folder: Path) -> list[Path]:
    # The safetensors files transformers loads, else every one.
    return (loaded_weight_files(folder, WEIGHT_FORMATS[:1])
            or sorted(folder.glob("*.safetensors")))


def _safetensors_sizes(file: Path) -> dict[str, int]:
    # Each tensor's number of weights. The format: an 8-byte little-endian header length,
    # then a JSON header of shapes.
    with file.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {k: math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _from_gguf(path: Path) -> ModelFootprint:
    meta, parameters = read_gguf_header(path)
    arch = str(meta.get("general.architecture") or "")
    if not arch:
        raise ValueError(f"{path}: a GGUF without general.architecture")
    heads = int(meta.get(f"{arch}.attention.head_count") or 1)
    hidden = int(meta.get(f"{arch}.embedding_length") or 0)
    head_dim = meta.get(f"{arch}.attention.key_length") or hidden // heads
    context = meta.get(f"{arch}.context_length")
    layers = int(meta.get(f"{arch}.block_count") or 0)
    # transformers reads the window of Gemma 2 / 3 GGUFs only, and lays out their layers
    # by its defaults (a Mistral GGUF is a "llama" one, without a window).
    window = meta.get(f"{arch}.attention.sliding_window") if arch in _PATTERNS else None
    sliding, window = sliding_layers({"model_type": arch, "num_hidden_layers": layers,
                                      "sliding_window": window})
    return ModelFootprint(
        parameters=parameters, disk_bytes=path.stat().st_size, layers=layers,
        kv_heads=int(meta.get(f"{arch}.attention.head_count_kv") or heads),
        head_dim=int(head_dim), context=int(context) if context else None,
        sliding_layers=sliding, sliding_window=window)


# GGUF value types (the spec's gguf_type): struct formats of the fixed-size ones.
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def read_gguf_header(path: Path, tensor_sizes: dict[str, int] | None = None
                     ) -> tuple[dict[str, Any], int]:
    """A GGUF's scalar metadata (arrays skipped) and its number of weights, read from the
    header alone (gguf's own reader also parses every array, seconds for a vocabulary);
    ``tensor_sizes``, when given, receives each tensor's name and number of weights.

    :raises ValueError: when the file is not GGUF (version 2 or 3).
    """
    with path.open("rb") as handle:
        data = handle.read(1 << 16)
        at = 0

        def need(count: int) -> None:
            nonlocal data
            while at + count > len(data):
                more = handle.read(max(count, 1 << 20))
                if not more:
                    raise ValueError(f"{path}: the GGUF header is truncated")
                data += more

        def unpack(fmt: str) -> Any:
            nonlocal at
            size = struct.calcsize(fmt)
            need(size)
            (value,) = struct.unpack_from(fmt, data, at)
            at += size
            return value

        def string() -> str:
            nonlocal at
            length = unpack("<Q")
            need(length)
            text = data[at:at + length].decode("utf-8", "replace")
            at += length
            return text

        def value(kind: int) -> Any:
            nonlocal at
            if kind in _GGUF_SCALARS:
                return unpack(_GGUF_SCALARS[kind])
            if kind == _GGUF_STRING:
                return string()
            if kind == _GGUF_ARRAY:
                item, count = unpack("<I"), unpack("<Q")
                if item in _GGUF_SCALARS:  # skip fixed-size items in one move
                    size = struct.calcsize(_GGUF_SCALARS[item]) * count
                    need(size)
                    at += size
                else:
                    for _ in range(count):
                        value(item)
                return None
            raise ValueError(f"{path}: unknown GGUF value type {kind}")

        need(24)
        if data[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        at = 4
        version = unpack("<I")
        if version not in (2, 3):
            raise ValueError(f"{path}: GGUF version {version} is not supported")
        tensors, entries = unpack("<Q"), unpack("<Q")
        meta: dict[str, Any] = {}
        for _ in range(entries):
            key = string()
            meta[key] = value(unpack("<I"))
        sizes: dict[str, int] = {}
        for _ in range(tensors):
            name = string()
            dims = [unpack("<Q") for _ in range(unpack("<I"))]
            unpack("<I")  # the tensor type
            unpack("<Q")  # the data offset
            sizes[name] = math.prod(dims)
        if tensor_sizes is not None:
            tensor_sizes.update(sizes)
        return meta, sum(sizes.values())
