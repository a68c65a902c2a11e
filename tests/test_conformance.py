"""The conformance suites: built-in and reference components pass them, broken ones fail."""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    Completion,
    Delta,
    Document,
    Finding,
    GuardVerdict,
    Hit,
    Message,
    QuantizeResult,
    Query,
    Request,
    Route,
    Sample,
    Score,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)

from aieng_core.builtins import (
    ExtractiveBackend,
    ExtractiveOptions,
    MemoryOptions,
    MemoryRetriever,
    RRFFuser,
    RRFOptions,
)
from aieng_core.kernel import Kernel
from aieng_core.testing import EventCapture
from aieng_core.testing.conformance import (
    DEFAULT_CORPUS,
    BackendSuite,
    CacheSuite,
    FuserSuite,
    GuardrailSuite,
    JudgeSuite,
    QuantizerSuite,
    RerankerSuite,
    RetrieverSuite,
    RouterSuite,
    ScoreRanges,
    ToolSuite,
)
from aieng_core.testing.doubles import ScriptedBackend
from aieng_core.testing.reference import (
    AddTool,
    CopyQuantizer,
    EchoTool,
    ExactMatchJudge,
    FirstCandidateRouter,
    MemoryCache,
    RegexRedactGuard,
    ScoreReranker,
)

# ---------------------------------------------------------------------------- passing


class DeterministicScripted(ScriptedBackend):
    """The scripted double with one reply: the same answer every time."""

    deterministic = True


class HashEmbedder:
    """An embedding-only backend: hashed bag of words, 16 dimensions, model ``hash-16``."""

    model = "hash-16"

    @hookimpl
    def aieng_embed(self, texts: Sequence[str], model: str | None) -> list[list[float]] | None:
        if model not in (None, self.model):
            return None
        vectors = []
        for text in texts:
            vector = [0.0] * 16
            for word in text.split():
                vector[hashlib.blake2b(word.encode()).digest()[0] % 16] += 1.0
            vectors.append(vector)
        return vectors


class TestExtractiveBackend(BackendSuite):
    """The built-in extractive backend passes the backend suite."""

    @pytest.fixture
    def component(self) -> ExtractiveBackend:
        return ExtractiveBackend(ExtractiveOptions())


class TestScriptedBackend(BackendSuite):
    """The scripted backend double passes the backend suite."""

    @pytest.fixture
    def component(self) -> ScriptedBackend:
        return DeterministicScripted(["Mixing blue and yellow gives green."], model="scripted")


class TestEmbeddingOnlyBackend(BackendSuite):
    """An embedding-only backend passes (its generation tests skip)."""

    @pytest.fixture
    def component(self) -> HashEmbedder:
        return HashEmbedder()


class TestMemoryRetriever(RetrieverSuite):
    """The built-in BM25 retriever passes the retriever suite."""

    @pytest.fixture
    def component(self) -> MemoryRetriever:
        return MemoryRetriever(MemoryOptions())


class TestRRFFuser(FuserSuite):
    """The built-in RRF fuser passes the fuser suite."""

    @pytest.fixture
    def component(self) -> RRFFuser:
        return RRFFuser(RRFOptions())


class TestScoreReranker(RerankerSuite):
    """The reference reranker passes the reranker suite, its opt-in checks included."""

    pointwise_tolerance = 0.0
    stable_ties = True
    steady_calls = 500

    @pytest.fixture
    def component(self) -> ScoreReranker:
        return ScoreReranker()


class TestExactMatchJudge(JudgeSuite):
    """The reference judge passes the judge suite."""

    score_ranges: ClassVar[ScoreRanges] = {"exact_match": (0.0, 1.0)}

    @pytest.fixture
    def component(self) -> ExactMatchJudge:
        return ExactMatchJudge()


class TestEchoTool(ToolSuite):
    """The reference tool passes the tool suite, its steady-state check included (calls
    of its example, from the ``tool_examples`` fixture)."""

    steady_calls = 500

    @pytest.fixture
    def component(self) -> EchoTool:
        return EchoTool()

    @pytest.fixture
    def tool_examples(self) -> dict[str, dict[str, object]]:
        return {"echo": {"text": "hello"}}


class TestAddTool(ToolSuite):
    """The reference ``add`` tool passes the tool suite."""

    @pytest.fixture
    def component(self) -> AddTool:
        return AddTool()

    @pytest.fixture
    def tool_examples(self) -> dict[str, dict[str, object]]:
        return {"add": {"a": 40, "b": 2}}


class TestRegexRedactGuard(GuardrailSuite):
    """The reference guardrail passes the guardrail suite."""

    @pytest.fixture
    def component(self) -> RegexRedactGuard:
        return RegexRedactGuard()


class TestFirstCandidateRouter(RouterSuite):
    """The reference router passes the router suite."""

    @pytest.fixture
    def component(self) -> FirstCandidateRouter:
        return FirstCandidateRouter()


class TestMemoryCache(CacheSuite):
    """The reference cache passes the cache suite."""

    @pytest.fixture
    def component(self) -> MemoryCache:
        return MemoryCache()


class TestCopyQuantizer(QuantizerSuite):
    """The reference quantizer passes the quantizer suite, quantizing for real."""

    @pytest.fixture
    def component(self, tmp_path: Path) -> CopyQuantizer:
        return CopyQuantizer(output_dir=tmp_path / "out")

    @pytest.fixture
    def model_path(self, tmp_path: Path) -> str:
        path = tmp_path / "model.safetensors"
        path.write_bytes(b"\x00\x01" * 5_000)
        return str(path)

    @pytest.fixture
    def scheme(self) -> str:
        return "copy"


# ---------------------------------------------------------------------------- failing
# Each suite's key check, run against a deliberately broken component, must fail.

pytestmark = pytest.mark.anyio


class IgnoresMaxTokens:
    """Broken backend: five tokens whatever ``max_tokens`` says."""

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        return Completion(text="one two three four five", usage=Usage(1, 5))


async def test_backend_suite_catches_ignored_max_tokens(aieng_kernel: Kernel) -> None:
    """The backend suite fails a backend that generates past ``max_tokens``."""
    suite, backend = BackendSuite(), IgnoresMaxTokens()
    pipeline = suite.compose(aieng_kernel, backend)
    request = Request(messages=(Message("user", "Count."),))
    with pytest.raises(AssertionError, match="completion tokens for max_tokens=1"):
        await suite.test_generate_respects_max_tokens(backend, pipeline, request)


class OneTooMany:
    """Broken retriever: returns ``k + 1`` hits."""

    @hookimpl
    def aieng_retrieve(self, k: int) -> list[Hit]:
        return [Hit(doc, score=1.0, rank=i + 1) for i, doc in enumerate(DEFAULT_CORPUS[:k + 1])]


class RetitlesHits:
    """Broken retriever: returns the indexed documents under another title."""

    @hookimpl
    def aieng_retrieve(self, k: int) -> list[Hit]:
        return [Hit(attrs.evolve(doc, title="Renamed"), score=1.0, rank=i + 1)
                for i, doc in enumerate(DEFAULT_CORPUS[:k])]


@pytest.mark.parametrize(("broken", "message"), [
    (OneTooMany, "4 hits for k=3"),
    (RetitlesHits, "another title or metadata"),
])
async def test_retriever_suite_catches_broken_retrievers(aieng_kernel: Kernel, broken: type,
                                                         message: str) -> None:
    """The retriever suite fails a retriever that returns more than k hits (which the
    kernel's retrieve stage would silently cut), and one whose hits carry another title
    than indexed."""
    suite = RetrieverSuite()
    pipeline = suite.compose(aieng_kernel, broken(), stages=["retrieve"])
    hits = await suite.retrieve(pipeline, Query("fusion"), 3)
    with pytest.raises(AssertionError, match=message):
        suite.check_hits(hits, 3, {d.id: d for d in DEFAULT_CORPUS})


class FirstRunFirst:
    """Broken fuser: concatenates the runs in the order given."""

    @hookimpl
    def aieng_fuse(self, runs: Sequence[Sequence[Hit]]) -> list[Hit]:
        fused: list[Hit] = []
        for run in runs:
            for hit in run:
                if hit.document.id not in {h.document.id for h in fused}:
                    fused.append(Hit(hit.document, score=0.0, rank=len(fused) + 1))
        return fused


async def test_fuser_suite_catches_order_dependence(aieng_kernel: Kernel) -> None:
    """The fuser suite fails a fuser whose result depends on the order of the runs."""
    suite = FuserSuite()
    pipeline = suite.compose(aieng_kernel, FirstRunFirst())
    a, b = Document("a", "alpha"), Document("b", "beta")
    runs = [[Hit(a, 1.0, 1)], [Hit(b, 1.0, 1)]]
    with pytest.raises(AssertionError, match="depends on the order of the runs"):
        await suite.check_order_invariant(pipeline, Query("q"), runs, [1, 0])


class KeepsEverything:
    """Broken reranker: reverses the hits and ignores ``k``."""

    @hookimpl
    def aieng_rerank(self, hits: Sequence[Hit]) -> list[Hit]:
        return [Hit(h.document, score=float(i), rank=i + 1)
                for i, h in enumerate(reversed(hits))]


async def test_reranker_suite_catches_ignored_k(aieng_kernel: Kernel) -> None:
    """The reranker suite fails a reranker returning more than k hits."""
    suite = RerankerSuite()
    pipeline = suite.compose(aieng_kernel, KeepsEverything())
    hits = [Hit(d, score=1.0, rank=i + 1) for i, d in enumerate(DEFAULT_CORPUS)]
    reranked = await suite.rerank(pipeline, Query("q"), hits, 2)
    with pytest.raises(AssertionError, match="hits for k=2"):
        suite.check_reranked(reranked, hits, 2)


class ScoresNothing:
    """Broken judge: an empty list instead of ``None`` or scores."""

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score]:
        return []


async def test_judge_suite_catches_an_empty_score_list(aieng_kernel: Kernel) -> None:
    """The judge suite fails a judge answering with no score instead of None."""
    suite = JudgeSuite()
    pipeline = suite.compose(aieng_kernel, ScoresNothing())
    scores = await suite.judge(pipeline, Sample(input="q", output="a", reference="a"))
    with pytest.raises(AssertionError, match="return None when not applicable"):
        suite.check_scores(scores)


class WrongCallId:
    """Broken tool: answers every call of ``echo`` under another call id."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec("echo")]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        return ToolResult(call_id="call-0", content="?") if call.name == "echo" else None


async def test_tool_suite_catches_a_wrong_call_id(aieng_kernel: Kernel) -> None:
    """The tool suite fails a tool whose result does not answer the call's id."""
    suite = ToolSuite()
    pipeline = suite.compose(aieng_kernel, WrongCallId())
    call = ToolCall(id="call-7", name="echo", arguments={"text": "x"})
    with pytest.raises(AssertionError, match="answers call 'call-0', not 'call-7'"):
        suite.check_result(await suite.call(pipeline, call), call)


class StampsForever:
    """Broken guard: redacts by appending a marker, again and again."""

    @hookimpl
    def aieng_guard_input(self, request: Request) -> GuardVerdict:
        return GuardVerdict(action="redact", text=request.prompt + " [checked]")


async def test_guardrail_suite_catches_non_idempotent_redaction(aieng_kernel: Kernel) -> None:
    """The guardrail suite fails a guard whose redaction changes its own output."""
    suite = GuardrailSuite()
    pipeline = suite.compose(aieng_kernel, StampsForever())
    first = await suite.guard_input(pipeline, "hello")
    second = await suite.guard_input(pipeline, suite.check_verdict(first, "hello"))
    with pytest.raises(AssertionError, match="guarding twice changes the text"):
        suite.check_idempotent(first, second, "hello")


class AlwaysBig:
    """Broken router: routes to a model that is no candidate."""

    @hookimpl
    def aieng_route(self) -> Route:
        return Route(target="gpt-big")


async def test_router_suite_catches_a_stray_target(aieng_kernel: Kernel) -> None:
    """The router suite fails a router choosing outside the candidates."""
    suite = RouterSuite()
    pipeline = suite.compose(aieng_kernel, AlwaysBig())
    request = Request(messages=(Message("user", "hi"),))
    route = await suite.route(pipeline, request, ["small", "large"])
    with pytest.raises(AssertionError, match="is not a candidate"):
        suite.check_route(route, ["small", "large"])


class ForgetfulFlag(MemoryCache):
    """Broken cache: hits are not marked ``cached``."""

    @hookimpl
    def aieng_cache_lookup(self, request: Request) -> Completion | None:
        found = super().aieng_cache_lookup(request)
        return None if found is None else Completion(text=found.text)


async def test_cache_suite_catches_an_unmarked_hit(aieng_kernel: Kernel) -> None:
    """The cache suite fails a cache whose hits do not carry ``cached=True`` (which the
    kernel's cache stage would silently set)."""
    suite = CacheSuite()
    pipeline = suite.compose(aieng_kernel, ForgetfulFlag())
    request, stored = Request(messages=(Message("user", "hi"),)), Completion(text="hello")
    await suite.store(pipeline, request, stored)
    with pytest.raises(AssertionError, match="cached=True"):
        suite.check_hit(await suite.lookup(pipeline, request), stored)


class TakesAnyScheme:
    """Broken quantizer: claims every scheme."""

    @hookimpl
    def aieng_quantize(self, model: str, scheme: str) -> QuantizeResult:
        return QuantizeResult(model=model, scheme=scheme, size_before=10, size_after=10)


async def test_quantizer_suite_catches_a_claimed_scheme(aieng_kernel: Kernel,
                                                        tmp_path: Path) -> None:
    """The quantizer suite fails a quantizer answering a scheme it cannot support."""
    suite, quantizer = QuantizerSuite(), TakesAnyScheme()
    pipeline = suite.compose(aieng_kernel, quantizer)
    with pytest.raises(AssertionError, match="an unsupported scheme got"):
        await suite.test_unsupported_scheme_is_not_mine(pipeline, str(tmp_path / "m.bin"))



class StreamPastMaxTokens:
    """Broken backend: streams five pieces and reports five tokens whatever ``max_tokens``."""

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
        async def pieces() -> AsyncIterator[Delta]:
            for index in range(5):
                yield Delta(text=f" w{index}", index=index)
            yield Delta(text="", index=5, finish_reason="stop", usage=Usage(1, 5))
        return pieces()


async def test_backend_suite_catches_a_stream_past_max_tokens(aieng_kernel: Kernel) -> None:
    """The backend suite fails a backend whose stream ignores ``max_tokens``."""
    suite, backend = BackendSuite(), StreamPastMaxTokens()
    pipeline = suite.compose(aieng_kernel, backend)
    request = Request(messages=(Message("user", "Count."),))
    with pytest.raises(AssertionError, match="5 streamed completion tokens for max_tokens=1"):
        await suite.test_stream_respects_max_tokens(backend, pipeline, request)


class StreamMiscounts(DeterministicScripted):
    """Broken backend: deterministic, but its stream reports another usage than generate."""

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
        async def pieces() -> AsyncIterator[Delta]:
            yield Delta(text="green", index=0)
            yield Delta(text="", index=1, finish_reason="stop", usage=Usage(0, 1))
        return pieces()


async def test_backend_suite_catches_a_stream_usage_unlike_generate(aieng_kernel: Kernel) -> None:
    """The backend suite fails a deterministic backend whose stream's usage differs from its
    generation's, the texts being equal."""
    suite, backend = BackendSuite(), StreamMiscounts(["green"])
    pipeline = suite.compose(aieng_kernel, backend)
    request = Request(messages=(Message("user", "Which colour?"),))
    with pytest.raises(AssertionError, match="the stream reports"):
        await suite.test_stream_matches_generate_when_deterministic(backend, pipeline, request)


class RewritesDocuments:
    """Broken fuser: keeps the runs' ids (sorted, so order-independent) but not their text."""

    @hookimpl
    def aieng_fuse(self, runs: Sequence[Sequence[Hit]]) -> list[Hit]:
        ids = sorted({hit.document.id for run in runs for hit in run})
        return [Hit(Document(i, "rewritten"), score=1.0, rank=n + 1) for n, i in enumerate(ids)]


async def test_fuser_suite_catches_a_rewritten_document(aieng_kernel: Kernel) -> None:
    """The fuser suite fails a fuser whose hits carry another text than the runs' documents."""
    suite = FuserSuite()
    pipeline = suite.compose(aieng_kernel, RewritesDocuments())
    runs = [[Hit(Document("a", "alpha"), 1.0, 1)], [Hit(Document("b", "beta"), 1.0, 1)]]
    fused = await suite.fuse(pipeline, Query("q"), runs)
    with pytest.raises(AssertionError, match="differs from the runs' document"):
        suite.check_fused(fused, runs)


class FindsPastTheEnd(RegexRedactGuard):
    """Broken guard: redacts like the reference, but its finding lies past the text's end."""

    def check(self, text: str) -> GuardVerdict:
        verdict = super().check(text)
        return attrs.evolve(verdict, findings=(Finding("email", len(text) + 1, len(text) + 5),))


async def test_guardrail_suite_catches_a_finding_past_the_text(aieng_kernel: Kernel) -> None:
    """The guardrail suite fails a guard whose finding's offsets do not point into the text."""
    suite = GuardrailSuite()
    pipeline = suite.compose(aieng_kernel, FindsPastTheEnd())
    text = "Mail jane@example.com"
    verdict = await suite.guard_input(pipeline, text)
    with pytest.raises(AssertionError, match="past the end of the guarded text"):
        suite.check_verdict(verdict, text)


class PromptKeyed(MemoryCache):
    """Broken cache: keyed on the last user message only, so another model's answer hits."""

    @staticmethod
    def key(request: Request) -> str:
        return request.prompt


async def test_cache_suite_catches_another_requests_answer(aieng_kernel: Kernel) -> None:
    """The cache suite fails a cache answering a request with the answer stored for a
    request of another model or system message."""
    suite = CacheSuite()
    pipeline = suite.compose(aieng_kernel, PromptKeyed())
    with pytest.raises(AssertionError, match="not its own answer"):
        await suite.test_another_requests_answer_never_hits(pipeline)


class ParametersBlind(MemoryCache):
    """Broken cache: keyed on the model, the messages and ``max_tokens`` only, so a request
    for JSON (or with other stop strings, seed or temperature) gets a free-text answer."""

    @staticmethod
    def key(request: Request) -> Any:
        return (request.model, request.messages, request.max_tokens)


async def test_cache_suite_catches_a_cache_blind_to_sampling_and_schema(
        aieng_kernel: Kernel) -> None:
    """The cache suite fails a cache that ignores the temperature, seed, stop strings,
    response schema and tools: it passed, though its docstring says a request differing in
    its sampling parameters never gets another's answer."""
    suite = CacheSuite()
    pipeline = suite.compose(aieng_kernel, ParametersBlind())
    with pytest.raises(AssertionError, match="not its own answer"):
        await suite.test_another_requests_answer_never_hits(pipeline)


class DropsToolCalls(MemoryCache):
    """Broken cache: hits lose the stored completion's tool calls."""

    @hookimpl
    def aieng_cache_lookup(self, request: Request) -> Completion | None:
        found = super().aieng_cache_lookup(request)
        return None if found is None else attrs.evolve(found, tool_calls=())


async def test_cache_suite_catches_lost_tool_calls(aieng_kernel: Kernel) -> None:
    """The cache suite fails a cache whose hit drops the stored completion's tool calls."""
    suite = CacheSuite()
    pipeline = suite.compose(aieng_kernel, DropsToolCalls())
    request = Request(messages=(Message("user", "Weather?"),))
    stored = Completion(text="", finish_reason="tool_calls",
                        tool_calls=(ToolCall(id="c1", name="weather"),))
    await suite.store(pipeline, request, stored)
    with pytest.raises(AssertionError, match="tool calls differ"):
        suite.check_hit(await suite.lookup(pipeline, request), stored)


class HistoryBlind(MemoryCache):
    """Broken cache: keyed on the system messages, the last user message and every
    parameter, so "Yes." after another conversation gets the stored answer."""

    @staticmethod
    def key(request: Request) -> Any:
        system = tuple(m for m in request.messages if m.role == "system")
        return (system, request.prompt, request.model, request.temperature, request.top_p,
                request.top_k, request.max_tokens, request.stop, request.seed,
                repr(request.response_schema), request.tools)


class NucleusBlind(MemoryCache):
    """Broken cache: keyed on everything but ``top_p`` and ``top_k``."""

    @staticmethod
    def key(request: Request) -> Any:
        return (request.messages, request.model, request.temperature, request.max_tokens,
                request.stop, request.seed, repr(request.response_schema), request.tools)


@pytest.mark.parametrize("broken", [HistoryBlind, NucleusBlind])
async def test_cache_suite_catches_a_cache_blind_to_history_or_nucleus(
        aieng_kernel: Kernel, broken: type[MemoryCache]) -> None:
    """The cache suite fails a cache that ignores the earlier turns of the conversation,
    or the ``top_p`` / ``top_k`` of a seeded sample: its docstring says a request differing
    in its messages or sampling parameters never gets another's answer."""
    suite = CacheSuite()
    pipeline = suite.compose(aieng_kernel, broken())
    with pytest.raises(AssertionError, match="not its own answer"):
        await suite.test_another_requests_answer_never_hits(pipeline)


class OneScorePerReference:
    """Broken judge: one ``exact_match`` score per reference, so the name repeats."""

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score] | None:
        refs = (sample.reference,) if isinstance(sample.reference, str) else sample.reference
        return [Score("exact_match", float(ref == sample.output)) for ref in refs or ()] or None


async def test_judge_suite_catches_repeated_score_names(aieng_kernel: Kernel) -> None:
    """The judge suite fails a judge giving two values of one metric for a sample (the eval
    runner keeps one value per metric name and judge)."""
    suite = JudgeSuite()
    pipeline = suite.compose(aieng_kernel, OneScorePerReference())
    scores = await suite.judge(pipeline, Sample(input="2 + 2?", output="four",
                                                reference=("4", "four")))
    with pytest.raises(AssertionError, match="score names repeat"):
        suite.check_scores(scores)


class ReadsTheWrongField:
    """Broken judge: looks for its reference in the metadata, so it never applies."""

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score] | None:
        reference = sample.metadata.get("reference")
        return None if reference is None else [Score("match", float(reference == sample.output))]


async def test_judge_suite_catches_a_judge_that_never_applies(aieng_kernel: Kernel) -> None:
    """The judge suite fails a judge that answers None for every one of its samples (every
    other check of the suite would pass it, having nothing to check)."""
    suite = JudgeSuite()
    pipeline = suite.compose(aieng_kernel, ReadsTheWrongField())
    samples = [Sample(input="Capital of France?", output="Paris", reference="Paris")]
    with pytest.raises(AssertionError, match="returned None for each of the 1 judge_samples"):
        await suite.test_scores_some_sample(pipeline, samples)


class StringSchema(EchoTool):
    """Broken tool: its parameters are a bare property map, not an object JSON schema."""

    spec = ToolSpec(name="echo", parameters={"text": {"type": "string"}})


class RenamedArgument(EchoTool):
    """Broken tool: its schema asks the model for ``text``; it reads ``message``, and so
    does the example its author wrote."""

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        if call.name != "echo":
            return None
        message = call.arguments.get("message")
        if not isinstance(message, str):
            return ToolResult(call_id=call.id, is_error=True, content="echo needs 'message'")
        return ToolResult(call_id=call.id, content=message)


async def test_tool_suite_catches_a_schema_that_is_no_object(aieng_kernel: Kernel) -> None:
    """The tool suite fails a tool whose parameters are not an ``object`` JSON schema (what
    a model is told the arguments with)."""
    suite = ToolSuite()
    pipeline = suite.compose(aieng_kernel, StringSchema())
    with pytest.raises(AssertionError, match="parameters must be an object JSON schema"):
        suite.check_specs(await suite.tools(pipeline))


async def test_tool_suite_catches_an_example_unlike_the_schema(aieng_kernel: Kernel) -> None:
    """The tool suite fails a tool whose example lacks an argument its schema requires: the
    model, told the schema, would call it with arguments it does not read."""
    suite = ToolSuite()
    pipeline = suite.compose(aieng_kernel, RenamedArgument())
    with pytest.raises(AssertionError, match=r"lacks the arguments its schema requires: \['text'\]"):
        await suite.test_examples_run(pipeline, {"echo": {"message": "hello"}})


class PopsArguments(EchoTool):
    """Broken tool: takes its argument out of the call (the model's, in the transcript)."""

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        if call.name != "echo":
            return None
        text = call.arguments.pop("text", None)
        return ToolResult(call_id=call.id, content=str(text), is_error=text is None)


class CountsInSample(ExactMatchJudge):
    """Broken judge: counts its calls in the sample's metadata."""

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score] | None:
        sample.metadata["judged"] = sample.metadata.get("judged", 0) + 1
        return super().aieng_judge(sample)


class TagsRequestRouter:
    """Broken router: routes as the reference router, noting its choice in the request's
    metadata."""

    @hookimpl
    def aieng_route(self, request: Request, candidates: Sequence[str]) -> Route | None:
        route = FirstCandidateRouter().aieng_route(candidates)
        request.metadata["route"] = None if route is None else route.target
        return route


class StampsDocuments(ScoreReranker):
    """Broken reranker: writes its verdict into the given hits' documents."""

    @hookimpl
    def aieng_rerank(self, hits: Sequence[Hit], k: int) -> list[Hit]:
        for hit in hits:
            hit.document.metadata["reranked"] = True
        return super().aieng_rerank(hits, k)


class CountsEveryIdAsked(MemoryRetriever):
    """Broken retriever: deletes what it holds but counts every id it was asked for."""

    @hookimpl
    def aieng_delete(self, ids: Sequence[str]) -> int:
        super().aieng_delete(ids)
        return len(ids)


async def test_retriever_suite_catches_a_delete_that_miscounts(aieng_kernel: Kernel) -> None:
    """The retriever suite fails an index whose delete counts ids it never held (the
    kernel's search for a re-indexed document's stale chunks relies on the count)."""
    suite = RetrieverSuite()
    component = CountsEveryIdAsked(MemoryOptions())
    pipeline = suite.compose(aieng_kernel, component, stages=["retrieve"])
    corpus = list(DEFAULT_CORPUS)
    await pipeline.index(corpus)
    with pytest.raises(AssertionError, match="did not count 2"):
        await suite.test_delete_removes_and_counts_what_it_held(component, pipeline, corpus, 3)


class SortsRunsInPlace(RRFFuser):
    """Broken fuser: fuses like RRF, but sorts the runs it was given in place first."""

    @hookimpl
    def aieng_fuse(self, query: Query, runs: Sequence[Sequence[Hit]]) -> list[Hit]:
        for run in runs:
            run.sort(key=lambda hit: hit.document.id, reverse=True)  # type: ignore[attr-defined]
        return super().aieng_fuse(query, runs)


class TagsRequestGuard(RegexRedactGuard):
    """Broken guard: marks the request it checked, in its metadata."""

    @hookimpl
    def aieng_guard_input(self, request: Request) -> GuardVerdict:
        request.metadata["guarded"] = True
        return self.check(request.prompt)


_REQUEST = Request(messages=(Message("user", "hi"),))
# Copies: the broken components write into what they are given, and the kit's corpus is
# shared by every suite of the session.
_HITS = [Hit(d, score=1.0, rank=i + 1) for i, d in enumerate(copy.deepcopy(DEFAULT_CORPUS))]


@pytest.mark.parametrize(("suite", "component", "call"), [
    (JudgeSuite(), CountsInSample(),
     lambda s, p: s.judge(p, Sample(input="q", output="a", reference="a"))),
    (ToolSuite(), PopsArguments(),
     lambda s, p: s.call(p, ToolCall(id="c1", name="echo", arguments={"text": "x"}))),
    (RouterSuite(), TagsRequestRouter(), lambda s, p: s.route(p, _REQUEST, ["a", "b"])),
    (RerankerSuite(), StampsDocuments(), lambda s, p: s.rerank(p, Query("q"), _HITS, 2)),
    (GuardrailSuite(), TagsRequestGuard(), lambda s, p: s.guard_input(p, "hello")),
    (FuserSuite(), SortsRunsInPlace(RRFOptions()),
     lambda s, p: s.fuse(p, Query("q"), [_HITS, _HITS[::-1]])),
], ids=["judge", "tool", "router", "reranker", "guardrail", "fuser"])
async def test_suites_catch_an_argument_changed_in_place(
    aieng_kernel: Kernel, suite: Any, component: object,
    call: Callable[[Any, Any], Awaitable[object]],
) -> None:
    """Each suite fails a component that writes into what it was given (a metadata dict, a
    tool call's arguments): those are the caller's, shared with the rest of the run."""
    pipeline = suite.compose(aieng_kernel, component)
    with pytest.raises(AssertionError, match="changed its argument in place"):
        await call(suite, pipeline)


class UnmeasuredQuantizer(CopyQuantizer):
    """Broken quantizer: copies the weights but reports sizes it never measured."""

    def _copy(self, model: str) -> QuantizeResult:
        return attrs.evolve(super()._copy(model), size_before=0, size_after=0)


class QuantizesNowhere:
    """Broken quantizer: reports a quantized model it never wrote."""

    @hookimpl
    def aieng_quantize(self, model: str, scheme: str) -> QuantizeResult | None:
        if scheme != "copy":
            return None
        size = Path(model).stat().st_size
        return QuantizeResult(model=f"{model}.int8", scheme=scheme, size_before=size,
                              size_after=size // 2)


class QuantizesInPlace:
    """Broken quantizer: halves the weights file it was given and says the result is there."""

    @hookimpl
    def aieng_quantize(self, model: str, scheme: str) -> QuantizeResult | None:
        if scheme != "copy":
            return None
        path = Path(model)
        size = path.stat().st_size
        path.write_bytes(path.read_bytes()[: size // 2])
        return QuantizeResult(model=model, scheme=scheme, size_before=size,
                              size_after=size // 2)


@pytest.mark.parametrize(("broken", "message"), [
    (UnmeasuredQuantizer, "weights of 0 bytes before and 0 after"),
    (QuantizesNowhere, "where nothing is"),
    (QuantizesInPlace, "changed or removed the given model's files"),
], ids=["unmeasured", "nowhere", "in-place"])
async def test_quantizer_suite_catches_a_false_result(aieng_kernel: Kernel, tmp_path: Path,
                                                      broken: type, message: str) -> None:
    """The quantizer suite fails a quantizer reporting sizes of 0 bytes, one whose result
    names a model that is not there, and one that overwrites the model it was given."""
    suite = QuantizerSuite()
    component = broken(output_dir=tmp_path / "out") if broken is UnmeasuredQuantizer \
        else broken()
    pipeline = suite.compose(aieng_kernel, component)
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"\x00\x01" * 5_000)
    with pytest.raises(AssertionError, match=message):
        await suite.test_quantizes_with_its_scheme(pipeline, str(model), "copy")


class RedactsNothing(RegexRedactGuard):
    """Broken guard: says ``redact`` when it finds nothing, the text unchanged."""

    def check(self, text: str) -> GuardVerdict:
        verdict = super().check(text)
        return GuardVerdict(action="redact", text=text) if verdict.action == "allow" \
            else verdict


async def test_guardrail_suite_catches_a_redaction_that_changes_nothing(
    aieng_kernel: Kernel,
) -> None:
    """The guardrail suite fails a ``redact`` verdict that leaves the text as it was (the
    action means "text changed"; the run would report a redaction that never happened)."""
    suite = GuardrailSuite()
    pipeline = suite.compose(aieng_kernel, RedactsNothing())
    verdict = await suite.guard_input(pipeline, "Hello, how are you?")
    with pytest.raises(AssertionError, match="a redact verdict left the text as it was"):
        suite.check_verdict(verdict, "Hello, how are you?")


# -- what every suite checks


class Misspelled:
    """Broken component: a hook name with a typo."""

    @hookimpl
    def aieng_retreive(self, k: int) -> list[Hit]:
        return []


def test_every_suite_catches_a_misspelled_hook() -> None:
    """``test_hookimpls_validate`` fails a component whose hook name is misspelled."""
    with pytest.raises(AssertionError, match="invalid hook impl"):
        RetrieverSuite().test_hookimpls_validate(Misspelled())


def test_every_suite_catches_a_component_of_another_role() -> None:
    """``test_hookimpls_validate`` fails a component missing its role's hooks."""
    with pytest.raises(AssertionError, match="does not implement aieng_retrieve"):
        RetrieverSuite().test_hookimpls_validate(ScoreReranker())


class HalfMarkedGuard(RegexRedactGuard):
    """Broken guard: overrides its output hook without ``@hookimpl``; pluggy ignores the
    override, so the guard has no output hook at all."""

    def aieng_guard_output(self, completion: Completion) -> GuardVerdict:
        return GuardVerdict(action="block", text="")


class UnmarkedGuard:
    """Broken guard: its output hook has no ``@hookimpl``, so it is never called."""

    @hookimpl
    def aieng_guard_input(self, request: Request) -> None:
        return None

    def aieng_guard_output(self, completion: Completion) -> GuardVerdict:
        return GuardVerdict(action="block", text="")


@pytest.mark.parametrize("broken", [HalfMarkedGuard, UnmarkedGuard])
def test_every_suite_catches_a_hook_without_hookimpl(broken: type) -> None:
    """``test_hookimpls_validate`` fails a component with a role hook pluggy ignores for
    want of ``@hookimpl``: the suite would skip (or pass) the tests of that hook."""
    with pytest.raises(AssertionError, match="aieng_guard_output .*without @hookimpl"):
        GuardrailSuite().test_hookimpls_validate(broken())


class ClosesBadly(ScoreReranker):
    """Broken reranker: its ``aieng_pipeline_close`` raises (a pipeline logs it and goes
    on, so no run ever shows it)."""

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        raise RuntimeError("the index file is gone")


async def test_every_suite_catches_a_failing_close(aieng_kernel: Kernel,
                                                   captured_events: EventCapture) -> None:
    """``test_opens_and_closes`` fails a component whose close raises."""
    component = ClosesBadly()
    pipeline = RerankerSuite().compose(aieng_kernel, component)
    with pytest.raises(AssertionError, match="aieng_pipeline_close.*the index file is gone"):
        await RerankerSuite().test_opens_and_closes(pipeline, captured_events)


class SleepsOnTheLoop:
    """Broken reranker: blocks the event loop with a synchronous sleep."""

    @hookimpl
    def aieng_rerank(self, hits: Sequence[Hit]) -> list[Hit]:
        time.sleep(0.25)
        return list(hits)


async def test_every_suite_catches_a_blocked_loop(aieng_kernel: Kernel,
                                                  captured_events: EventCapture) -> None:
    """``test_does_not_block_the_loop`` fails a component that sleeps on the event loop."""
    suite = RerankerSuite()
    pipeline = suite.compose(aieng_kernel, SleepsOnTheLoop())
    with pytest.raises(AssertionError, match="blocked the event loop"):
        async with suite.loop_watch(captured_events):
            await suite.rerank(pipeline, Query("q"), [], 3)


def test_the_mutants_hits_are_copies_of_the_kits_corpus() -> None:
    """The in-place mutants above write into the hits they get (``_HITS``): those hold
    copies, not ``DEFAULT_CORPUS``'s own documents, which every RetrieverSuite of the
    session indexes (a mutant's ``metadata["reranked"]`` reached them all)."""
    assert [h.document.id for h in _HITS] == [d.id for d in DEFAULT_CORPUS]
    assert all(h.document.metadata is not d.metadata for h, d in zip(_HITS, DEFAULT_CORPUS))
