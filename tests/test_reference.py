"""The reference components do their role's job, beyond what the conformance suites check."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from aieng_core.testing.reference import (
    CopyQuantizer,
    EchoTool,
    ExactMatchJudge,
    FirstCandidateRouter,
    MemoryCache,
    RegexRedactGuard,
    ScoreReranker,
)
from aieng_hookspecs.types import Completion, Document, Hit, Message, Request, Sample, ToolCall


def _hit(doc_id: str, score: float, rank: int) -> Hit:
    return Hit(Document(doc_id, f"text {doc_id}"), score=score, rank=rank)


def test_score_reranker_sorts_by_score_and_cuts() -> None:
    """Hits come back best score first, renumbered, at most k, ties in input order."""
    hits = [_hit("a", 0.1, 1), _hit("b", 0.9, 2), _hit("c", 0.5, 3), _hit("d", 0.5, 4)]
    reranked = ScoreReranker().aieng_rerank(hits, 3)
    assert [(h.document.id, h.rank) for h in reranked] == [("b", 1), ("c", 2), ("d", 3)]


def test_exact_match_judge_normalizes() -> None:
    """Case, punctuation and articles do not matter; any reference may match; none: None."""
    judge = ExactMatchJudge()
    same = judge.aieng_judge(Sample("q", "The Eiffel tower!", reference="eiffel Tower"))
    assert same is not None and [(s.name, s.value) for s in same] == [("exact_match", 1.0)]
    score = judge.aieng_judge(Sample("q", "four", reference=("4", "Four.")))
    assert score is not None and score[0].value == 1.0
    miss = judge.aieng_judge(Sample("q", "Lyon", reference="Paris"))
    assert miss is not None and miss[0].value == 0.0
    assert judge.aieng_judge(Sample("q", "Paris")) is None


def test_echo_tool_echoes_and_reports_bad_arguments() -> None:
    """``echo`` returns its text; a wrong argument is an error result; other tools: None."""
    tool = EchoTool()
    ok = tool.aieng_call_tool(ToolCall("1", "echo", {"text": "hi"}))
    assert ok is not None and (ok.content, ok.call_id, ok.is_error) == ("hi", "1", False)
    bad = tool.aieng_call_tool(ToolCall("2", "echo", {"text": 3}))
    assert bad is not None and bad.is_error and bad.call_id == "2"
    assert tool.aieng_call_tool(ToolCall("3", "other")) is None


def test_regex_guard_redacts_and_blocks() -> None:
    """E-mail addresses become ``[EMAIL]`` with findings; the phrase blocks; clean text passes."""
    guard = RegexRedactGuard(blocked_phrase="Open Sesame")
    verdict = guard.check("write to a.b@example.com today")
    assert (verdict.action, verdict.text) == ("redact", "write to [EMAIL] today")
    assert [(f.kind, f.start, f.end) for f in verdict.findings] == [("email", 9, 24)]
    assert guard.check("please OPEN sesame now").action == "block"
    assert guard.check("hello").action == "allow"
    reply = guard.aieng_guard_output(Completion(text="mail x@y.io"))
    assert reply.text == "mail [EMAIL]"


def test_first_candidate_router() -> None:
    """The first candidate is the target, the rest fallbacks; no candidates, no route."""
    route = FirstCandidateRouter().aieng_route(["small", "large", "small"])
    assert route is not None and (route.target, route.fallbacks) == ("small", ("large",))
    assert FirstCandidateRouter().aieng_route([]) is None


def test_memory_cache_keys_on_parameters_and_evicts() -> None:
    """Different parameters miss; the least recently used entry goes first."""
    cache = MemoryCache(max_entries=2)
    ask = Request(messages=(Message("user", "hi"),))
    cache.aieng_cache_store(ask, Completion(text="hello"))
    assert cache.aieng_cache_lookup(Request(messages=ask.messages, temperature=0.7)) is None
    hit = cache.aieng_cache_lookup(ask)
    assert hit is not None and hit.cached and hit.text == "hello"
    for text in ("a", "b"):
        cache.aieng_cache_store(Request(messages=(Message("user", text),)), Completion(text=text))
    assert len(cache) == 2 and cache.aieng_cache_lookup(ask) is None


def test_copy_quantizer_copies_files_and_folders(tmp_path: Path) -> None:
    """Scheme ``copy`` copies a file or a folder and reports equal sizes; others: None."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"w" * 100)
    (model / "config.json").write_text("{}")
    quantizer = CopyQuantizer(output_dir=tmp_path / "out")
    result = anyio.run(quantizer.aieng_quantize, str(model), "copy")
    assert result is not None
    assert (result.size_before, result.size_after) == (102, 102)
    assert (Path(result.model) / "weights.bin").read_bytes() == b"w" * 100
    assert anyio.run(quantizer.aieng_quantize, str(model), "int8") is None
    with pytest.raises(FileNotFoundError):
        anyio.run(quantizer.aieng_quantize, str(tmp_path / "missing"), "copy")
