"""The numbers a key's owner reads: each answer's ``usage`` against an independent count,
the key's token bucket charged exactly what the answers reported, ``Retry-After`` in whole
seconds rounded up, and a bucket in debt holding back only the requests that spend tokens.

The gateway's buckets run on a :class:`ManualClock` (nothing refills unless a test moves
it), over the kit's ``ScriptedBackend`` (words stand in for tokens)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from aieng_gateway import Gateway, GatewaySettings, KeyStore, Limits
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Delta, Request, ToolCall, Usage
from aieng_monitoring import FeedbackOptions, FeedbackStore

from aieng_core.testing import HashEmbedder, ManualClock, ScriptedBackend, isolated_kernel
from aieng_core.testing.loopback import LoopbackServer

ANSWERS = ["one two three", "alpha beta gamma delta epsilon", "x", "many words in this answer"]


def served(tmp: Path, llm: ScriptedBackend, *, rpm: int | None = None,
           tpm: int | None = None, components: dict[str, Any] | None = None,
           ) -> tuple[Gateway, str, ManualClock]:
    """A gateway over ``llm`` and a feedback sink (or over ``components`` beside ``llm``),
    one key, its buckets on a manual clock."""
    if components is None:
        sink = FeedbackStore(FeedbackOptions(path=str(tmp / "feedback.sqlite3")))
        components = {"embed": HashEmbedder(8), "feedback": sink}
    parts = {**components, "llm": llm}

    def build(kernel: Any) -> Any:
        return kernel.compose(parts, name="numbers", timeout=5.0)

    gateway = Gateway(build, keys=KeyStore(tmp / "keys.sqlite3"), settings=GatewaySettings(),
                      kernel=lambda: isolated_kernel(loop_block_threshold=None))
    clock = ManualClock(0.0)
    gateway.limits = Limits(clock=clock)
    assert gateway.keys is not None
    key, _ = gateway.keys.create("numbers", rpm=rpm, tpm=tpm)
    gateway.keys.refresh(force=True)
    return gateway, key, clock


def client(server: LoopbackServer, key: str) -> httpx.Client:
    return server.client(headers={"Authorization": f"Bearer {key}"},
                        timeout=10.0)


def test_a_key_in_token_debt_still_lists_models_and_sends_feedback(tmp_path: Path) -> None:
    """A backend reports more tokens than the reservation (a CJK prompt is about a token
    per character, not per 4): the bucket goes into debt and the next chat waits (429).
    Listing the models and recording a thumbs-up spend no tokens: they pass (they were
    refused with a 429 for as long as the debt lasted)."""
    llm = ScriptedBackend(["ok"], usage=Usage(prompt_tokens=250, completion_tokens=10))
    gateway, key, clock = served(tmp_path, llm, tpm=200)
    body = {"messages": [{"role": "user", "content": "你好世界"}], "max_tokens": 10}
    with LoopbackServer(gateway.app) as server, client(server, key) as http:
        first = http.post("/v1/chat/completions", json=body)
        assert first.status_code == 200, first.text
        assert first.json()["usage"]["total_tokens"] == 260  # 60 over the whole minute
        refused = http.post("/v1/chat/completions", json=body)
        assert refused.status_code == 429
        # 60 in debt plus this request's 11 (1 prompt estimate + 10), at 200 per minute
        assert refused.headers["retry-after"] == str(math.ceil((60 + 11) / (200 / 60)))
        assert http.get("/v1/models").status_code == 200
        assert http.get("/v1/models/numbers").status_code == 200
        signal = http.post("/v1/feedback", json={"run_id": first.json()["id"],
                                                 "kind": "thumbs", "value": 1})
        assert signal.status_code == 200, signal.text
        clock.now += 22  # 22 s refill 73.3 tokens: the debt and the request's 11
        assert http.post("/v1/chat/completions", json=body).status_code == 200


def test_the_bucket_is_charged_exactly_the_usage_answers_report(tmp_path: Path) -> None:
    """A scripted mix of plain and streamed requests (seeded): each answer's usage is its
    prompt's and its answer's words (counted here, from what was sent and received), and
    the key's bucket went down by exactly the sum of the usages reported."""
    llm = ScriptedBackend(ANSWERS)
    gateway, key, _ = served(tmp_path, llm, tpm=1_000_000)
    rng = random.Random(13)
    reported = 0
    with LoopbackServer(gateway.app) as server, client(server, key) as http:
        for n in range(12):
            words = [rng.choice(["tea", "café", "naïve", "日本", "x"]) for _ in range(
                rng.randint(1, 30))]
            prompt = " ".join(words)
            body = {"messages": [{"role": "user", "content": prompt}],
                    "max_tokens": rng.randint(1, 8)}
            if n % 3:
                with http.stream("POST", "/v1/chat/completions",
                                 json={**body, "stream": True,
                                       "stream_options": {"include_usage": True}}) as r:
                    assert r.status_code == 200
                    events = [json.loads(line[6:]) for line in r.iter_lines()
                              if line.startswith("data: {")]
                text = "".join(e["choices"][0]["delta"].get("content") or ""
                               for e in events if e["choices"])
                usage = [e["usage"] for e in events if e.get("usage")]
                assert len(usage) == 1
                answer = usage[0]
            else:
                r = http.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text
                text, answer = r.json()["choices"][0]["message"]["content"], r.json()["usage"]
            assert answer["prompt_tokens"] == len(words)
            assert answer["completion_tokens"] == len(text.split())
            assert answer["total_tokens"] == len(words) + len(text.split())
            reported += answer["total_tokens"]
    assert gateway.keys is not None
    key_id = gateway.keys.records()[0].id
    bucket = gateway.limits._tokens[key_id]
    assert bucket.capacity - bucket.level == reported


def test_retry_after_is_whole_seconds_rounded_up(tmp_path: Path) -> None:
    """7 requests per minute: the 8th waits 60 / 7 = 8.57 s, said as 9; 8 s later it still
    waits (0.57 s, said as 1, never 0); 9 s later it passes."""
    gateway, key, clock = served(tmp_path, ScriptedBackend(["ok"]), rpm=7)
    with LoopbackServer(gateway.app) as server, client(server, key) as http:
        statuses = [http.get("/v1/models").status_code for _ in range(7)]
        assert statuses == [200] * 7
        refused = http.get("/v1/models")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "9"
        clock.now += 8
        again = http.get("/v1/models")
        assert again.status_code == 429 and again.headers["retry-after"] == "1"
        clock.now += 1
        assert http.get("/v1/models").status_code == 200


def test_embeddings_usage_is_the_documented_estimate(tmp_path: Path) -> None:
    """``/v1/embeddings`` reports (and charges) characters / 4 rounded up, at least 1: code
    points, not bytes (an accented or a CJK character is one)."""
    gateway, key, _ = served(tmp_path, ScriptedBackend(["ok"]), tpm=1000)
    cases = [(["héllo wörld", "", "日本語"], 4), ([""], 1), (["abcd"], 1), (["abcde"], 2)]
    charged = 0
    with LoopbackServer(gateway.app) as server, client(server, key) as http:
        for texts, tokens in cases:
            r = http.post("/v1/embeddings", json={"input": texts})
            assert r.status_code == 200, r.text
            assert tokens == max(1, math.ceil(sum(len(t) for t in texts) / 4))
            assert r.json()["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
            charged += tokens
    assert gateway.keys is not None
    bucket = gateway.limits._tokens[gateway.keys.records()[0].id]
    assert bucket.capacity - bucket.level == charged


class SilentUsageBackend(ScriptedBackend):
    """A test double: ``ScriptedBackend`` that reports no usage, as some upstreams do. A
    JSON answer's usage is ``Usage(0, 0)``; a stream's deltas carry none (``zero_stream``:
    its last delta says ``Usage(0, 0)`` instead)."""

    def __init__(self, replies: list[str], *, zero_stream: bool = False) -> None:
        super().__init__(replies)
        self.zero_stream = zero_stream

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion | None:
        completion = await super().aieng_generate(request)
        return None if completion is None else attrs.evolve(completion, usage=Usage())

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta] | None:
        return self._silent(request)

    async def _silent(self, request: Request) -> AsyncIterator[Delta]:
        async for delta in self._stream(request):
            yield attrs.evolve(delta, usage=Usage() if self.zero_stream and
                               delta.finish_reason else None)


def chat(http: httpx.Client, prompt: str, *, stream: bool,
         max_tokens: int = 50) -> tuple[str, dict[str, int], int]:
    """One chat: its answer's text, its usage and how many text chunks it came in."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}],
                            "max_tokens": max_tokens}
    if not stream:
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"], r.json()["usage"], 1
    with http.stream("POST", "/v1/chat/completions",
                     json={**body, "stream": True,
                           "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith("data: {")]
    pieces = [e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]]
    usage = [e["usage"] for e in events if e.get("usage")]
    assert len(usage) == 1
    return "".join(pieces), usage[0], sum(1 for p in pieces if p)


def spent(gateway: Gateway) -> float:
    """How far the (only) key's token bucket went down."""
    assert gateway.keys is not None
    bucket = gateway.limits._tokens[gateway.keys.records()[0].id]
    return bucket.capacity - bucket.level


@pytest.mark.parametrize("zero_stream", [False, True])
def test_a_backend_reporting_no_usage_is_charged_the_estimates(tmp_path: Path,
                                                               zero_stream: bool) -> None:
    """A backend that reports no usage (0 / 0, or a stream without any) is charged the
    prompt's estimate (characters / 4 rounded up, as the reservation) and, for an answer
    whose completion count is 0, the answer's characters / 4 rounded up; a stream without
    usage counts its text deltas (the kernel's count). The response's usage says what the
    key was charged, and the bucket went down by exactly the sum."""
    answers = ["naïve café résumé 日本語 answer", "x", "a b c d e f g h i j k"]
    llm = SilentUsageBackend(answers, zero_stream=zero_stream)
    gateway, key, _ = served(tmp_path, llm, tpm=1_000_000)
    rng = random.Random(7)
    total = 0
    with LoopbackServer(gateway.app) as server, client(server, key) as http:
        for n in range(9):
            prompt = "".join(rng.choice("ab é日 ") for _ in range(rng.randint(1, 40)))
            text, usage, chunks = chat(http, prompt, stream=bool(n % 2))
            assert text
            prompt_estimate = -(-len(prompt) // 4)
            if n % 2 and not zero_stream:
                completion = chunks  # one text delta per word: the kernel's count
            else:
                completion = max(1, -(-len(text) // 4))
            assert usage == {"prompt_tokens": prompt_estimate,
                             "completion_tokens": completion,
                             "total_tokens": prompt_estimate + completion}, (n, prompt, text)
            total += usage["total_tokens"]
    assert spent(gateway) == total


def test_a_tpm_limit_holds_against_a_backend_reporting_no_usage(tmp_path: Path) -> None:
    """--tpm 100 and a backend that reports nothing: each request of a 200-character prompt
    costs its 50-token estimate plus its answer's, so the third is refused (it cost nothing
    before: every request passed)."""
    gateway, key, _ = served(tmp_path, SilentUsageBackend(["ok"]), tpm=110)
    body = {"messages": [{"role": "user", "content": "z" * 200}], "max_tokens": 2}
    with LoopbackServer(gateway.app) as server, client(server, key) as http:
        statuses = [http.post("/v1/chat/completions", json=body).status_code
                    for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert spent(gateway) == 2 * (50 + 1)


def test_a_backend_reporting_usage_is_charged_exactly_it(tmp_path: Path) -> None:
    """Non-zero counts are used as reported, even far below the estimates (3 prompt tokens
    for 400 characters, 1 completion token for a long answer), plain and streamed."""
    llm = ScriptedBackend(["a long answer of many many words here"],
                          usage=Usage(prompt_tokens=3, completion_tokens=1))
    gateway, key, _ = served(tmp_path, llm, tpm=1_000_000)
    with LoopbackServer(gateway.app) as server, client(server, key) as http:
        for stream in (False, True):
            _, usage, _ = chat(http, "q" * 400, stream=stream)
            assert usage == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    assert spent(gateway) == 8


def test_tool_calls_alone_are_charged_their_estimate(tmp_path: Path) -> None:
    """An answer that is only tool calls from a backend reporting no usage: its completion
    is estimated from the calls as the client reads them (name and JSON arguments), not
    charged 0."""
    calls = [ToolCall(id="c1", name="search", arguments={"query": "naïve 日本 café"}),
             ToolCall(id="c2", name="clock", arguments={})]
    gateway, key, _ = served(tmp_path, SilentUsageBackend([calls]), tpm=1_000_000)
    prompt = "find it"
    with LoopbackServer(gateway.app) as server, client(server, key) as http:
        r = http.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": prompt}], "max_tokens": 50})
    assert r.status_code == 200, r.text
    wire = r.json()["choices"][0]["message"]["tool_calls"]
    generated = sum(len(c["function"]["name"]) + len(c["function"]["arguments"])
                    for c in wire)
    assert generated == len("search") + len('{"query": "naïve 日本 café"}') + len("clock{}")
    expected = -(-len(prompt) // 4) + -(-generated // 4)
    assert r.json()["usage"]["total_tokens"] == expected
    assert spent(gateway) == expected


def test_a_cache_hit_of_an_estimated_answer_charges_nothing(tmp_path: Path) -> None:
    """Behind an exact cache, the miss of a backend reporting no usage is charged (and
    reports) its estimates; the hits, plain and streamed, charge nothing (no model ran)."""
    cache = pytest.importorskip("aieng_cache")
    llm = SilentUsageBackend(["one two three four five six seven eight nine ten"])
    gateway, key, _ = served(tmp_path, llm, tpm=1000, components={
        "cache": cache.ExactCache(cache.CacheOptions())})
    prompt = "what is in the cache?"
    with LoopbackServer(gateway.app) as server, client(server, key) as http:
        text, usage, _ = chat(http, prompt, stream=False)
        miss = -(-len(prompt) // 4) + max(1, -(-len(text) // 4))
        assert usage["total_tokens"] == miss
        for n in range(4):
            chat(http, prompt, stream=bool(n % 2))
    assert len(llm.requests) == 1
    assert spent(gateway) == miss


def test_an_answer_an_output_guard_blocked_is_charged_the_models_text(tmp_path: Path) -> None:
    """A backend reporting no usage, its answer blocked by an output guard: the model ran,
    so the key is charged the prompt's estimate and the generated text's (the model's
    answer, not the guard's replacement); a stream, its deltas (one per word here)."""
    from aieng_core.testing.reference import RegexRedactGuard

    answer = "the secret plan is 日本 and more words"
    llm = SilentUsageBackend([answer])
    gateway, key, _ = served(tmp_path, llm, tpm=10_000, components={
        "guard": RegexRedactGuard(blocked_phrase="secret")})
    prompt = "tell me the plan"
    estimate = -(-len(prompt) // 4)
    expected = {False: estimate + -(-len(answer) // 4), True: estimate + len(answer.split())}
    with LoopbackServer(gateway.app) as server, client(server, key) as http:
        for stream in (False, True):
            text, usage, _ = chat(http, prompt, stream=stream)
            assert "secret" not in text
            assert usage["total_tokens"] == expected[stream]
    assert spent(gateway) == sum(expected.values())
