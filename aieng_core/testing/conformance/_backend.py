"""The conformance suite of the ``backend`` role: generate, stream, embed."""

from __future__ import annotations

import math
import warnings
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, ClassVar

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_hookspecs.types import Completion, Delta, Message, Request, Usage

from ...kernel import Kernel
from ...pipeline import Pipeline
from .._kit import EventCapture
from ._base import (
    PROPERTY,
    STAGE,
    SUBJECT,
    RoleSuite,
    check_valid,
    collect_stream,
    implemented_hooks,
    left_unchanged,
)

__all__ = ["BackendSuite"]


class BackendSuite(RoleSuite):
    """Conformance of a backend (``aieng_generate``, ``aieng_stream``, ``aieng_embed``).

    Subclass it with a ``component`` fixture returning the backend::

        class TestMyBackend(BackendSuite):
            @pytest.fixture
            def component(self) -> MyBackend:
                return MyBackend(model_path=...)

    What the component may declare, as attributes:

    - ``model`` (str): the model it serves; a request naming another model must get
      ``None`` ("not mine") from every hook it implements.
    - ``deterministic = True``: greedy decoding (temperature 0, a seed) gives one text, so
      two generations agree and a stream concatenates to the generated text (with the
      generated usage, when its last delta reports one).

    The request (and the list of texts to embed) is left as it was given; the i-th vector
    is the i-th text's whatever the batch; a stream closed after its first delta closes;
    generations asked at once each keep within their own request's ``max_tokens``.

    Fixtures it may override: ``generate_request`` (the request generations use) and
    ``embed_texts`` (the texts embedding uses). Tests of a hook the component does not
    implement are skipped, so an embedding-only backend runs the same suite.
    """

    role = "backend"
    role_hooks = ("aieng_generate", "aieng_stream", "aieng_embed")
    #: Calls run at once by the concurrency test.
    concurrency: ClassVar[int] = 8
    #: A model name no backend serves.
    unknown_model: ClassVar[str] = "aieng-conformance-no-such-model"

    # -- fixtures ------------------------------------------------------------------------

    @pytest.fixture
    def generate_request(self) -> Request:
        """The request of the generation tests: greedy, seeded, a short answer."""
        return Request(
            messages=(Message("system", "Answer in one short sentence."),
                      Message("user", "Which colour do you get by mixing blue and yellow?")),
            temperature=0.0, seed=0, max_tokens=16)

    @pytest.fixture
    def embed_texts(self) -> list[str]:
        """The texts of the embedding tests."""
        return ["alpha", "Reciprocal rank fusion merges ranked lists.", "Zürich, 東京 — ✓"]

    # -- calling the hooks through the kernel -------------------------------------------

    async def generate(self, pipeline: Pipeline, request: Request) -> Any:
        """``aieng_generate`` through the pipeline's dispatcher; ``None`` when not answered
        (failing when the impl changes the request in place)."""
        found = await left_unchanged(
            pipeline.dispatcher.first("aieng_generate", {"request": request}, stage=STAGE),
            "aieng_generate", request=request)
        return None if found is None else found[0]

    async def exercise(self, pipeline: Pipeline, request: pytest.FixtureRequest) -> None:
        """Generate once and embed once, as far as the component does either."""
        await pipeline.open()
        hooks = implemented_hooks(pipeline.components[SUBJECT])
        if "aieng_generate" in hooks:
            await self.generate(pipeline, request.getfixturevalue("generate_request"))
        if "aieng_embed" in hooks:
            await self.embed(pipeline, request.getfixturevalue("embed_texts"))

    async def steady_call(self, pipeline: Pipeline, i: int) -> None:
        """A short greedy generation of a prompt of its own (made of ``i``); from a backend
        that does not generate, an embedding of a text of its own."""
        request = Request(messages=(Message("user", f"Repeat the number {i}."),),
                          temperature=0.0, seed=0, max_tokens=8)
        if await self.generate(pipeline, request) is None:
            await self.embed(pipeline, [f"steady text {i}"])

    async def stream(self, pipeline: Pipeline, request: Request) -> list[Any] | None:
        """``aieng_stream`` through the dispatcher, consumed; ``None`` when not streamed
        (failing when the impl changes the request in place, streaming included)."""

        async def consumed() -> list[Any] | None:
            found = await pipeline.dispatcher.first("aieng_stream", {"request": request},
                                                    stage=STAGE)
            return None if found is None else await collect_stream(pipeline.dispatcher,
                                                                   found[0])

        result: list[Any] | None = await left_unchanged(consumed(), "aieng_stream",
                                                        request=request)
        return result

    async def embed(self, pipeline: Pipeline, texts: Sequence[str],
                    model: str | None = None) -> Any:
        """``aieng_embed`` through the dispatcher; ``None`` when not answered (failing when
        the impl changes the list of texts in place)."""
        given = list(texts)
        found = await left_unchanged(
            pipeline.dispatcher.first("aieng_embed", {"texts": given, "model": model},
                                      stage=STAGE),
            "aieng_embed", texts=given)
        return None if found is None else found[0]

    # -- checks --------------------------------------------------------------------------

    def check_completion(self, completion: object, request: Request) -> Completion:
        """A completion with usage counts, within the request's ``max_tokens``."""
        assert completion is not None, "aieng_generate returned None for a request it serves"
        assert isinstance(completion, Completion), (
            f"aieng_generate returned {type(completion).__name__}, expected Completion")
        check_valid(completion, "the completion")
        usage = completion.usage
        assert isinstance(usage, Usage), "Completion.usage is not a Usage"
        assert usage.prompt_tokens >= 0 and usage.completion_tokens >= 0
        assert usage.completion_tokens <= request.max_tokens, (
            f"{usage.completion_tokens} completion tokens for max_tokens={request.max_tokens}")
        return completion

    def check_deltas(self, deltas: Sequence[object]) -> str:
        """Deltas numbered 0..n-1, only the last with a finish reason; returns their text."""
        assert deltas, "aieng_stream yielded nothing; the last delta must carry finish_reason"
        for position, delta in enumerate(deltas):
            assert isinstance(delta, Delta), (
                f"stream item {position} is {type(delta).__name__}, expected Delta")
            check_valid(delta, f"delta {position}")
            assert delta.index == position, f"delta {position} has index {delta.index}"
        typed = [d for d in deltas if isinstance(d, Delta)]
        assert typed[-1].finish_reason is not None, "the last delta has no finish_reason"
        early = [d.index for d in typed[:-1] if d.finish_reason is not None]
        assert not early, f"deltas {early} carry a finish_reason before the last one"
        return "".join(d.text for d in typed)

    def check_stream_usage(self, deltas: Sequence[object], request: Request) -> Usage | None:
        """The stream's completion tokens (the last delta's usage, or else the count of the
        deltas that carry text, as the kernel counts them) within ``max_tokens``; returns
        the last delta's usage."""
        typed = [d for d in deltas if isinstance(d, Delta)]
        usage = typed[-1].usage if typed else None
        if usage is not None:
            assert usage.prompt_tokens >= 0 and usage.completion_tokens >= 0
            tokens = usage.completion_tokens
        else:
            tokens = sum(1 for d in typed if d.text)
        assert tokens <= request.max_tokens, (
            f"{tokens} streamed completion tokens for max_tokens={request.max_tokens}")
        return usage

    def check_vectors(self, vectors: object, texts: Sequence[str]) -> None:
        """One finite vector per text, all of one dimension."""
        assert vectors is not None, "aieng_embed returned None for the default model"
        assert isinstance(vectors, Iterable), (
            f"aieng_embed returned {type(vectors).__name__}, expected a sequence of vectors")
        rows = list(vectors)
        assert len(rows) == len(texts), f"{len(rows)} vectors for {len(texts)} texts"
        dims = {len(row) for row in rows}
        assert len(dims) <= 1, f"vectors of different dimensions: {sorted(dims)}"
        assert not rows or dims.pop() > 0, "empty vectors"
        for row in rows:
            assert all(math.isfinite(float(x)) for x in row), "a vector holds NaN or infinity"

    # -- generate ------------------------------------------------------------------------

    async def test_generate_returns_a_completion(
        self, component: object, conformance_pipeline: Pipeline, generate_request: Request
    ) -> None:
        """A served request gets a Completion with non-negative usage."""
        self.skip_unless_implements(component, "aieng_generate")
        completion = await self.generate(conformance_pipeline, generate_request)
        self.check_completion(completion, generate_request)

    async def test_generate_respects_max_tokens(
        self, component: object, conformance_pipeline: Pipeline, generate_request: Request
    ) -> None:
        """With ``max_tokens=1`` at most one completion token is generated."""
        self.skip_unless_implements(component, "aieng_generate")
        request = attrs.evolve(generate_request, max_tokens=1)
        self.check_completion(await self.generate(conformance_pipeline, request), request)

    @settings(PROPERTY, max_examples=10)
    @given(prompt=st.text(max_size=200))
    async def test_generate_accepts_any_prompt(
        self, component: object, conformance_pipeline: Pipeline, generate_request: Request,
        prompt: str,
    ) -> None:
        """Any user text, empty and odd Unicode included, gets a valid completion."""
        self.skip_unless_implements(component, "aieng_generate")
        request = attrs.evolve(generate_request, max_tokens=8,
                               messages=(Message("user", prompt),))
        self.check_completion(await self.generate(conformance_pipeline, request), request)

    async def test_deterministic_generation_repeats(
        self, component: object, conformance_pipeline: Pipeline, generate_request: Request
    ) -> None:
        """A backend declaring ``deterministic = True`` answers a greedy request alike twice."""
        self.skip_unless_implements(component, "aieng_generate")
        if getattr(component, "deterministic", False) is not True:
            pytest.skip("the component does not declare deterministic = True")
        first = await self.generate(conformance_pipeline, generate_request)
        second = await self.generate(conformance_pipeline, generate_request)
        assert self.check_completion(first, generate_request).text == \
            self.check_completion(second, generate_request).text

    async def test_concurrent_generate_calls(
        self, component: object, conformance_pipeline: Pipeline, generate_request: Request
    ) -> None:
        """Eight generations at once, of requests differing in their prompt and
        ``max_tokens`` (1 to 8), all succeed, each within its own request's ``max_tokens``:
        a backend batching them answers each request with its own completion."""
        self.skip_unless_implements(component, "aieng_generate")
        asked = generate_request.messages[-1].content
        requests = [attrs.evolve(generate_request, max_tokens=index + 1, messages=(
            *generate_request.messages[:-1], Message("user", f"{asked} ({index + 1})")))
            for index in range(self.concurrency)]
        results: list[object] = [None] * self.concurrency

        async def one(index: int) -> None:
            results[index] = await self.generate(conformance_pipeline, requests[index])

        async with anyio.create_task_group() as tg:
            for index in range(self.concurrency):
                tg.start_soon(one, index)
        for index, (completion, request) in enumerate(zip(results, requests)):
            try:
                self.check_completion(completion, request)
            except AssertionError as exc:
                raise AssertionError(
                    f"generation {index} of {self.concurrency} asked at once: {exc} (was it "
                    "given another request's completion?)") from None

    async def test_generate_in_a_pipeline(
        self, aieng_kernel: Kernel, component: object, generate_request: Request
    ) -> None:
        """A ``generate`` pipeline of the component runs and records the model call."""
        self.skip_unless_implements(component, "aieng_generate", "aieng_stream")
        pipeline = self.compose(aieng_kernel, component, stages=["generate"])
        result = await pipeline.run(generate_request)
        assert result.status == "ok"
        assert isinstance(result.completion, Completion)
        assert len(result.model_calls) == 1

    # -- stream --------------------------------------------------------------------------

    async def test_stream_yields_deltas(
        self, component: object, conformance_pipeline: Pipeline, generate_request: Request
    ) -> None:
        """A stream yields Deltas numbered from 0; the last, and only it, has a finish reason."""
        self.skip_unless_implements(component, "aieng_stream")
        deltas = await self.stream(conformance_pipeline, generate_request)
        assert deltas is not None, "aieng_stream returned None for a request it serves"
        self.check_deltas(deltas)
        self.check_stream_usage(deltas, generate_request)

    async def test_stream_respects_max_tokens(
        self, component: object, conformance_pipeline: Pipeline, generate_request: Request
    ) -> None:
        """With ``max_tokens=1`` a stream holds at most one completion token (its last
        delta's usage, or else its deltas that carry text)."""
        self.skip_unless_implements(component, "aieng_stream")
        request = attrs.evolve(generate_request, max_tokens=1)
        deltas = await self.stream(conformance_pipeline, request)
        assert deltas is not None, "aieng_stream returned None for a request it serves"
        self.check_deltas(deltas)
        self.check_stream_usage(deltas, request)

    async def test_stream_matches_generate_when_deterministic(
        self, component: object, conformance_pipeline: Pipeline, generate_request: Request
    ) -> None:
        """For a deterministic backend, the stream's text equals the generated text, its
        finish reason the generated one (``length`` when ``max_tokens`` cut both), and the
        usage its last delta reports, if any, equals the generated usage; with the
        ``generate_request`` and with it cut to ``max_tokens=1``."""
        self.skip_unless_implements(component, "aieng_stream")
        self.skip_unless_implements(component, "aieng_generate")
        if getattr(component, "deterministic", False) is not True:
            pytest.skip("the component does not declare deterministic = True")
        for request in (generate_request, attrs.evolve(generate_request, max_tokens=1)):
            deltas = await self.stream(conformance_pipeline, request)
            assert deltas is not None, "aieng_stream returned None for a request it serves"
            completion = await self.generate(conformance_pipeline, request)
            generated = self.check_completion(completion, request)
            assert self.check_deltas(deltas) == generated.text
            finish = deltas[-1].finish_reason
            assert finish == generated.finish_reason, (
                f"with max_tokens={request.max_tokens} the stream ends with finish_reason "
                f"{finish!r}, the generation with {generated.finish_reason!r}")
            usage = self.check_stream_usage(deltas, request)
            assert usage is None or usage == generated.usage, (
                f"the stream reports {usage}, the generation {generated.usage}")

    async def test_stream_names_the_model_generate_names(
        self, component: object, conformance_pipeline: Pipeline, generate_request: Request
    ) -> None:
        """The model a stream's deltas name (the last name given) is the one the generated
        completion names, so a streamed run records the same ``Completion.model``. A stream
        that names none (``Delta.model`` is newer than many backends) passes with a
        warning."""
        self.skip_unless_implements(component, "aieng_stream")
        self.skip_unless_implements(component, "aieng_generate")
        deltas = await self.stream(conformance_pipeline, generate_request)
        assert deltas is not None, "aieng_stream returned None for a request it serves"
        named = [d.model for d in deltas if isinstance(d, Delta) and d.model]
        generated = self.check_completion(
            await self.generate(conformance_pipeline, generate_request), generate_request)
        if not named:
            if generated.model:
                warnings.warn(f"the stream names no model, the generation {generated.model!r}: "
                              "set Delta.model on a delta as aieng_generate sets "
                              "Completion.model (a streamed run records no model)",
                              UserWarning, stacklevel=1)
            return
        assert named[-1] == generated.model, (
            f"the stream names model {named[-1]!r}, the generation {generated.model!r}")

    async def test_stream_closes_early(
        self, component: object, conformance_pipeline: Pipeline, generate_request: Request
    ) -> None:
        """A stream closed after its first delta (a client gone, a guard blocking) closes
        without an error: an async generator that catches ``GeneratorExit`` and yields again
        makes ``aclose`` raise, and the kernel's cleanup with it."""
        self.skip_unless_implements(component, "aieng_stream")
        found = await conformance_pipeline.dispatcher.first(
            "aieng_stream", {"request": generate_request}, stage=STAGE)
        assert found is not None, "aieng_stream returned None for a request it serves"
        stream = found[0]
        assert isinstance(stream, AsyncIterator), (
            f"aieng_stream returned {type(stream).__name__}, expected an async iterator")
        closer = getattr(stream, "aclose", None)
        try:
            with anyio.fail_after(60):
                first = await anext(stream, None)
        finally:
            if closer is not None:
                try:
                    with anyio.fail_after(60):
                        await closer()
                except RuntimeError as exc:
                    raise AssertionError(
                        f"closing the stream after its first delta failed: {exc}; do not "
                        "catch GeneratorExit (use try/finally for cleanup)") from None
        assert first is None or isinstance(first, Delta), (
            f"stream item 0 is {type(first).__name__}, expected Delta")

    # -- models --------------------------------------------------------------------------

    async def test_unknown_model_is_not_mine(
        self, component: object, conformance_pipeline: Pipeline, generate_request: Request,
        embed_texts: list[str],
    ) -> None:
        """A backend declaring ``model`` returns None for a model it does not serve."""
        model = getattr(component, "model", None)
        if not isinstance(model, str) or not model:
            pytest.skip("the component declares no model, so it serves any")
        hooks = implemented_hooks(component)
        request = attrs.evolve(generate_request, model=self.unknown_model)
        if "aieng_generate" in hooks:
            assert await self.generate(conformance_pipeline, request) is None, \
                "aieng_generate answered a model it does not serve"
        if "aieng_stream" in hooks:
            assert await self.stream(conformance_pipeline, request) is None, \
                "aieng_stream answered a model it does not serve"
        if "aieng_embed" in hooks:
            assert await self.embed(conformance_pipeline, embed_texts,
                                    self.unknown_model) is None, \
                "aieng_embed answered a model it does not serve"

    # -- embed ---------------------------------------------------------------------------

    async def test_embed_one_vector_per_text(
        self, component: object, conformance_pipeline: Pipeline, embed_texts: list[str]
    ) -> None:
        """One finite vector per text, all of one dimension, whatever the batch size."""
        self.skip_unless_implements(component, "aieng_embed")
        assert embed_texts, "embed_texts must hold at least one text"
        vectors = await self.embed(conformance_pipeline, embed_texts)
        self.check_vectors(vectors, embed_texts)
        single = await self.embed(conformance_pipeline, embed_texts[:1])
        self.check_vectors(single, embed_texts[:1])
        assert len(next(iter(single))) == len(next(iter(vectors))), \
            "the dimension depends on the batch"

    async def test_embed_vectors_follow_their_texts(
        self, component: object, conformance_pipeline: Pipeline, embed_texts: list[str]
    ) -> None:
        """The i-th vector is the i-th text's, whatever the batch: each text embedded alone,
        or in the batch reversed, gets the vector it got in the batch (a backend that sorts
        texts by length to batch them must put the vectors back in order)."""
        self.skip_unless_implements(component, "aieng_embed")
        batch = await self.embed(conformance_pipeline, embed_texts)
        self.check_vectors(batch, embed_texts)
        rows = [list(map(float, row)) for row in batch]
        reversed_texts = embed_texts[::-1]
        backwards = await self.embed(conformance_pipeline, reversed_texts)
        self.check_vectors(backwards, reversed_texts)
        again = [list(map(float, row)) for row in backwards][::-1]
        for index, text in enumerate(embed_texts):
            alone = await self.embed(conformance_pipeline, [text])
            self.check_vectors(alone, [text])
            for other, how in ((list(map(float, next(iter(alone)))), "alone"),
                               (again[index], "in the reversed batch")):
                assert _alike(rows[index], other), (
                    f"text {index} ({text!r:.40}) embedded {how} gets another vector than in "
                    f"the batch (cosine {_cosine(rows[index], other):.3f}): the vectors do not "
                    "follow the order of the texts")

    async def test_embed_empty_input(
        self, component: object, conformance_pipeline: Pipeline
    ) -> None:
        """No texts give no vectors (not None, not an error)."""
        self.skip_unless_implements(component, "aieng_embed")
        vectors = await self.embed(conformance_pipeline, [])
        self.check_vectors(vectors, [])

    # -- the loop ------------------------------------------------------------------------

    async def test_does_not_block_the_loop(
        self, component: object, conformance_pipeline: Pipeline, generate_request: Request,
        embed_texts: list[str], captured_events: EventCapture,
    ) -> None:
        """Generating, streaming and embedding never stall the event loop."""
        hooks = implemented_hooks(component)
        async with self.loop_watch(captured_events):
            if "aieng_generate" in hooks:
                await self.generate(conformance_pipeline, generate_request)
            if "aieng_stream" in hooks:
                await self.stream(conformance_pipeline, generate_request)
            if "aieng_embed" in hooks:
                await self.embed(conformance_pipeline, embed_texts)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """The cosine of two vectors (1.0 for two zero vectors, 0.0 for one)."""
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    if norms == 0.0:
        return 1.0 if not any(a) and not any(b) else 0.0
    return sum(x * y for x, y in zip(a, b)) / norms


def _alike(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two embeddings of one text agree, up to the noise of batching (padding,
    another kernel): a cosine of at least 0.99."""
    return len(a) == len(b) and _cosine(a, b) >= 0.99
