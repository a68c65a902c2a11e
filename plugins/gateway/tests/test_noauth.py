"""``--no-auth`` is explicit and loud; the app also runs in-process over ASGITransport."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import structlog
from _support import make_gateway
from aieng_gateway import Gateway, GatewaySettings

pytestmark = pytest.mark.anyio


def test_auth_needs_a_key_store() -> None:
    """Auth on without a key store is a construction error, not an open server."""
    with pytest.raises(ValueError, match="KeyStore"):
        Gateway(lambda kernel: None)


async def test_no_auth_warns_and_serves(tmp_path: Path) -> None:
    """With auth off a warning is logged at start and requests need no key."""
    gateway = make_gateway(tmp_path, settings=GatewaySettings(auth=False))
    with structlog.testing.capture_logs() as logs:
        async with gateway.running():
            transport = httpx.ASGITransport(app=gateway.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                response = await client.post("/v1/chat/completions", json={
                    "messages": [{"role": "user", "content": "open"}]})
                assert response.status_code == 200
                assert response.json()["choices"][0]["message"]["content"] == "You said: open"
                assert (await client.get("/metrics")).status_code == 200
    assert any(e["event"] == "gateway.auth_disabled" and e["log_level"] == "warning"
               for e in logs)


async def test_blocked_by_model_name(tmp_path: Path) -> None:
    """A model no backend serves is a 404 naming the model field."""
    from aieng_core.testing import ScriptedBackend

    gateway = make_gateway(tmp_path, settings=GatewaySettings(auth=False),
                           backend=ScriptedBackend(model="only-this"))
    async with gateway.running():
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            response = await client.post("/v1/chat/completions", json={
                "model": "other", "messages": [{"role": "user", "content": "x"}]})
            assert response.status_code == 404
            assert response.json()["error"]["param"] == "model"
            assert "'other'" in response.json()["error"]["message"]
            models = (await client.get("/v1/models")).json()["data"]
            assert [m["id"] for m in models] == ["test", "only-this"]


async def test_retrieve_a_model_whose_id_has_a_slash(tmp_path: Path) -> None:
    """A Hugging Face style id (``org/name``) is retrieved by GET /v1/models/org/name."""
    from aieng_core.testing import ScriptedBackend

    gateway = make_gateway(tmp_path, settings=GatewaySettings(auth=False),
                           backend=ScriptedBackend(model="org/small-model"))
    async with gateway.running():
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            one = await client.get("/v1/models/org/small-model")
            assert one.status_code == 200, one.text
            assert one.json()["id"] == "org/small-model"
            assert (await client.get("/v1/models/org")).status_code == 404


async def test_unknown_route_and_method_are_json(tmp_path: Path) -> None:
    """An unknown path is a JSON 404, a wrong method a JSON 405."""
    gateway = make_gateway(tmp_path, settings=GatewaySettings(auth=False))
    async with gateway.running():
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            missing = await client.get("/v1/nothing")
            assert missing.status_code == 404 and "no route" in missing.json()["error"]["message"]
            wrong = await client.get("/v1/chat/completions")
            assert wrong.status_code == 405 and "GET" in wrong.json()["error"]["message"]
