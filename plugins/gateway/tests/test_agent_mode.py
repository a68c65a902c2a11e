"""Agent mode (``aieng serve --agent``): a chat completion is an agent run over the pipeline.

A real loopback server over the kit's ``ScriptedBackend`` (its replies are tool calls until
a tool result is in the conversation) and a tool double; JSON and streamed answers, read
by httpx and by the ``openai`` SDK; cancellation of the tools by a client that goes away.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from _support import LoopbackServer, free_port, post_raw, wait_healthy
from aieng_gateway import Gateway, GatewaySettings, KeyStore
from aieng_gateway._cli import serve
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Request, ToolCall, ToolResult, ToolSpec, Usage
from click.testing import CliRunner

from aieng_core.agent import AgentOptions
from aieng_core.testing import ScriptedBackend, isolated_kernel
from aieng_core.testing.reference import RegexRedactGuard

#: The usage of every model call of the scripted backend.
USAGE = Usage(prompt_tokens=7, completion_tokens=3)
#: A tool result that tries to break out of an SSE comment into a data event.
SNEAKY = "one\ndata: {\"injected\": 1}\r\ntwo\u2028data: {\"injected\": 2}\rthree"


class Tools:
    """The agent's tool double: ``add(a, b)``; ``wait()``, which sleeps (recording that it
    started, and whether it was cancelled); ``echo(text)``; ``contact()``, an address."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.calls: list[str] = []

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        integers = {"type": "object", "properties": {"a": {"type": "integer"},
                                                     "b": {"type": "integer"}},
                    "required": ["a", "b"]}
        return [ToolSpec(name="add", description="Add two integers.", parameters=integers),
                ToolSpec(name="wait", description="Wait a long time."),
                ToolSpec(name="echo", description="Say it back.",
                         parameters={"type": "object",
                                     "properties": {"text": {"type": "string"}}}),
                ToolSpec(name="contact", description="The support address.")]

    @hookimpl
    async def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        self.calls.append(call.name)
        if call.name == "add":
            return ToolResult(call.id, str(call.arguments["a"] + call.arguments["b"]))
        if call.name == "echo":
            return ToolResult(call.id, call.arguments["text"])
        if call.name == "contact":
            return ToolResult(call.id, "write to jane@example.com")
        if call.name == "wait":
            self.started.set()
            try:
                await anyio.sleep(30)
            except anyio.get_cancelled_exc_class():
                self.cancelled.set()
                raise
            return ToolResult(call.id, "waited")
        return None


def script(request: Request) -> str | list[ToolCall]:
    """The model: by the task (the first user turn), a tool call until a tool result has
    come, then an answer with the last result. ``count`` never answers (a new call each
    step); ``wait`` waits; ``sneaky`` echoes :data:`SNEAKY`; ``contact`` asks for it."""
    task = next(m.content for m in request.messages if m.role == "user")
    results = [m.content for m in request.messages if m.role == "tool"]
    if "count" in task:
        return [ToolCall(id=f"c{len(results)}", name="add",
                         arguments={"a": len(results), "b": 1})]
    if results:
        return f"The answer is {results[-1]}."
    if "wait" in task:
        return [ToolCall(id="w", name="wait")]
    if "sneaky" in task:
        return [ToolCall(id="s", name="echo", arguments={"text": SNEAKY})]
    if "contact" in task:
        return [ToolCall(id="m", name="contact")]
    if "add" in task:
        return [ToolCall(id="call_1", name="add", arguments={"a": 40, "b": 2})]
    return "No tool needed."


def agent_gateway(tmp: Path, tools: Tools, *, guard: bool = False,
                  options: AgentOptions | None = None) -> Gateway:
    """A gateway in agent mode over ScriptedBackend + :class:`Tools` (+ an input and output
    guard blocking ``forbidden`` and redacting addresses)."""

    def build(kernel: Any) -> Any:
        components: dict[str, Any] = {"llm": ScriptedBackend(script, usage=USAGE),
                                      "tools": tools}
        if guard:
            components["guard"] = RegexRedactGuard(blocked_phrase="forbidden")
        return kernel.compose(components, name="agentic", timeout=60)

    settings = GatewaySettings(agent=options or AgentOptions(max_steps=4))
    return Gateway(build, keys=KeyStore(tmp / "keys.sqlite3"), settings=settings,
                   kernel=lambda: isolated_kernel(loop_block_threshold=None))


@pytest.fixture(scope="module")
def tools() -> Tools:
    return Tools()


@pytest.fixture(scope="module")
def agent_served(tmp_path_factory: pytest.TempPathFactory,
                 tools: Tools) -> Iterator[tuple[Gateway, LoopbackServer, str]]:
    """A running agent-mode gateway, its server and a key (with a generous token limit)."""
    gateway = agent_gateway(tmp_path_factory.mktemp("agent"), tools)
    assert gateway.keys is not None
    key, _ = gateway.keys.create("agent-tests", tpm=100_000)
    with LoopbackServer(gateway.app) as server:
        yield gateway, server, key


@pytest.fixture()
def client(agent_served: tuple[Gateway, LoopbackServer, str]) -> Iterator[httpx.Client]:
    _, server, key = agent_served
    with server.client(timeout=30,
                       headers={"authorization": f"Bearer {key}"}) as http:
        yield http


def _chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "agentic", "messages": [{"role": "user", "content": text}], **extra}


def _events(text: str) -> tuple[list[str], list[dict[str, Any]]]:
    """A stream's comment lines and its data events (``[DONE]`` left out)."""
    comments = [line for line in text.splitlines() if line.startswith(":")]
    data = [json.loads(line[6:]) for line in text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]
    return comments, data


def test_json_answer_is_the_agents_final_answer(client: httpx.Client) -> None:
    """The tool ran on the server; the reply is the final answer, the usage the run's total
    (two model calls), ``finish_reason`` stop, and ``aieng_agent`` says how it went."""
    response = client.post("/v1/chat/completions", json=_chat("please add 40 and 2"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"] == {"role": "assistant",
                                             "content": "The answer is 42."}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 14, "completion_tokens": 6, "total_tokens": 20}
    agent = body["aieng_agent"]
    assert {k: agent[k] for k in ("status", "steps", "tools")} == {
        "status": "answered", "steps": 2, "tools": ["add"]}
    # One id for the response and the agent run: feedback on it reaches the run's events.
    assert agent["reason"] and agent["run_id"] == body["id"]
    assert body["id"] == response.headers["x-aieng-run-id"]


def test_a_step_budget_ends_with_length(client: httpx.Client) -> None:
    """A run the step budget ends without an answer: ``length``, an empty answer, the
    status ``max_steps`` and every tool called, in order."""
    body = client.post("/v1/chat/completions", json=_chat("count forever")).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == ""
    assert body["aieng_agent"]["status"] == "max_steps"
    assert body["aieng_agent"]["tools"] == ["add"] * 4
    assert body["usage"]["total_tokens"] == 4 * USAGE.total_tokens


def test_stream_sends_steps_as_comments_then_the_answer(client: httpx.Client) -> None:
    """A stream: one SSE comment per finished step, then the answer, the finish chunk
    (with ``aieng_agent``) and the usage chunk when asked for."""
    response = client.post("/v1/chat/completions", json=_chat(
        "add please", stream=True, stream_options={"include_usage": True}))
    assert response.status_code == 200, response.text
    comments, data = _events(response.text)
    assert comments == [': step 1 add({"a":40,"b":2}) -> 42', ": step 2 answer"]
    assert response.text.index(": step 2") < response.text.index("data: ")
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in data[:-1]) \
        == "The answer is 42."
    assert data[-2]["choices"][0]["finish_reason"] == "stop"
    assert data[-2]["aieng_agent"]["tools"] == ["add"]
    assert data[-1]["choices"] == [] and data[-1]["usage"]["total_tokens"] == 20
    assert response.text.endswith("data: [DONE]\n\n")


def test_a_tool_result_cannot_break_out_of_its_comment(client: httpx.Client) -> None:
    """A tool result holding line breaks (U+2028 too, where httpx's ``iter_lines`` splits)
    and ``data:`` stays inside one comment line: the client reads no event the server did
    not send."""
    response = client.post("/v1/chat/completions", json=_chat("be sneaky", stream=True))
    comments, data = _events(response.text)
    assert all(event["object"] == "chat.completion.chunk" for event in data)
    assert len(comments) == 2 and comments[0].startswith(": step 1 echo(")
    assert "data: {" in comments[0]  # inside the comment, cut short, on one line
    assert all(len(c) < 200 for c in comments)


@pytest.mark.parametrize(("field", "value"), [
    ("tools", [{"type": "function", "function": {"name": "mine"}}]),
    ("tool_choice", "required"),
    ("tool_choice", "none"),
    ("logprobs", True),
])
def test_client_tools_and_logprobs_are_refused(client: httpx.Client, field: str,
                                               value: Any) -> None:
    """The agent's tools are the server's: a client's own ``tools``, a ``tool_choice``
    other than ``auto`` and ``logprobs`` are a 422 naming the field (streamed too)."""
    for stream in (False, True):
        response = client.post("/v1/chat/completions",
                               json=_chat("add 1", stream=stream, **{field: value}))
        assert response.status_code == 422, response.text
        assert response.json()["error"]["param"] == field


def test_tool_choice_auto_is_accepted(client: httpx.Client) -> None:
    """``tool_choice: "auto"`` is what the agent does anyway (some SDKs always send it)."""
    response = client.post("/v1/chat/completions",
                           json=_chat("add it", tool_choice="auto", tools=[]))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "The answer is 42."


def test_the_keys_bucket_is_charged_the_runs_usage(
        agent_served: tuple[Gateway, LoopbackServer, str]) -> None:
    """A key's token bucket is charged what all the run's model calls used (4 steps of
    10 tokens), not the up-front reservation nor one call's usage (the clock stands still:
    no refill)."""
    gateway, server, _ = agent_served
    assert gateway.keys is not None
    key, record = gateway.keys.create("bucket", tpm=1000)
    gateway.keys.refresh(force=True)
    clock = gateway.limits.clock
    gateway.limits.clock = lambda: 0.0
    try:
        response = httpx.post(f"{server.url}/v1/chat/completions", json=_chat("count"),
                              headers={"authorization": f"Bearer {key}"}, timeout=30,
                              trust_env=False)
    finally:
        gateway.limits.clock = clock
    assert response.json()["usage"]["total_tokens"] == 4 * USAGE.total_tokens
    assert gateway.limits._tokens[record.id].level == 1000 - 4 * USAGE.total_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_goes_away_cancels_the_tools(
        agent_served: tuple[Gateway, LoopbackServer, str], tools: Tools,
        stream: bool) -> None:
    """A client that disconnects while a tool runs cancels the agent run: the tool is
    cancelled (nothing keeps running for nobody) and the request is logged as 499."""
    gateway, server, key = agent_served
    tools.started.clear()
    tools.cancelled.clear()
    before = gateway.requests[("/v1/chat/completions", 499)]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        post_raw(sock, key, _chat("wait for it", stream=stream))
        assert tools.started.wait(10)
    assert tools.cancelled.wait(10)
    deadline = time.monotonic() + 10
    while gateway.requests[("/v1/chat/completions", 499)] == before \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gateway.requests[("/v1/chat/completions", 499)] == before + 1


def test_the_openai_sdk_reads_both_answers(
        agent_served: tuple[Gateway, LoopbackServer, str]) -> None:
    """The ``openai`` SDK reads the JSON answer (``aieng_agent`` as an extra field) and the
    stream (skipping the step comments), usage chunk included."""
    import openai  # a test dependency (the root's dev extra)

    _, server, key = agent_served

    async def main() -> None:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=key, max_retries=0,
                                    http_client=server.async_client())
        messages: Any = [{"role": "user", "content": "add 40 and 2"}]
        whole = await client.chat.completions.create(model="agentic", messages=messages)
        assert whole.choices[0].message.content == "The answer is 42."
        assert whole.choices[0].finish_reason == "stop"
        assert whole.usage is not None and whole.usage.total_tokens == 20
        extra = whole.model_extra or {}
        assert extra["aieng_agent"]["tools"] == ["add"]
        stream = await client.chat.completions.create(
            model="agentic", messages=messages, stream=True,
            stream_options={"include_usage": True})
        text, finishes, usage = "", [], None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finishes.append(chunk.choices[0].finish_reason)
            usage = chunk.usage or usage
        assert text == "The answer is 42."
        assert finishes[-1] == "stop" and usage is not None and usage.total_tokens == 20
        await client.close()

    anyio.run(main)


def test_guards_block_and_comments_hide_tool_results(tmp_path: Path) -> None:
    """Behind guards: a blocked task ends with ``content_filter``; a stream's step
    comments name the tools only (a tool result may hold what the output guard redacts
    from the answer: here an address)."""
    tools = Tools()
    gateway = agent_gateway(tmp_path, tools, guard=True)
    assert gateway.keys is not None
    key, _ = gateway.keys.create("guarded")
    with LoopbackServer(gateway.app) as server, \
            server.client(timeout=30,
                          headers={"authorization": f"Bearer {key}"}) as http:
        blocked = http.post("/v1/chat/completions", json=_chat("a forbidden task")).json()
        streamed = http.post("/v1/chat/completions",
                             json=_chat("contact support", stream=True)).text
    assert blocked["choices"][0]["finish_reason"] == "content_filter"
    assert blocked["aieng_agent"]["status"] == "blocked"
    assert "jane@" not in streamed
    comments, data = _events(streamed)
    assert comments == [": step 1 contact(…) -> ok", ": step 2 answer"]
    assert data[0]["choices"][0]["delta"]["content"] == "The answer is write to [EMAIL]."


def test_a_pipeline_that_cannot_act_as_an_agent_is_a_502(tmp_path: Path) -> None:
    """No backend and no policy: the agent cannot decide a step; the client gets a 502
    saying so (JSON and stream), not an internal error."""

    def build(kernel: Any) -> Any:
        return kernel.compose({"tools": Tools()}, name="toolsonly")

    gateway = Gateway(build, settings=GatewaySettings(auth=False, agent=AgentOptions()),
                      kernel=lambda: isolated_kernel(loop_block_threshold=None))
    with LoopbackServer(gateway.app) as server, server.client(timeout=30) as http:
        for stream in (False, True):
            response = http.post("/v1/chat/completions", json=_chat("hi", stream=stream))
            assert response.status_code == 502, response.text
            assert response.json()["error"]["code"] == "agent_error"
            assert "no backend" in response.json()["error"]["message"]


def test_serve_agent_options_need_agent_and_finite_values(tmp_path: Path) -> None:
    """``--max-steps`` / ``--agent-timeout`` without ``--agent`` are a usage error (2), and
    a timeout that is not a finite number is one line (1), before anything starts."""
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "p"\n')
    runner = CliRunner()
    for option in (["--max-steps", "3"], ["--agent-timeout", "5"]):
        result = runner.invoke(serve, [str(pipeline), "--no-auth", *option])
        assert result.exit_code == 2 and f"{option[0]} needs --agent" in result.output
    result = runner.invoke(serve, [str(pipeline), "--no-auth", "--agent",
                                   "--agent-timeout", "nan"])
    assert result.exit_code == 1 and "timeout must be a positive finite number" \
        in result.output


def test_aieng_serve_agent_subprocess(served: tuple[Gateway, LoopbackServer], api_key: str,
                                      tmp_path: Path) -> None:
    """``aieng serve FILE --agent --max-steps 2``: the file's ``calculator`` tool runs on
    the server for a model (``openai`` → the module's test gateway, whose backend calls a
    tool whenever offered one) that never answers: two steps, then ``length``."""
    pipeline = tmp_path / "agent.toml"
    pipeline.write_text(
        '[pipeline]\nname = "relay"\ntimeout = 20.0\n\n[components.llm]\nuse = "openai"\n'
        f'base_url = "{served[1].url}/v1"\nmodel = "test"\napi_key_env = "UPSTREAM_KEY"\n'
        'max_retries = 0\n\n[components.calc]\nuse = "calculator"\n')
    port = free_port()
    env = dict(os.environ, UPSTREAM_KEY=api_key, OMP_NUM_THREADS="1",
               AIENG_LOG_LEVEL="WARNING")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "aieng"), "serve", str(pipeline), "--port",
         str(port), "--no-auth", "--no-monitor", "--feedback-db", str(tmp_path / "fb.db"),
         "--agent", "--max-steps", "2", "--agent-timeout", "60"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, base)
        body = httpx.post(f"{base}/v1/chat/completions", timeout=30, trust_env=False,
                          json={"messages": [{"role": "user", "content": "2+2?"}]}).json()
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
    assert body["choices"][0]["finish_reason"] == "length", body
    assert body["aieng_agent"]["status"] == "max_steps"
    assert body["aieng_agent"]["tools"] == ["calculate", "calculate"]
    assert b"(auth off, agent)" in err
