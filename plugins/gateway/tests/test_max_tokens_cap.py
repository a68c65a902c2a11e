"""The operator's cap on ``max_tokens`` (``GatewaySettings.max_tokens``, ``aieng serve
--max-tokens N``): a request asking more is a 400 naming the field and the cap, one asking
nothing gets the cap; in agent mode every model call of the run is bounded by it. Also the
checks of the token fields themselves (as OpenAI reads them: ``5.0`` is 5). A real uvicorn
server on loopback over the kit's ``ScriptedBackend``, which records what reached it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import LoopbackServer, make_gateway
from aieng_gateway import Gateway, GatewaySettings, KeyStore
from aieng_gateway._cli import serve
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Request, ToolCall, ToolResult, ToolSpec
from click.testing import CliRunner

from aieng_core.agent import AgentOptions
from aieng_core.testing import ScriptedBackend, isolated_kernel

CAP = 64


def _chat(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "test", "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture(scope="module")
def backend() -> ScriptedBackend:
    return ScriptedBackend(["short answer"])


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory, backend: ScriptedBackend
           ) -> Iterator[tuple[Gateway, LoopbackServer, str]]:
    """A gateway capped at :data:`CAP` tokens, its server and a key without limits."""
    gateway = make_gateway(tmp_path_factory.mktemp("cap"), backend=backend,
                           settings=GatewaySettings(max_tokens=CAP))
    assert gateway.keys is not None
    key, _ = gateway.keys.create("unlimited")
    with LoopbackServer(gateway.app) as server:
        yield gateway, server, key


@pytest.fixture()
def client(capped: tuple[Gateway, LoopbackServer, str]) -> Iterator[httpx.Client]:
    _, server, key = capped
    with server.client(timeout=20,
                      headers={"authorization": f"Bearer {key}"}) as http:
        yield http


# -- the setting ----------------------------------------------------------------------------

def test_the_cap_is_off_by_default_and_must_be_a_positive_integer() -> None:
    assert GatewaySettings().max_tokens is None
    assert GatewaySettings(max_tokens=1).max_tokens == 1
    for bad in (0, -5, True, 2.0, "64"):
        with pytest.raises(ValueError, match="max_tokens must be a positive integer"):
            GatewaySettings(max_tokens=bad)  # type: ignore[arg-type]


class _Started(Exception):
    """Raised by the stand-in Gateway: serve got as far as building it."""


def test_serve_max_tokens_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--max-tokens N`` reaches the settings; 0 or a negative is a usage error (2)
    before anything starts."""
    import aieng_gateway._app as app

    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "p"\n\n[components.calc]\nuse = "calculator"\n')
    seen: list[GatewaySettings] = []

    def stand_in(build: Any, *, keys: Any, settings: GatewaySettings, kernel: Any) -> Any:
        seen.append(settings)
        raise _Started

    monkeypatch.setattr(app, "Gateway", stand_in)
    runner = CliRunner()
    for bad in ("0", "-3", "many"):
        result = runner.invoke(serve, [str(pipeline), "--no-auth", "--max-tokens", bad])
        assert result.exit_code == 2 and "--max-tokens" in result.output, result.output
    assert not seen
    result = runner.invoke(serve, [str(pipeline), "--no-auth", "--max-tokens", "512"])
    assert isinstance(result.exception, _Started)
    assert seen[0].max_tokens == 512 and seen[0].agent is None
    result = runner.invoke(serve, [str(pipeline), "--no-auth"])
    assert isinstance(result.exception, _Started) and seen[1].max_tokens is None


# -- the cap on the wire ----------------------------------------------------------------

@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("stream", [False, True])
def test_asking_more_than_the_cap_is_a_400_naming_the_field_and_the_cap(
        client: httpx.Client, backend: ScriptedBackend, field: str, stream: bool) -> None:
    """``10**30`` (or one past the cap) never reaches the backend: 400, OpenAI's error shape,
    the field and the cap named; a stream is refused before its first byte, as JSON."""
    before = len(backend.requests)
    for asked in (10**30, CAP + 1):
        response = client.post("/v1/chat/completions",
                               json=_chat(**{field: asked, "stream": stream}))
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] == field and error["type"] == "invalid_request_error"
        assert error["code"] == "invalid_value"
        assert field in error["message"] and f"at most {CAP}" in error["message"]
    assert len(backend.requests) == before


def test_both_fields_are_checked_against_the_cap(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions",
                           json=_chat(max_tokens=8, max_completion_tokens=CAP * 2))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_completion_tokens"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("extra, used", [
    ({}, CAP),  # asking nothing: the cap, not unbounded
    ({"max_tokens": CAP}, CAP),
    ({"max_tokens": 3}, 3),
    ({"max_completion_tokens": 5}, 5),
    ({"max_tokens": None}, CAP),
])
def test_what_reaches_the_backend_is_within_the_cap(
        client: httpx.Client, backend: ScriptedBackend, extra: dict[str, Any], used: int,
        stream: bool) -> None:
    response = client.post("/v1/chat/completions", json=_chat(stream=stream, **extra))
    assert response.status_code == 200, response.text
    assert backend.requests[-1].max_tokens == used


def test_a_request_without_max_tokens_reserves_the_cap(
        capped: tuple[Gateway, LoopbackServer, str]) -> None:
    """A key whose tpm is under the cap: a request that sends no max_tokens reserves the cap,
    and the 422 says so (the client sent no max_tokens to lower)."""
    gateway, server, _ = capped
    assert gateway.keys is not None
    key, _ = gateway.keys.create("small", tpm=CAP // 2)
    gateway.keys.refresh(force=True)
    with server.client(timeout=20,
                      headers={"authorization": f"Bearer {key}"}) as http:
        refused = http.post("/v1/chat/completions", json=_chat())
        assert refused.status_code == 422
        assert f"the server's cap of {CAP}" in refused.json()["error"]["message"]
        assert http.post("/v1/chat/completions", json=_chat(max_tokens=8)).status_code == 200


def test_without_a_cap_nothing_changes(tmp_path: Path) -> None:
    """No cap (the default): any max_tokens up to 2**31 - 1 passes (a key without a token
    limit), one past it is a 422 naming the field (a count of hundreds of digits would
    overflow a float downstream), and a request asking nothing gets the contract's
    default, as before."""
    backend = ScriptedBackend(["ok"])
    gateway = make_gateway(tmp_path, backend=backend, settings=GatewaySettings(auth=False))
    with LoopbackServer(gateway.app) as server, server.client() as http:
        assert http.post("/v1/chat/completions",
                         json=_chat(max_tokens=2**31 - 1)).status_code == 200
        assert backend.requests[-1].max_tokens == 2**31 - 1
        for huge in (2**31, 10**400):
            refused = http.post("/v1/chat/completions", json=_chat(max_tokens=huge))
            assert refused.status_code == 422
            assert refused.json()["error"]["param"] == "max_tokens"
        assert http.post("/v1/chat/completions", json=_chat()).status_code == 200
        assert backend.requests[-1].max_tokens == Request(messages=backend.requests[-1]
                                                          .messages).max_tokens


# -- the token fields' own checks (as OpenAI reads them) ----------------------------------

@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", [0, -1, True, False, 5.5, "8", [8], {"n": 8}, 1e400])
def test_a_token_field_that_is_no_positive_integer_is_a_422_naming_it(
        client: httpx.Client, field: str, value: Any) -> None:
    """Kept as decided (422 naming the field, as every field's type or range): zero, a
    negative, a boolean, a fraction, a string, infinity."""
    body = json.dumps(_chat(**{field: value}))  # Python's json writes inf as Infinity
    response = client.post("/v1/chat/completions", content=body,
                           headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["message"].startswith(f"{field}: ")


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_whole_float_is_an_integer_as_openai_reads_it(
        client: httpx.Client, backend: ScriptedBackend, field: str) -> None:
    """``5.0`` is 5 (OpenAI validates JSON numbers by value, as JSON Schema's ``integer``;
    Python clients send it after arithmetic); over the cap it is still refused."""
    response = client.post("/v1/chat/completions", json=_chat(**{field: 5.0}))
    assert response.status_code == 200, response.text
    assert backend.requests[-1].max_tokens == 5
    assert type(backend.requests[-1].max_tokens) is int
    response = client.post("/v1/chat/completions", json=_chat(**{field: float(CAP + 1)}))
    assert response.status_code == 400 and response.json()["error"]["param"] == field


# -- agent mode -------------------------------------------------------------------------

class _Add:
    """One tool, ``add``."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="add", description="Add.")]

    @hookimpl
    async def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        return ToolResult(call.id, "2") if call.name == "add" else None


def _script(request: Request) -> str | list[ToolCall]:
    """A tool call, then (once a result is in) an answer."""
    if any(m.role == "tool" for m in request.messages):
        return "It is 2."
    return [ToolCall(id="c1", name="add")]


def test_agent_mode_bounds_every_model_call_by_the_cap(tmp_path: Path) -> None:
    """``--agent``: each model call of the run (the decisions, the plan, the review) asks at
    most the cap; over the cap is the same 400, before any step."""
    backend = ScriptedBackend(_script)

    def build(kernel: Any) -> Any:
        return kernel.compose({"llm": backend, "tools": _Add()}, name="agentic", timeout=30)

    settings = GatewaySettings(auth=False, max_tokens=CAP,
                               agent=AgentOptions(max_steps=4, plan=True, reflect=True))
    gateway = Gateway(build, keys=KeyStore(tmp_path / "keys.sqlite3"), settings=settings,
                      kernel=lambda: isolated_kernel(loop_block_threshold=None))
    with LoopbackServer(gateway.app) as server, \
            server.client(timeout=30) as http:
        for extra, used in (({}, CAP), ({"max_tokens": 7}, 7)):
            before = len(backend.requests)
            response = http.post("/v1/chat/completions", json=_chat("1+1?", **extra))
            assert response.status_code == 200, response.text
            assert response.json()["aieng_agent"]["tools"] == ["add"]
            calls = backend.requests[before:]
            assert len(calls) >= 3  # a plan and two decisions at least
            assert {r.max_tokens for r in calls} == {used}
        before = len(backend.requests)
        for stream in (False, True):
            response = http.post("/v1/chat/completions",
                                 json=_chat("1+1?", max_tokens=10**30, stream=stream))
            assert response.status_code == 400
            assert response.json()["error"]["param"] == "max_tokens"
        assert len(backend.requests) == before
