"""Properties: whatever JSON (or bytes) a client sends, the gateway answers 2xx/4xx with
a JSON error, never a 500 (against a real uvicorn server on loopback)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _support import LoopbackServer
from aieng_gateway import Gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=12,
)
ROLE = st.sampled_from(["user", "system", "assistant", "tool", "developer", "wizard", "", 3])
MESSAGE = st.fixed_dictionaries({"role": ROLE}, optional={
    "content": st.one_of(st.text(max_size=30), st.none(), st.integers(),
                         st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "x"]),
                                                         "text": JSON}), max_size=2)),
    "name": JSON})
CHAT = st.fixed_dictionaries({}, optional={
    "messages": st.one_of(st.lists(MESSAGE, max_size=3), JSON),
    "model": st.one_of(st.just("test"), JSON),
    "temperature": JSON | st.floats(), "top_p": JSON | st.floats(),
    "max_tokens": st.one_of(st.integers(-5, 40), JSON), "stop": JSON, "seed": JSON,
    "stream": st.one_of(st.booleans(), JSON), "n": JSON, "response_format": JSON,
    "stream_options": JSON, "max_completion_tokens": JSON, "metadata": JSON,
})


@pytest.fixture(scope="module")
def http(served: tuple[Gateway, LoopbackServer], api_key: str) -> Iterator[httpx.Client]:
    """One keep-alive client for every example."""
    with served[1].client(timeout=20,
                      headers={"Authorization": f"Bearer {api_key}"}) as client:
        yield client


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code in (502, 504), response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=CHAT)
def test_chat_bodies_never_500(http: httpx.Client, body: dict[str, Any]) -> None:
    """Arbitrary chat-shaped bodies: a 200 answer or a 400/422 naming the problem."""
    # json.dumps writes NaN / Infinity, which Python's parser reads: checked fields refuse them.
    response = http.post("/v1/chat/completions", content=json.dumps(body).encode())
    _check(response)
    if response.status_code == 200 and body.get("stream") is not True:
        assert response.json()["object"] == "chat.completion"


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(["/v1/chat/completions", "/v1/embeddings", "/v1/feedback"]),
       body=JSON)
def test_any_json_never_500(http: httpx.Client, path: str, body: Any) -> None:
    """Any JSON value at all, on every POST route: never a 500."""
    _check(http.post(path, content=json.dumps(body).encode()))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=200))
def test_any_bytes_never_500(http: httpx.Client, raw: bytes) -> None:
    """Arbitrary bytes (invalid UTF-8, truncated JSON): 400, never 500."""
    _check(http.post("/v1/chat/completions", content=raw))
