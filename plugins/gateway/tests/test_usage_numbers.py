"""The numbers a key's owner reads: each answer's ``usage`` against an independent count,
the key's token bucket charged exactly what the answers reported, ``Retry-After`` in whole
seconds rounded up, and a bucket in debt holding back only the requests that spend tokens.

The gateway's buckets run on a :class:`ManualClock` (nothing refills unless a test moves
it), over the kit's ``ScriptedBackend`` (words stand in for tokens)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import httpx
from aieng_gateway import Gateway, GatewaySettings, KeyStore, Limits
from aieng_hookspecs.types import Usage
from aieng_monitoring import FeedbackOptions, FeedbackStore

from aieng_core.testing import HashEmbedder, ManualClock, ScriptedBackend, isolated_kernel
from aieng_core.testing.loopback import LoopbackServer

ANSWERS = ["one two three", "alpha beta gamma delta epsilon", "x", "many words in this answer"]


def served(tmp: Path, llm: ScriptedBackend, *, rpm: int | None = None,
           tpm: int | None = None) -> tuple[Gateway, str, ManualClock]:
    """A gateway over ``llm`` and a feedback sink, one key, its buckets on a manual clock."""
    sink = FeedbackStore(FeedbackOptions(path=str(tmp / "feedback.sqlite3")))

    def build(kernel: Any) -> Any:
        return kernel.compose({"llm": llm, "embed": HashEmbedder(8), "feedback": sink},
                              name="numbers", timeout=5.0)

    gateway = Gateway(build, keys=KeyStore(tmp / "keys.sqlite3"), settings=GatewaySettings(),
                      kernel=lambda: isolated_kernel(loop_block_threshold=None))
    clock = ManualClock(0.0)
    gateway.limits = Limits(clock=clock)
    assert gateway.keys is not None
    key, _ = gateway.keys.create("numbers", rpm=rpm, tpm=tpm)
    gateway.keys.refresh(force=True)
    return gateway, key, clock


def client(server: LoopbackServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"},
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
