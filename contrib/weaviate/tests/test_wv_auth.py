"""A Weaviate server that wants credentials: opening the store fails with one
``WeaviateAuthenticationFailed`` (a ``WeaviateUnavailable``) naming the URL and
``api_key_env``, not the client's ``AuthenticationFailedError`` nor a "cannot connect"."""

from __future__ import annotations

import http.server
import json
import pickle
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aieng_hookspecs.types import Document
from aieng_weaviate import (
    WeaviateAuthenticationFailed,
    WeaviateOptions,
    WeaviateStore,
    WeaviateUnavailable,
)

from aieng_core.testing import HashEmbedder

_OIDC = json.dumps({"href": "http://127.0.0.1:9/.well-known/openid-configuration",
                    "clientId": "weaviate", "scopes": ["openid", "email"]}).encode()
_META = b'{"version": "1.33.0", "modules": {}}'


class _Guarded(http.server.BaseHTTPRequestHandler):
    """Weaviate's REST half behind auth: with ``oidc`` it answers the OIDC discovery
    endpoint (as a server with OIDC enabled does), else ``/v1/meta`` is a 401 (API keys
    on, anonymous access off); everything else is a 404."""

    oidc = True

    def do_GET(self) -> None:
        status, body = 404, b""
        if self.path.startswith("/v1/.well-known/openid-configuration") and self.oidc:
            status, body = 200, _OIDC
        elif self.path.startswith("/v1/meta"):
            status, body = (200, _META) if self.oidc else \
                (401, b'{"code": 401, "message": "anonymous access not enabled"}')
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def guarded() -> Iterator[Callable[[bool], str]]:
    servers: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []

    def start(oidc: bool) -> str:
        handler = type("Handler", (_Guarded,), {"oidc": oidc})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join()


async def _open(url: str, **options: Any) -> WeaviateAuthenticationFailed:
    store = WeaviateStore(WeaviateOptions(url=url, grpc_port=9, timeout_s=5, **options),
                          embedder=HashEmbedder(4).aieng_embed)
    try:
        with pytest.raises(WeaviateAuthenticationFailed) as caught:
            await store.aieng_index([Document(id="a", text="alpha")])
    finally:
        await store.aclose()
    return caught.value


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_an_oidc_server_names_the_url_and_api_key_env(
        guarded: Callable[[bool], str]) -> None:
    url = guarded(True)
    error = await _open(url)
    message = str(error)
    assert isinstance(error, WeaviateUnavailable)
    assert f"Weaviate at {url} requires credentials" in message
    assert "OIDC" in message and "api_key_env" in message and "\n" not in message
    assert type(error.__cause__).__name__ == "AuthenticationFailedError"
    copy = pickle.loads(pickle.dumps(error))  # a host may send it to another process
    assert type(copy) is WeaviateAuthenticationFailed and str(copy) == message


@pytest.mark.anyio
@pytest.mark.parametrize("key_env", ["", "WV_TEST_KEY"])
async def test_a_401_asks_for_a_key_or_names_the_refused_one(
        guarded: Callable[[bool], str], key_env: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 401 is no "cannot connect": without a key it says to set ``api_key_env``, with one
    that the key in that variable was refused; the server's reason is kept."""
    monkeypatch.setenv("WV_TEST_KEY", "wrong-key")
    url = guarded(False)
    message = str(await _open(url, api_key_env=key_env))
    assert "cannot connect" not in message and "anonymous access not enabled" in message
    if key_env:
        assert f"Weaviate at {url} refused the API key in WV_TEST_KEY" in message
        assert "wrong-key" not in message
    else:
        assert f"Weaviate at {url} requires credentials" in message
        assert "api_key_env" in message
