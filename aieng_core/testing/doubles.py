"""Test doubles, named as such: scripted components with exactly predictable behaviour.

They stand in for real components where the point of a test is the kernel, not the model.
The real components are tested on their own paths.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import hashlib
import math

import anyio

from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Delta, Request, Route, ToolCall, Usage

from ._keep import kept_bound, trim_kept

__all__ = ["FixedRouter", "HashEmbedder", "ManualClock", "PromptCache", "Reply",
           "ScriptedBackend"]

#: One scripted reply: an answer, the tool calls to ask for, or a function of the request
#: giving either.
Reply = str | Sequence[ToolCall] | Callable[[Request], "str | Sequence[ToolCall]"]


class ScriptedBackend:
    """A backend double: answers from a script, records the requests it saw.

    :param replies: the replies, used in turn (the last one repeats), or a function of the
        request. A reply is an answer (``str``), tool calls to ask for (a sequence of
        :class:`ToolCall`: ``finish_reason="tool_calls"``), or a function of the request
        giving either. An answer longer than the request's ``max_tokens`` words is cut
        there (``finish_reason="length"``).
    :param model: the model name it answers for (``None``: any).
    :param delay: seconds to await before answering (to test timeouts and concurrency).
    :param fail_with: an exception to raise instead of answering.
    :param usage: the usage of every reply (``None``: words stand in for tokens).
    :param keep: how many of the latest requests :attr:`requests` holds (``None``: every
        one, the default: a test reads them all). A long-running test (thousands of calls
        measured with :func:`~aieng_core.testing.measure_growth`) gives a small number, or
        the double's own list is what grows; :attr:`calls` counts them all either way.
    """

    def __init__(
        self,
        replies: Sequence[Reply] | Callable[[Request], str | Sequence[ToolCall]] = (
            "scripted answer",),
        *,
        model: str | None = None,
        delay: float = 0.0,
        fail_with: BaseException | None = None,
        usage: Usage | None = None,
        keep: int | None = None,
    ) -> None:
        if not callable(replies) and not replies:
            raise ValueError("give at least one reply")
        self.replies = replies
        self.model = model
        self.delay = delay
        self.fail_with = fail_with
        self.usage = usage
        self.keep = kept_bound(keep)
        #: the requests seen, oldest first (the latest ``keep`` of them).
        self.requests: list[Request] = []
        #: how many requests it was given, all told.
        self.calls = 0

    def _record(self, request: Request) -> None:
        self.calls += 1
        self.requests.append(request)
        trim_kept(self.requests, self.keep)

    def _reply(self, request: Request) -> str | tuple[ToolCall, ...]:
        reply: Reply
        if callable(self.replies):
            reply = self.replies
        else:
            reply = self.replies[min(self.calls - 1, len(self.replies) - 1)]
        if callable(reply):
            reply = reply(request)
        return reply if isinstance(reply, str) else tuple(reply)

    @staticmethod
    def _limit(text: str, request: Request) -> tuple[str, bool]:
        """The reply cut to ``max_tokens`` whitespace-separated words (its token count),
        and whether it was cut."""
        words = text.split()
        if len(words) <= request.max_tokens:
            return text, False
        return " ".join(words[: request.max_tokens]), True

    def _mine(self, request: Request) -> bool:
        return self.model is None or request.model in (None, self.model)

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion | None:
        if not self._mine(request):
            return None
        self._record(request)
        if self.delay:
            await anyio.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with.with_traceback(None)  # not one frame more per call
        reply = self._reply(request)
        if not isinstance(reply, str):
            return Completion(text="", finish_reason="tool_calls", tool_calls=reply,
                              model=self.model or "scripted", usage=self._usage(request, ""))
        text, cut = self._limit(reply, request)
        return Completion(text=text, finish_reason="length" if cut else "stop",
                          model=self.model or "scripted", usage=self._usage(request, text))

    def _usage(self, request: Request, text: str) -> Usage:
        """The fixed usage, or words standing in for tokens: prompt words and answer
        words."""
        if self.usage is not None:
            return self.usage
        return Usage(prompt_tokens=sum(len(m.content.split()) for m in request.messages),
                     completion_tokens=len(text.split()))

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta] | None:
        if not self._mine(request):
            return None
        return self._stream(request)

    async def _stream(self, request: Request) -> AsyncIterator[Delta]:
        self._record(request)
        if self.fail_with is not None:
            raise self.fail_with.with_traceback(None)  # not one frame more per call
        reply = self._reply(request)
        if not isinstance(reply, str):
            yield Delta(text="", finish_reason="tool_calls", tool_calls=reply,
                        usage=self._usage(request, ""), model=self.model or "scripted")
            return
        text, cut = self._limit(reply, request)
        words = text.split(" ")
        for index, word in enumerate(words):
            if self.delay:
                await anyio.sleep(self.delay / max(len(words), 1))
            yield Delta(text=word if index == 0 else f" {word}", index=index)
        yield Delta(text="", index=len(words), finish_reason="length" if cut else "stop",
                    usage=self._usage(request, text), model=self.model or "scripted")


class HashEmbedder:
    """An embedding double: a hashed bag of lower-cased words, L2-normalized.

    Texts sharing words get a positive cosine, texts sharing none get 0 (up to hash
    collisions), so retrieval and reranking tests have a real, deterministic signal without
    loading a model.

    :param dimensions: the vector size.
    :param model: the model id it answers to (``None`` requests always match).
    """

    def __init__(self, dimensions: int = 64, *, model: str = "hash") -> None:
        if dimensions < 1:
            raise ValueError("dimensions must be at least 1")
        self.dimensions = dimensions
        self.model = model
        self.calls = 0

    def vector(self, text: str) -> list[float]:
        """The embedding of one text."""
        vector = [0.0] * self.dimensions
        for word in text.lower().split():
            # surrogatepass: a lone surrogate (JSON's "\ud800") is a word too, not an error
            digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"),
                                     digest_size=4).digest()
            vector[int.from_bytes(digest, "big") % self.dimensions] += 1.0
        norm = math.sqrt(sum(x * x for x in vector))
        return [x / norm for x in vector] if norm else vector

    @hookimpl
    def aieng_embed(self, texts: Sequence[str], model: str | None) -> list[list[float]] | None:
        if model not in (None, self.model):
            return None
        self.calls += 1
        return [self.vector(text) for text in texts]


class PromptCache:
    """A response-cache double keyed on the prompt alone (the last user message, as the
    request reached the cache: redacted by the input guards before it); ``store`` is
    open, so a test can seed or inspect it."""

    def __init__(self) -> None:
        self.store: dict[str, Completion] = {}

    @hookimpl
    def aieng_cache_lookup(self, request: Request) -> Completion | None:
        return self.store.get(request.prompt)

    @hookimpl
    def aieng_cache_store(self, request: Request, completion: Completion) -> None:
        self.store[request.prompt] = completion


class FixedRouter:
    """A router double: routes every request to ``target``, then ``fallbacks`` in order,
    whatever the candidates."""

    def __init__(self, target: str, *fallbacks: str) -> None:
        self.route = Route(target=target, fallbacks=fallbacks)

    @hookimpl
    def aieng_route(self, request: Request, candidates: Sequence[str]) -> Route:
        return self.route


class ManualClock:
    """A clock double that moves only when the test moves it: give it where a component
    takes a clock (``time.monotonic`` or ``time.time``), then set or add to ``now``.

    :param now: the time it shows (seconds).
    """

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
