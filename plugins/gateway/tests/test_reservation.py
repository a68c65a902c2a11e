"""A chat request that ends without usage (an upstream failure, a client gone, a stream
broken off) gives back the ``max_tokens`` part of its token reservation."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest
from _support import LoopbackServer, post_raw
from aieng_gateway import Gateway

#: The key's tokens per minute: refilled at ~17 a second, far from the 900 reserved.
TPM = 1000


def _chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "test", "messages": [{"role": "user", "content": text}],
            "max_tokens": 900, **extra}


def _ended(gateway: Gateway) -> int:
    """The chat requests ended by a client gone (499) or the stage timeout (504)."""
    return sum(gateway.requests[("/v1/chat/completions", status)] for status in (499, 504))


@pytest.fixture
def limited(served: tuple[Gateway, LoopbackServer]) -> httpx.Client:
    """A client of the module's gateway with a fresh key of :data:`TPM` tokens a minute."""
    gateway, server = served
    assert gateway.keys is not None
    key, _ = gateway.keys.create("reserved", tpm=TPM)
    gateway.keys.refresh(force=True)
    return server.client(headers={"Authorization": f"Bearer {key}"},
                        timeout=20)


@pytest.mark.parametrize("ending", ["failure", "stream_break", "client_gone"])
def test_a_request_ending_without_usage_gives_its_max_tokens_back(
        served: tuple[Gateway, LoopbackServer], limited: httpx.Client, ending: str) -> None:
    """Each request reserves 900 of the key's 1000 tokens; one that ends without usage is
    charged its prompt's estimate (and the deltas sent), so the next such request is
    admitted at once, where charging the whole reservation made it a 429."""
    with limited:
        if ending == "failure":  # the backend raises: a 502
            first = limited.post("/v1/chat/completions", json=_chat("FAIL"))
            assert first.status_code == 502, first.text
        elif ending == "stream_break":  # the backend fails after the first delta
            first = limited.post("/v1/chat/completions", json=_chat("BREAK", stream=True))
            assert first.status_code == 200 and '"error"' in first.text
        else:  # the client gives up first (or the stage timeout ends it: no usage either)
            gateway, server = served
            ended = _ended(gateway)
            backend = gateway.pipeline.components["llm"]
            backend.slow.clear()  # type: ignore[attr-defined]
            key = limited.headers["authorization"].removeprefix("Bearer ")
            # A socket closed once the run is under way (not a client timeout racing the
            # stage's on a busy machine: either way the request must end).
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                post_raw(sock, key, _chat("SLOW"))
                assert backend.slow.wait(30)  # type: ignore[attr-defined]
            deadline = time.monotonic() + 30
            while _ended(served[0]) == ended:  # the gateway sees the client go
                assert time.monotonic() < deadline, "the abandoned request did not end"
                time.sleep(0.01)
        second = limited.post("/v1/chat/completions", json=_chat("hi"))
        assert second.status_code == 200, second.text
