"""The conformance suites: built-in and reference components pass them, broken ones fail."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import attrs
import pytest

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
    ToolSuite,
)
from aieng_core.testing.doubles import ScriptedBackend
from aieng_core.testing.reference import (
    CopyQuantizer,
    EchoTool,
    ExactMatchJudge,
    FirstCandidateRouter,
    MemoryCache,
    RegexRedactGuard,
    ScoreReranker,
)
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
    """The reference reranker passes the reranker suite."""

    @pytest.fixture
    def component(self) -> ScoreReranker:
        return ScoreReranker()


class TestExactMatchJudge(JudgeSuite):
    """The reference judge passes the judge suite."""

    @pytest.fixture
    def component(self) -> ExactMatchJudge:
        return ExactMatchJudge()


class TestEchoTool(ToolSuite):
    """The reference tool passes the tool suite."""

    @pytest.fixture
    def component(self) -> EchoTool:
        return EchoTool()

    @pytest.fixture
    def tool_examples(self) -> dict[str, dict[str, object]]:
        return {"echo": {"text": "hello"}}


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
