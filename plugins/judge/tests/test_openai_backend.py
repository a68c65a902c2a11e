"""The same judge code against the ``openai`` component (aieng-openai) talking real HTTP to
an OpenAI-compatible server on loopback that this test starts: a test double (starlette
under uvicorn on 127.0.0.1) answering chat completions with scripted judge replies, and
recording the bodies it received (so the structured-output request is checked on the
wire)."""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import aieng_judge
import pytest
from aieng_judge import JudgeFailed

from aieng_core import Kernel
from aieng_core.registry import PluginInfo

starlette_apps = pytest.importorskip("starlette.applications")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("aieng_openai")

from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

pytestmark = pytest.mark.anyio

Register = Callable[..., AbstractContextManager[PluginInfo]]
MODEL = "judge-model"


class JudgeServer:
    """An OpenAI-compatible chat endpoint (a test double): each call pops the next
    scripted reply (the last one repeats) and its JSON body is recorded."""

    def __init__(self) -> None:
        self.replies: list[str] = ["{}"]
        self.bodies: list[dict[str, Any]] = []
        self.app = starlette_apps.Starlette(routes=[
            Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: HTTPRequest) -> JSONResponse:
        """Answer one chat completion with the next scripted reply."""
        body = await request.json()
        self.bodies.append(body)
        text = self.replies[min(len(self.bodies), len(self.replies)) - 1]
        return JSONResponse({
            "id": f"chatcmpl-{len(self.bodies)}", "object": "chat.completion",
            "created": 0, "model": body.get("model", MODEL),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[JudgeServer, str]]:
    """The double served by uvicorn on 127.0.0.1 (an OS-chosen port) in a thread."""
    double = JudgeServer()
    config = uvicorn.Config(double.app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off", access_log=False)
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = running.servers[0].sockets[0].getsockname()[1]
    try:
        yield double, f"http://127.0.0.1:{port}/v1"
    finally:
        running.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def judge_server(server: tuple[JudgeServer, str]) -> tuple[JudgeServer, str]:
    """The running double with no recorded calls."""
    double, url = server
    double.bodies.clear()
    return double, url


def pipeline_config(url: str, judge: dict[str, Any]) -> dict[str, Any]:
    """A judge-only pipeline whose backend is the ``openai`` component at ``url``."""
    return {"pipeline": {"name": "judged-over-http", "stages": ["judge"]},
            "components": {"remote": {"use": "openai", "base_url": url, "model": MODEL,
                                      "api_key": "sk-test", "backoff_base": 0.01},
                           "grader": judge}}


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_rubric_over_http_with_retry(aieng_kernel: Kernel, register_plugin: Register,
                                           judge_server: tuple[JudgeServer, str]) -> None:
    """A prose reply then a fenced JSON one: the rubric judge retries over HTTP with the
    parse error in the conversation, and the schema went out as ``response_format``."""
    double, url = judge_server
    double.replies = ["The answer looks right to me.",
                      '```json\n{"score": "5", "rationale": "Correct."}\n```']
    with register_plugin(importlib.import_module("aieng_openai"), "openai"), \
            register_plugin(aieng_judge, "judge"):
        pipeline = aieng_kernel.pipeline(pipeline_config(
            url, {"use": "rubric", "criteria": ["accuracy"]}))
        async with pipeline:
            result = await pipeline.run("Capital of France?", reference="Paris")
    assert [(s.name, s.value, s.rationale, s.judge) for s in result.scores] == [
        ("rubric.accuracy", 5.0, "Correct.", "grader")]
    assert len(double.bodies) == 2
    first, retry = double.bodies
    assert first["response_format"]["type"] == "json_schema"
    schema = first["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["score"]["enum"] == ["1", "2", "3", "4", "5"]
    assert first["temperature"] == 0.0
    assert [m["role"] for m in retry["messages"]] == ["system", "user", "assistant", "user"]
    assert "no score found" in retry["messages"][-1]["content"]


async def test_pairwise_and_failure_over_http(aieng_kernel: Kernel, register_plugin: Register,
                                              judge_server: tuple[JudgeServer, str]) -> None:
    """The pairwise judge asks both orders over HTTP; a server that always answers "A"
    (position bias) gives an inconsistent tie. Unreadable replies end in judge.failed."""
    double, url = judge_server
    double.replies = ['{"winner": "A", "rationale": "first is better"}']
    with register_plugin(importlib.import_module("aieng_openai"), "openai"), \
            register_plugin(aieng_judge, "judge"):
        pipeline = aieng_kernel.pipeline(pipeline_config(url, {"use": "pairwise"}))
        async with pipeline:
            result = await pipeline.run("Capital of France?", reference="Paris")
        assert {s.name: s.value for s in result.scores} == {"pairwise.win": 0.5,
                                                            "pairwise.consistent": 0.0}
        assert len(double.bodies) == 2
        double.replies = ["???"]
        failing = aieng_kernel.pipeline(pipeline_config(
            url, {"use": "rubric", "criteria": ["clarity"], "retries": 1}))
        async with failing:
            failed_run = await failing.run("Capital of France?")
    assert not failed_run.scores
    failures = [e for e in failed_run.events if isinstance(e, JudgeFailed)]
    assert [(f.metric, f.attempts, f.answer) for f in failures] == [
        ("rubric.clarity", 2, "???")]
    assert json.loads(json.dumps(double.bodies[-1]))["model"] == MODEL
