"""``minilm-trt``: sentence embeddings from a TensorRT engine built from an ONNX export."""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import structlog
from aieng_hookspecs import build_lock, hookimpl, user_cache_dir

from ._cache import EngineCache, engine_cache_key, external_data_digests, onnx_digest
from ._engine import EngineBuildError, EngineRunner, build_engine
from ._options import TensorRTOptions
from ._profile import ShapeProfile, batches
from ._runtime import compute_capability, device_name, require_cuda, require_tensorrt

__all__ = ["MiniLMTensorRT", "check_positions", "open_tokenizer", "tokenizer_file"]

log = structlog.get_logger(__name__)


def tokenizer_file(options: TensorRTOptions) -> Path:
    """The ``tokenizer.json`` to use: the option, else the one next to the ONNX file."""
    if options.tokenizer_path:
        return Path(options.tokenizer_path).expanduser()
    return Path(options.onnx_path).expanduser().parent / "tokenizer.json"


def open_tokenizer(options: TensorRTOptions) -> Any:
    """The ``tokenizers.Tokenizer`` of :func:`tokenizer_file`, truncating at the profile's
    longest sequence and padding nothing (batches are padded and masked here); blocking."""
    # tokenizers ships no type information: imported by name, used as Any.
    tokenizers: Any = importlib.import_module("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file(options)))
    # A tokenizer.json may pad (all-MiniLM-L6-v2's pads every text to 128 tokens): its
    # padding would count as tokens in the mean.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=options.profile.max_seq)
    return tokenizer


def check_positions(options: TensorRTOptions) -> None:
    """Refuse a profile whose longest sequence (``seq``'s max) exceeds the tokens the
    model holds, read from the ``config.json`` beside the ONNX file (aieng-onnx's exports
    have one; without it nothing is checked): TensorRT would spend minutes building an
    engine whose position embeddings cannot cover those lengths, and fail there or when a
    long text runs.

    :raises ValueError: naming ``seq``, the limit and the config it came from.
    """
    # aieng-onnx's rule (the one copy): the export this engine builds from is its.
    from aieng_onnx._embedder import token_limit

    config_file = Path(options.onnx_path).expanduser().parent / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no config (or not one of a model): nothing to check
        return
    limit = token_limit(config) if isinstance(config, dict) else None
    longest = options.profile.max_seq
    if limit is not None and longest > limit:
        raise ValueError(f"seq = {list(options.seq)} asks for texts of up to {longest} "
                         f"tokens, but the model holds {limit} (max_position_embeddings in "
                         f"{str(config_file)!r}): lower seq's max to at most {limit} (longer "
                         f"texts are truncated)")


def _cleaned(texts: Sequence[str]) -> list[str]:
    # Lone surrogates cannot be encoded as UTF-8, and the tokenizer refuses them: the
    # encoders' own cleaner (aieng-transformers', which aieng-onnx's uses) makes them U+FFFD.
    from aieng_transformers._text import clean

    for text in texts:
        if not isinstance(text, str):
            raise TypeError(
                f"minilm-trt embeds strings, got {type(text).__name__}: {text!r:.80}")
    return [clean(text) for text in texts]


#: The most texts tokenized and ordered by length at once (aieng-onnx's ``ENCODE_CHUNK``).
ENCODE_CHUNK = 4096


class _Loaded:
    def __init__(self, runner: EngineRunner, tokenizer: Any, torch: Any,
                 profile: ShapeProfile) -> None:
        self.runner, self.tokenizer, self.torch, self.profile = (
            runner, tokenizer, torch, profile)
        self.lock = threading.Lock()
        self._width: int | None = None

    def encode(self, texts: Sequence[str],
               checkpoint: Callable[[], None] | None = None) -> Any:
        """Unit vectors of ``texts``, in their order (a ``(len(texts), width)`` float32
        array; ``(0, width)`` for no texts, as the other encoders give). Up to
        :data:`ENCODE_CHUNK` texts are tokenized at once and run longest first, so that
        each batch pads to texts of about its own length (one long text no longer pads a
        batch of short ones). ``checkpoint`` is called before each batch and raises to
        stop the call there (its caller is gone: the lock is free for the next call)."""
        torch = self.torch
        result: Any = None
        with self.lock, torch.inference_mode():
            if not texts:
                if self._width is None:  # the engine's width, from one pass (once)
                    self._width = int(self._pooled([self.tokenizer.encode("")]).shape[1])
                return torch.empty((0, self._width), dtype=torch.float32).numpy()
            for start in range(0, len(texts), ENCODE_CHUNK):
                part = texts[start:start + ENCODE_CHUNK]
                encodings = self.tokenizer.encode_batch(_cleaned(part))
                order = sorted(range(len(part)), key=lambda i: len(encodings[i].ids),
                               reverse=True)
                for rows in batches(len(order), self.profile):
                    if checkpoint is not None:
                        checkpoint()
                    chosen = [order[i] for i in rows]
                    pooled = self._pooled([encodings[i] for i in chosen])
                    if result is None:
                        result = torch.empty((len(texts), pooled.shape[1]),
                                             dtype=pooled.dtype)
                    result[torch.tensor([start + i for i in chosen])] = pooled
        return result.numpy()

    def _pooled(self, encodings: Sequence[Any]) -> Any:
        """The unit mean-pooled vectors of one batch of encodings, on the CPU."""
        torch = self.torch
        # A text without tokens (no special tokens, nothing known) pools to zeros.
        longest = max(1, *(len(e.ids) for e in encodings))
        batch, seq = self.profile.run_shape(len(encodings), longest)
        feeds = {name: torch.zeros((batch, seq), dtype=torch.int64)
                 for name in ("input_ids", "attention_mask", "token_type_ids")}
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            feeds["input_ids"][row, :n] = torch.tensor(enc.ids)
            feeds["attention_mask"][row, :n] = 1
            feeds["token_type_ids"][row, :n] = torch.tensor(enc.type_ids)
        hidden = self.runner.run(feeds)[:len(encodings)]
        mask = feeds["attention_mask"][:len(encodings)].to(hidden.device)
        mask = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1).cpu()


class MiniLMTensorRT:
    """Embeds texts with a TensorRT engine of a sentence-transformers encoder (MiniLM).

    On open it checks that TensorRT imports and a CUDA device exists, then loads the engine
    from ``cache_dir`` or builds it from ``onnx_path`` (minutes) and caches it under a key
    of the ONNX bytes (and its external data files'), the TensorRT version, the GPU's
    compute capability and model, the precision and the shape profile. Vectors are
    mean-pooled over each text's tokens and L2-normalized, like the ``minilm`` embedder's.

    :param options: the typed options.
    """

    def __init__(self, options: TensorRTOptions) -> None:
        self.options = options
        self.profile = options.profile
        self._loaded: _Loaded | None = None
        self._loading = threading.Lock()

    def cache_key(self, trt_version: str, capability: tuple[int, int],
                  gpu: str | None = None) -> str:
        """The engine-cache key of this embedder's engine on a TensorRT and a GPU (its
        compute capability and model name), from the ONNX file's bytes and those of the
        external data files it references.

        :raises FileNotFoundError: when an external data file of the model is missing.
        """
        onnx = Path(self.options.onnx_path).expanduser()
        return engine_cache_key(onnx_sha256=onnx_digest(onnx),
                                external_data=external_data_digests(onnx),
                                trt_version=trt_version, compute_capability=capability,
                                device_name=gpu, precision=self.options.precision,
                                profile=self.profile, workspace_mb=self.options.workspace_mb)

    def engine_cache(self) -> EngineCache:
        """The cache of built engines: ``cache_dir``, else ``tensorrt/`` in aieng's cache
        folder (``$AIENG_CACHE_DIR``, else the user cache dir)."""
        if self.options.cache_dir:
            return EngineCache(Path(self.options.cache_dir).expanduser())
        return EngineCache(user_cache_dir() / "tensorrt")

    def load(self) -> _Loaded:
        """Check the machine, then load or build the engine; blocking and idempotent.

        :raises FileNotFoundError: when the ONNX file or tokenizer is missing.
        :raises TensorRTUnavailable: without TensorRT or a CUDA device.
        """
        with self._loading:
            if self._loaded is not None:
                return self._loaded
            onnx = Path(self.options.onnx_path).expanduser()
            if not onnx.is_file():
                raise FileNotFoundError(f"onnx_path {str(onnx)!r} is no file: point it at "
                                        f"an ONNX export of the encoder (aieng-onnx makes one)")
            tok_path = tokenizer_file(self.options)
            if not tok_path.is_file():
                raise FileNotFoundError(f"no tokenizer at {str(tok_path)!r}: set "
                                        f"tokenizer_path to the encoder's tokenizer.json")
            check_positions(self.options)
            trt = require_tensorrt()
            torch = require_cuda(self.options.device)
            tokenizer = open_tokenizer(self.options)
            logger = trt.Logger(trt.Logger.WARNING)
            key = self.cache_key(str(trt.__version__),
                                 compute_capability(torch, self.options.device),
                                 device_name(torch, self.options.device))
            cache = self.engine_cache()
            # TensorRT deserializes onto the current CUDA device: the option's, not 0.
            with torch.cuda.device(self.options.device):
                runner = self._cached(trt, torch, cache, key, logger)
                if runner is None:
                    # One build across processes (two workers starting at once): another
                    # building this engine is waited for, and its engine loaded.
                    with build_lock(cache.path(key), log=log):
                        runner = self._cached(trt, torch, cache, key, logger)
                        if runner is None:
                            runner = self._build(trt, torch, onnx, cache, key, logger)
            self._loaded = _Loaded(runner, tokenizer, torch, self.profile)
            return self._loaded

    def _cached(self, trt: Any, torch: Any, cache: EngineCache, key: str,
                logger: Any) -> EngineRunner | None:
        # The runner of the cached engine of ``key``, or None (none cached, or damaged).
        engine = cache.load(key)
        if engine is None:
            return None
        try:
            return EngineRunner(trt, torch, engine, device=self.options.device, logger=logger)
        except EngineBuildError:
            # A damaged file (a crash before its bytes reached the disk leaves an empty
            # one) would fail every open: build it again instead.
            log.warning("tensorrt.engine.unreadable", key=key, path=str(cache.path(key)))
            return None

    def _build(self, trt: Any, torch: Any, onnx: Path, cache: EngineCache, key: str,
               logger: Any) -> EngineRunner:
        # Build the engine (minutes), cache it when the cache can keep it, and run it.
        started = time.perf_counter()
        engine = build_engine(trt, onnx.read_bytes(), self.profile,
                              precision=self.options.precision,
                              workspace_bytes=self.options.workspace_mb << 20,
                              logger=logger, path=onnx)
        seconds = round(time.perf_counter() - started, 3)
        try:
            where: Path | None = cache.store(key, engine)
        except OSError as exc:  # a read-only or full cache: minutes of build are not
            where = None        # thrown away; the next load rebuilds
            log.warning("tensorrt.engine.not_cached", key=key, path=str(cache.path(key)),
                        error=str(exc))
        log.info("tensorrt.engine.built", key=key, seconds=seconds,
                 path=None if where is None else str(where))
        return EngineRunner(trt, torch, engine, device=self.options.device, logger=logger)

    @hookimpl
    async def aieng_pipeline_open(self) -> None:
        """Check for TensorRT and a GPU, and load or build the engine, before any request."""
        await anyio.to_thread.run_sync(self.load, abandon_on_cancel=True)

    @hookimpl
    def aieng_pipeline_close(self) -> None:
        """Drop the engine and its execution context."""
        self._loaded = None

    @hookimpl
    async def aieng_embed(self, texts: Sequence[str], model: str | None) -> Any:
        """One unit vector per text, in order (``None`` for another model).

        :raises TypeError: for one string instead of a sequence of them (it would embed
            each character), or a text that is not a string.
        """
        if model not in (None, self.options.model):
            return None
        if isinstance(texts, (str, bytes)):
            raise TypeError(f"aieng_embed takes a sequence of strings, not one "
                            f"{type(texts).__name__}: wrap it in a list ({texts!r:.40})")
        if not texts:  # nothing to embed: no engine to load (or build, for minutes)
            return []
        from aieng_transformers._batching import stop_when

        loaded = await anyio.to_thread.run_sync(self.load, abandon_on_cancel=True)
        # The thread stops at its next batch once this caller stops waiting (a deadline):
        # it cannot be killed, and would otherwise run every batch holding the lock.
        gone = threading.Event()
        try:
            return await anyio.to_thread.run_sync(
                partial(loaded.encode, list(texts), stop_when(gone)), abandon_on_cancel=True)
        finally:
            gone.set()
