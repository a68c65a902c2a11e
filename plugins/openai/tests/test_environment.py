"""The process environment a container gives: proxy variables (``HTTP_PROXY``,
``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) and the ``trust_env`` option."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from _openai_double import API_KEY, CHAT_MODEL, LoopbackServer, OpenAIServerDouble
from aieng_hookspecs.types import Message, Request
from aieng_openai import OpenAIBackend, OpenAIError, OpenAIOptions
from aieng_openai._component import loopback_host

pytestmark = pytest.mark.anyio

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
                    "http_proxy", "https_proxy", "all_proxy", "no_proxy")


def ask() -> Request:
    return Request(messages=(Message("user", "hello there"),))


class _ForwardProxy(socketserver.StreamRequestHandler):
    """A forward proxy that answers every request itself (a chat completion), keeping the
    request lines it was sent (``POST http://host/v1/chat/completions HTTP/1.1``)."""

    seen: ClassVar[list[str]] = []

    def handle(self) -> None:
        line = self.rfile.readline().decode("latin-1").strip()
        length = 0
        while (header := self.rfile.readline().strip()):
            name, _, value = header.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        self.rfile.read(length)
        self.seen.append(line)
        body = json.dumps({"id": "p", "object": "chat.completion", "model": "m",
                           "choices": [{"index": 0, "finish_reason": "stop", "message": {
                               "role": "assistant", "content": "via the proxy"}}]}).encode()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))


@pytest.fixture
def forward_proxy() -> Iterator[tuple[str, list[str]]]:
    """A forward proxy on loopback: its URL and the request lines it was sent."""
    seen: ClassVar[list[str]] = []
    handler = type("Handler", (_ForwardProxy,), {"seen": seen})
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
        server.shutdown()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_loopback_server_is_never_reached_through_an_environment_proxy(
        double: OpenAIServerDouble, loopback: LoopbackServer, no_proxy_env: pytest.MonkeyPatch,
        variable: str, host: str) -> None:
    """A container's ``HTTP_PROXY`` (and no ``NO_PROXY``) must not send the calls to a
    model server on this machine through the proxy (here a port nothing listens on)."""
    no_proxy_env.setenv(variable, "http://127.0.0.1:9")
    base_url = loopback.base_url.replace("127.0.0.1", host)
    backend = OpenAIBackend(OpenAIOptions(base_url=base_url, model=CHAT_MODEL, api_key=API_KEY,
                                          max_retries=0, connect_timeout=5.0))
    try:
        completion = await backend.aieng_generate(ask())
    finally:
        await backend.aclose()
    assert completion.text
    assert len(double.calls) == 1


async def test_a_remote_server_goes_through_the_environment_proxy_unless_trust_env_is_off(
        forward_proxy: tuple[str, list[str]], no_proxy_env: pytest.MonkeyPatch) -> None:
    """With ``trust_env`` (the default) a host that is not loopback is reached through
    ``HTTP_PROXY``; with ``trust_env = false`` the environment is ignored and the call goes
    straight to the host (which does not exist)."""
    proxy, seen = forward_proxy
    no_proxy_env.setenv("HTTP_PROXY", proxy)
    options: dict[str, Any] = {"base_url": "http://model.invalid/v1", "model": "m",
                               "max_retries": 0, "connect_timeout": 2.0}
    proxied = OpenAIBackend(OpenAIOptions(**options))
    try:
        assert (await proxied.aieng_generate(ask())).text == "via the proxy"
    finally:
        await proxied.aclose()
    assert seen == ["POST http://model.invalid/v1/chat/completions HTTP/1.1"]
    direct = OpenAIBackend(OpenAIOptions(**options, trust_env=False))
    try:
        with pytest.raises(OpenAIError, match="ConnectError"):
            await direct.aieng_generate(ask())
    finally:
        await direct.aclose()
    assert len(seen) == 1


def test_trust_env_must_be_a_bool() -> None:
    with pytest.raises(TypeError):
        OpenAIOptions(base_url="http://127.0.0.1:9/v1", model="m", trust_env="no")


@pytest.mark.parametrize(("base_url", "host"), [
    ("http://127.0.0.1:8000/v1", "127.0.0.1"), ("http://127.8.9.1/v1", "127.8.9.1"),
    ("http://[::1]:8000/v1", "[::1]"), ("http://LocalHost:8000/v1", "localhost"),
    ("http://vllm.localhost/v1", "vllm.localhost"), ("http://10.0.0.5:8000/v1", None),
    ("https://api.openai.com/v1", None), ("http://127.0.0.1.nip.io/v1", None)])
def test_loopback_hosts(base_url: str, host: str | None) -> None:
    assert loopback_host(base_url) == host


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_hosts_own_http_client_is_used_and_left_open(
        double: OpenAIServerDouble, loopback: LoopbackServer) -> None:
    """``http_client=``: the host's ``httpx.AsyncClient`` carries the calls (its own
    headers and event hooks apply) with the component's key; closing the component leaves
    it open for the host."""
    import httpx

    sent: list[str] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request.url.path)

    async with httpx.AsyncClient(headers={"X-Host": "mine"}, trust_env=False,
                                 event_hooks={"request": [record]}) as client:
        backend = OpenAIBackend(OpenAIOptions(base_url=loopback.base_url, model=CHAT_MODEL,
                                              api_key=API_KEY, max_retries=0),
                                http_client=client)
        completion = await backend.aieng_generate(ask())
        await backend.aieng_pipeline_close()
        assert not client.is_closed
        again = await backend.aieng_generate(ask())
    assert completion is not None and again is not None and completion.text
    assert sent == ["/v1/chat/completions"] * 2
    headers = double.calls[0].headers
    assert headers["x-host"] == "mine" and headers["authorization"] == f"Bearer {API_KEY}"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by itself (its own CA), and its key."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aieng test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_ssl_cert_file_is_trusted_for_an_https_base_url(
        server_double: OpenAIServerDouble, tmp_path: Path,
        no_proxy_env: pytest.MonkeyPatch) -> None:
    """An https server on loopback with a private CA: refused (a connection error, not a
    hang) until ``SSL_CERT_FILE`` names the CA, then answered; ``trust_env = false``
    ignores the variable again."""
    cert, key = _self_signed(tmp_path)
    server = LoopbackServer(server_double.app)
    server.server.config.ssl_certfile, server.server.config.ssl_keyfile = str(cert), str(key)
    with server:
        base_url = f"https://127.0.0.1:{server.port}/v1"
        outcomes: list[str] = []
        for env, trust in ((None, True), (str(cert), True), (str(cert), False)):
            if env is None:
                no_proxy_env.delenv("SSL_CERT_FILE", raising=False)
            else:
                no_proxy_env.setenv("SSL_CERT_FILE", env)
            backend = OpenAIBackend(OpenAIOptions(base_url=base_url, model=CHAT_MODEL,
                                                  api_key=API_KEY, max_retries=0,
                                                  trust_env=trust))
            try:
                outcomes.append((await backend.aieng_generate(ask())).text)
            except OpenAIError as error:
                outcomes.append(error.kind)
            finally:
                await backend.aclose()
    assert outcomes == ["connection", "You said: hello there", "connection"]
