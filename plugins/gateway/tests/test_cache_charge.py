"""A key's token bucket is charged what the model used: nothing for an answer from the
cache (no model ran), plain or streamed; the response still reports the stored usage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aieng_gateway import Gateway, GatewaySettings, KeyStore

from aieng_core.testing import ScriptedBackend, isolated_kernel
from aieng_core.testing.loopback import LoopbackServer

ANSWER = "one two three four five six seven eight nine ten"


def gateway(tmp: Path) -> tuple[Gateway, ScriptedBackend]:
    cache_module = pytest.importorskip("aieng_cache")
    llm = ScriptedBackend([ANSWER])

    def build(kernel: Any) -> Any:
        return kernel.compose({"cache": cache_module.ExactCache(cache_module.CacheOptions()),
                               "llm": llm}, name="cached", timeout=5.0)

    return Gateway(build, keys=KeyStore(tmp / "keys.sqlite3"), settings=GatewaySettings(),
                   kernel=lambda: isolated_kernel(loop_block_threshold=None)), llm


def test_cache_hits_cost_the_key_no_tokens(tmp_path: Path) -> None:
    """tpm 100: the miss uses 11 tokens (1 prompt + 10 answer words); twelve hits, plain
    and streamed, would use 132 more if charged their stored usage (the bucket ran dry and
    the key got 429s); they cost nothing, and each reports the stored usage."""
    served, llm = gateway(tmp_path)
    assert served.keys is not None
    key, _ = served.keys.create("cached", tpm=100)
    served.keys.refresh(force=True)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40}
    with LoopbackServer(served.app) as server, server.client(
            headers={"Authorization": f"Bearer {key}"}, timeout=10.0) as client:
        statuses, usages = [], []
        for n in range(13):
            if n % 2:
                with client.stream("POST", "/v1/chat/completions",
                                   json={**body, "stream": True,
                                         "stream_options": {"include_usage": True}}) as r:
                    statuses.append(r.status_code)
                    events = [json.loads(line[6:]) for line in r.iter_lines()
                              if line.startswith("data: {")]
                    usages.append(next((e["usage"] for e in events if e.get("usage")), {}))
            else:
                r = client.post("/v1/chat/completions", json=body)
                statuses.append(r.status_code)
                usages.append(r.json().get("usage", {}))
    assert statuses == [200] * 13, statuses
    assert len(llm.requests) == 1  # one model call: the rest came from the cache
    assert [u.get("total_tokens") for u in usages] == [11] * 13
