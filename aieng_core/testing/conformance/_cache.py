"""The conformance suite of the ``cache`` role."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aieng_hookspecs.types import Completion, Message, Request, ToolSpec

from ...kernel import Kernel
from ...pipeline import Pipeline
from .. import strategies as aist
from .._kit import EventCapture
from ..doubles import ScriptedBackend
from ._base import PROPERTY, STAGE, SUBJECT, RoleSuite, check_valid, left_unchanged

__all__ = ["CacheSuite"]


def _novel(text: str = "") -> Request:
    """A request no test stored before."""
    return Request(messages=(Message("user", f"{text} never stored {uuid.uuid4().hex}"),))


class CacheSuite(RoleSuite):
    """Conformance of a cache (``aieng_cache_lookup``, ``aieng_cache_store``).

    Subclass it with a ``component`` fixture returning an *empty* cache::

        class TestMyCache(CacheSuite):
            @pytest.fixture
            def component(self, tmp_path) -> MyCache:
                return MyCache(path=tmp_path / "cache.db")

    A stored request looks up to a completion of the same text, finish reason and tool calls
    with ``cached=True``; a request never stored misses (``None``); a request differing from
    a stored one in its model, messages (their roles and how the text is split into them
    included) or sampling parameters never gets that one's answer; in a pipeline, a hit
    answers what the miss before it answered. The request and completion given are left as
    they were.
    """

    role = "cache"
    required_hooks = ("aieng_cache_lookup", "aieng_cache_store")
    role_hooks = ("aieng_cache_lookup", "aieng_cache_store")

    async def lookup(self, pipeline: Pipeline, request: Request) -> Any:
        """``aieng_cache_lookup`` through the dispatcher; ``None`` on a miss (failing when
        the impl changes the request in place)."""
        found = await left_unchanged(
            pipeline.dispatcher.first("aieng_cache_lookup", {"request": request}, stage=STAGE),
            "aieng_cache_lookup", request=request)
        return None if found is None else found[0]

    async def store(self, pipeline: Pipeline, request: Request, completion: Completion) -> None:
        """``aieng_cache_store`` through the dispatcher (failing when the impl changes the
        request or the completion in place)."""
        await left_unchanged(
            pipeline.dispatcher.gather("aieng_cache_store",
                                       {"request": request, "completion": completion},
                                       stage=STAGE),
            "aieng_cache_store", request=request, completion=completion)

    async def steady_call(self, pipeline: Pipeline, i: int) -> None:
        """A lookup (a miss) and a store of a request of its own (made of ``i``): a cache
        bounded by its size keeps the latest, so warm it up past that size
        (``steady_warmup``) or build it smaller for the check."""
        request = Request(messages=(Message("user", f"steady question {i}"),))
        await self.lookup(pipeline, request)
        await self.store(pipeline, request, Completion(text=f"answer {i}"))

    def check_hit(self, found: object, stored: Completion) -> Completion:
        """A completion equal in text, finish reason and tool calls to the stored one,
        ``cached=True``."""
        assert found is not None, "a stored request missed"
        assert isinstance(found, Completion), (
            f"aieng_cache_lookup returned {type(found).__name__}, expected Completion")
        check_valid(found, "the cached completion")
        assert found.cached is True, "a cache hit must carry cached=True"
        assert found.text == stored.text, "the hit's text differs from the stored completion's"
        assert found.finish_reason == stored.finish_reason, (
            f"stored finish_reason {stored.finish_reason!r}, got {found.finish_reason!r}")
        assert found.tool_calls == stored.tool_calls, (
            "the hit's tool calls differ from the stored completion's")
        return found

    @PROPERTY
    @given(request=aist.requests(), completion=aist.completions())
    async def test_store_then_lookup_hits(
        self, conformance_pipeline: Pipeline, request: Request, completion: Completion
    ) -> None:
        """A stored request looks up to the stored text, marked cached."""
        await self.store(conformance_pipeline, request, completion)
        self.check_hit(await self.lookup(conformance_pipeline, request), completion)

    async def test_never_stored_misses(self, conformance_pipeline: Pipeline) -> None:
        """An empty cache misses, and a request never stored misses after others were."""
        for text in ("", "What is RRF?", "東京"):
            assert await self.lookup(conformance_pipeline, _novel(text)) is None, \
                "an empty cache answered a lookup"
        await self.store(conformance_pipeline, _novel("stored"), Completion(text="stored"))
        found = await self.lookup(conformance_pipeline, Request(
            messages=(Message("system", "Different."), Message("user", "Unrelated question."))))
        assert found is None, "a request never stored hit"

    async def test_another_requests_answer_never_hits(
        self, conformance_pipeline: Pipeline
    ) -> None:
        """Requests that share the user message's text but differ in model, system message,
        earlier turns, the text's role or its split into two messages, a sampling parameter
        (``max_tokens``, ``temperature``, ``seed``, ``stop``, ``top_p``, ``top_k``), the
        response schema or the tools each hit their own stored answer, never another
        request's (a free-text answer is no answer to a request for JSON)."""
        base = _novel("shared")
        prompt = base.messages[0].content
        half = len(prompt) // 2
        variants = [
            base,
            attrs.evolve(base, model="conformance-model-a"),
            attrs.evolve(base, model="conformance-model-b"),
            attrs.evolve(base, messages=(Message("system", "Answer in French."),
                                         *base.messages)),
            attrs.evolve(base, max_tokens=base.max_tokens + 1),
            attrs.evolve(base, seed=7),
            attrs.evolve(base, temperature=0.5, seed=7),  # seeded: a sample to replay
            attrs.evolve(base, temperature=0.5, seed=7, top_p=0.5),
            attrs.evolve(base, temperature=0.5, seed=7, top_k=5),
            attrs.evolve(base, messages=(Message("user", "Is it raining?"),
                                         Message("assistant", "No."), *base.messages)),
            attrs.evolve(base, messages=(Message("system", base.messages[0].content),)),
            attrs.evolve(base, messages=(Message("user", prompt[:half]),
                                         Message("user", prompt[half:]))),
            attrs.evolve(base, stop=("\n\n",)),
            attrs.evolve(base, response_schema={"type": "object"}),
            attrs.evolve(base, tools=(ToolSpec("lookup", "Look a word up."),)),
        ]
        stored = [Completion(text=f"answer {i}") for i in range(len(variants))]
        for request, completion in zip(variants, stored):
            await self.store(conformance_pipeline, request, completion)
        for index, (request, completion) in enumerate(zip(variants, stored)):
            found = await self.lookup(conformance_pipeline, request)
            got = found.text if isinstance(found, Completion) else found
            assert got == completion.text, (
                f"variant {index} of a stored request got {got!r}, "
                f"not its own answer {completion.text!r}")
            self.check_hit(found, completion)

    @pytest.fixture
    def caching_pipeline(self, aieng_kernel: Kernel, component: object) -> Pipeline:
        """``cache_lookup`` → ``generate`` → ``cache_store`` around a backend double that
        never answers the same twice."""
        counter = itertools.count()
        backend = ScriptedBackend(lambda request: f"answer {next(counter)}")
        return self.compose(aieng_kernel, component,
                            stages=["cache_lookup", "generate", "cache_store"],
                            others={"llm": backend})

    @PROPERTY
    @given(prompt=st.text(max_size=100))
    async def test_hit_equals_the_miss(self, caching_pipeline: Pipeline, prompt: str) -> None:
        """In a pipeline, a repeated request is a hit answering what the first run answered,
        although the backend would answer differently now."""
        pipeline = caching_pipeline
        request = Request(messages=(Message("user", prompt),))
        first = await pipeline.run(request)
        second = await pipeline.run(request)
        assert second.cache_hit == SUBJECT, "the repeated request missed"
        assert second.answer == first.answer
        assert second.completion is not None and second.completion.cached

    async def test_does_not_block_the_loop(
        self, conformance_pipeline: Pipeline, captured_events: EventCapture
    ) -> None:
        """Storing and looking up never stall the event loop."""
        requests = [_novel(str(i)) for i in range(20)]
        async with self.loop_watch(captured_events):
            for request in requests:
                await self.lookup(conformance_pipeline, request)
                await self.store(conformance_pipeline, request, Completion(text="x" * 1000))
                await self.lookup(conformance_pipeline, request)
