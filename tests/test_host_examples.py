"""The host programs of ``examples/hosts/`` run as a user's program would: each one as a
separate process, from a folder whose path holds spaces and non-ASCII letters, with a proxy
set, ``HOME`` and the cache folders pointed at fresh folders, ``LANG=C``, and a socket guard
that refuses (and records) every connection that is not to loopback. docs/embedding.md
shows only code these programs hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Delta, Hit, Query, Request
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Message

from aieng_core import Kernel, Pipeline
from aieng_core.testing import ScriptedBackend

ROOT = Path(__file__).resolve().parents[1]
HOSTS = ROOT / "examples" / "hosts"
PAGE = ROOT / "docs" / "embedding.md"
QUESTION = "What is reciprocal rank fusion?"

#: Every host program, and the test below that runs it.
TESTED = {"trio_host": "test_the_trio_host", "sync_host": "test_the_sync_host",
          "process_host": "test_the_process_host", "logging_host": "test_the_logging_host",
          "starlette_host": "test_the_starlette_host_under_uvicorn"}

#: Loaded first by every Python process started with it on PYTHONPATH (the workers of the
#: process pool too): refuses any connection or name lookup that is not loopback, and
#: records it; at exit, records the heavy libraries the program imported.
GUARD = '''
import atexit, ipaddress, os, socket, sys

_LOG = os.environ["HOST_TEST_GUARD_LOG"]
_LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


def _note(text):
    with open(_LOG, "a", encoding="utf-8") as out:
        out.write(text + "\\n")


def _loopback(host):
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host is None or host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _checked(original):
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            _note(f"connect {address!r}")
            raise OSError(f"network refused by the test guard: {address!r}")
        return original(self, address)
    return connect


socket.socket.connect = _checked(socket.socket.connect)
socket.socket.connect_ex = _checked(socket.socket.connect_ex)
_getaddrinfo = socket.getaddrinfo


def _literal(host):
    try:
        ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    return True


def getaddrinfo(host, *args, **kwargs):
    if not _loopback(host) and not _literal(host):  # an address is no lookup: connect checks
        _note(f"getaddrinfo {host!r}")
        raise socket.gaierror(f"name lookup refused by the test guard: {host!r}")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = getaddrinfo


@atexit.register
def _heavy():
    for name in ("torch", "transformers", "tantivy", "onnxruntime", "sentence_transformers"):
        if name in sys.modules:
            _note(f"imported {name}")
'''


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host's folder, laid out as the repository root for the examples (copies of docs/,
    the example pipelines and the host programs), its path holding a space and ü."""
    folder = tmp_path_factory.mktemp("hosts") / "my host app ü"
    shutil.copytree(ROOT / "docs", folder / "docs")
    for name in ("pipelines", "hosts"):
        shutil.copytree(ROOT / "examples" / name, folder / "examples" / name)
    guard = folder / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD, encoding="utf-8")
    return folder


def _env(scratch: Path) -> dict[str, str]:
    """The host's environment: a proxy that cannot be reached, fresh HOME, cache and temp
    folders, the C locale, the network guard, and no aieng variables."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("AIENG_") and key.upper() not in ("NO_PROXY",)}
    for name in ("home", "cache", "tmp"):
        (scratch / name).mkdir(exist_ok=True)
    env.update({
        "OMP_NUM_THREADS": "1", "LANG": "C", "LC_ALL": "C",
        "HTTP_PROXY": "http://proxy.invalid:3128", "HTTPS_PROXY": "http://proxy.invalid:3128",
        "http_proxy": "http://proxy.invalid:3128", "https_proxy": "http://proxy.invalid:3128",
        "HOME": str(scratch / "home"), "XDG_CACHE_HOME": str(scratch / "cache"),
        "TMPDIR": str(scratch / "tmp"),
        "PYTHONPATH": os.pathsep.join([str(scratch / "guard"),
                                       *filter(None, [os.environ.get("PYTHONPATH")])]),
        "HOST_TEST_GUARD_LOG": str(scratch / "guard.log"),
    })
    return env


def _guard_log(scratch: Path) -> list[str]:
    log = scratch / "guard.log"
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def _run(scratch: Path, name: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/hosts/NAME.py`` (its copy in the host's folder) as its docstring
    says, from the host's folder; it must succeed, touch no network, import no heavy
    library and write nothing under HOME or the cache folder."""
    (scratch / "guard.log").unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, str(scratch / "examples" / "hosts" / f"{name}.py")], cwd=scratch,
        env=_env(scratch), capture_output=True, text=True, encoding="utf-8", timeout=60,
        check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _guard_log(scratch) == []
    assert _written(scratch) == []
    return done


def _written(scratch: Path) -> list[Path]:
    """What the programs left in the host's HOME and cache folder."""
    return [path for name in ("home", "cache") for path in (scratch / name).rglob("*")]


def _answers(out: str) -> list[str]:
    return [line[3:] for line in out.splitlines() if line.startswith("A: ")]


def test_every_host_program_has_its_test() -> None:
    """Each program of examples/hosts/ is run by the test this file names for it (a new
    program without one fails here)."""
    assert {path.stem for path in HOSTS.glob("*.py")} == set(TESTED)
    assert all(name in globals() for name in TESTED.values())


def test_the_guard_refuses_the_network(scratch: Path) -> None:
    """The socket guard the programs run under refuses and records a connection that is
    not to loopback and a name lookup (else the tests below could not fail), and lets
    loopback through."""
    (scratch / "guard.log").unlink(missing_ok=True)
    code = textwrap.dedent("""
        import socket
        server = socket.create_server(("127.0.0.1", 0))
        socket.create_connection(server.getsockname(), timeout=5).close()
        try:
            socket.create_connection(("192.0.2.1", 80), timeout=5)
        except OSError as exc:
            print("refused:", exc)
        try:
            socket.getaddrinfo("example.com", 443)
        except OSError as exc:
            print("refused:", exc)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=scratch, env=_env(scratch),
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "refused: network refused by the test guard: ('192.0.2.1', 80)",
        "refused: name lookup refused by the test guard: 'example.com'"]
    assert _guard_log(scratch) == ["connect ('192.0.2.1', 80)", "getaddrinfo 'example.com'"]


def test_the_trio_host(scratch: Path) -> None:
    """On trio: indexes the docs, answers two questions in the host's nursery, streams an
    answer whose pieces make the run's answer."""
    out = _run(scratch, "trio_host").stdout
    [indexed] = re.findall(r"^indexed (\d+)$", out, re.MULTILINE)
    assert int(indexed) == len(list((ROOT / "docs").glob("*.md")))
    answers = _answers(out)
    assert len(answers) == 2 and all(answer.strip() for answer in answers)
    assert re.search(r"^streamed [1-9]\d* pieces: True$", out, re.MULTILINE)
    assert "on trio: True" in out


def test_the_sync_host(scratch: Path) -> None:
    """Plain functions: two ``anyio.run`` loops one after another give the same answer, and
    four questions from a thread pool through one portal are answered alike."""
    out = _run(scratch, "sync_host").stdout
    assert "two loops, same answer: True" in out
    assert "portal agrees with anyio.run: True" in out
    answers = _answers(out)
    assert len(answers) == 4 and all(answer.strip() for answer in answers)
    assert len(set(answers)) == 4


def test_the_process_host(scratch: Path) -> None:
    """Two spawned workers each open the pipeline and answer their share; every RunResult
    comes back pickled, with its events, and no two runs share an id."""
    out = _run(scratch, "process_host").stdout
    assert "worker processes: 2" in out
    answers = _answers(out)
    assert len(answers) == 6 and all(answer.strip() for answer in answers)
    assert "error:" not in out
    runs = re.findall(r"^   run (\S+) events (\d+) sources \['docs/", out, re.MULTILINE)
    assert len(runs) == 6 and len({run_id for run_id, _ in runs}) == 6
    assert all(int(events) >= 2 for _, events in runs)


def test_the_process_hosts_worker_sends_a_failure_back_as_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process host's worker (docs/embedding.md, "Processes") sends a question that
    failed back as the error itself: a ``HookError`` crosses the spawn pool whole, its
    stage, component and hook included, and the worker answers the rest of its share.
    The model server is a loopback port that nothing listens on (refused at once)."""
    with socket.socket() as probe:  # a free port, closed again: connecting is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "down.toml"
    path.write_text(textwrap.dedent(f"""\
        [pipeline]
        name = "down"
        stages = ["generate"]

        [components.answer]
        use = "openai"
        base_url = "http://127.0.0.1:{port}/v1"
        model = "m"
        max_retries = 0
        """), encoding="utf-8")
    monkeypatch.syspath_prepend(str(HOSTS))  # the spawned worker imports it by name too
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    import process_host

    from aieng_core import HookError

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        pid, answers = pool.submit(process_host.answer_share, str(path),
                                   ["one", "two"]).result(timeout=60)
    assert pid != os.getpid() and len(answers) == 2
    for error in answers:
        assert isinstance(error, HookError), error
        assert (error.stage, error.plugin, error.hook) == ("generate", "answer",
                                                            "aieng_generate")
        assert str(error).startswith("stage 'generate', hook aieng_generate of 'answer'")


def test_the_logging_host(scratch: Path) -> None:
    """aieng's log line (a failing subscriber) goes through the host's stdlib handler and
    format, under an ``aieng`` logger name and with the run's id; the host's own line
    written during the run carries that id too; nothing reaches standard output."""
    done = _run(scratch, "logging_host")
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    [answered] = [line for line in lines if line.startswith("INFO host: event='host.answered'")]
    [run_id] = re.findall(r"run_id='([^']+)'", answered)
    [failed] = [line for line in lines if "bus.subscriber_failed" in line]
    assert failed.startswith("WARNING aieng_core.bus: event='bus.subscriber_failed'")
    assert f"run_id='{run_id}'" in failed and "subscriber='audit'" in failed
    [first] = [line for line in lines if "host.first_piece" in line]
    assert f"run_id='{run_id}'" in first and "pipeline='docs-qa'" in first
    assert not [line for line in lines if line.startswith("{")]  # no JSON of aieng's own
    # The failure is all aieng logged: a run that goes well writes nothing.
    assert [line for line in lines if " aieng" in line.split(":")[0]] == [failed]


# ---------------------------------------------------------------------------- loops


def test_a_kernel_enters_again_in_a_later_loop_and_its_old_pipelines_are_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One Kernel object, entered in ``asyncio.run`` twice and then on trio, answers each
    time; a pipeline built in an earlier loop's block refuses to run in a later one with
    the documented error (docs/embedding.md, "one loop per call")."""
    monkeypatch.chdir(ROOT)
    kernel = Kernel()
    kept: list[Pipeline] = []

    async def ask() -> str:
        async with kernel:
            pipeline = kernel.load_pipeline("examples/pipelines/docs-qa.toml")
            kept.append(pipeline)
            return (await pipeline.run(QUESTION)).answer

    answers = [asyncio.run(ask()), asyncio.run(ask()), anyio.run(ask, backend="trio")]
    assert answers[0] and len(set(answers)) == 1

    async def reuse() -> None:
        async with kernel:
            await kept[0].run(QUESTION)

    with pytest.raises(RuntimeError, match="pipeline 'docs-qa' is closed"):
        anyio.run(reuse, backend="trio")


class _Waiting:
    """A retriever that waits forever, telling the test when it started and how it ended."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.cancelled = False

    @hookimpl
    async def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        self.started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        return []


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_hosts_cancel_scope_stops_a_run_waiting_on_a_component() -> None:
    """A run in the host's task group, cancelled by the host's scope while a component
    waits, ends there: the component sees the cancellation and the host's scope catches
    it (docs/embedding.md, "Event loops")."""
    waiting = _Waiting()
    async with Kernel() as kernel:
        pipeline = kernel.compose({"slow": waiting, "llm": ScriptedBackend(["never"])})
        with anyio.fail_after(30), anyio.CancelScope() as host:  # fail_after: no hang
            async with anyio.create_task_group() as group:
                group.start_soon(pipeline.run, QUESTION)
                await waiting.started.wait()
                host.cancel()
        assert host.cancelled_caught
        assert waiting.cancelled


# ---------------------------------------------------------------------------- Starlette


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_host_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_starlette_host_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's lifespan builds the kernel and pipeline; ``/ask`` answers from them, the
    mounted gateway answers on the same loop (its running() entered by the host's
    lifespan), a request without a question is a 422, and the pipeline is closed after."""
    monkeypatch.chdir(ROOT)
    app = _module(HOSTS / "starlette_host.py").create_app()
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        asked = await client.get("/ask", params={"q": QUESTION})
        assert asked.status_code == 200, asked.text
        body = asked.json()
        assert body["answer"] and body["sources"][0].startswith("docs/")
        assert (await client.get("/ask")).status_code == 422
        health = await client.get("/openai/healthz")
        assert health.json() == {"status": "ok", "pipeline": "docs-qa"}
        chat = await client.post("/openai/v1/chat/completions", json={
            "model": "docs-qa", "messages": [{"role": "user", "content": QUESTION}]})
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"] == body["answer"]
        pipeline = app.state.pipeline
        assert app.state.gateway.pipeline.kernel is app.state.kernel is pipeline.kernel
    with pytest.raises(RuntimeError, match="is closed"):  # the lifespan closed it
        await pipeline.run(QUESTION)


def _events(text: str) -> list[tuple[str, Any]]:
    """A server-sent event stream's events: (name, decoded data), ``message`` unnamed."""
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            fields = dict(line.split(": ", 1) for line in block.splitlines())
            events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_starlette_host_streams_the_answer_in_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``/ask/stream`` answers server-sent events: the pieces add up to ``/ask``'s answer,
    and the last event, ``end``, carries the run's own id and status. (httpx's
    ASGITransport hands the body over once complete: the streaming itself, a client gone
    mid-stream, is tested under uvicorn and with an ASGI server of the test's below.)"""
    monkeypatch.chdir(ROOT)
    app = _module(HOSTS / "starlette_host.py").create_app()
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        streamed = await client.get("/ask/stream", params={"q": QUESTION})
        asked = (await client.get("/ask", params={"q": QUESTION})).json()
        assert (await client.get("/ask/stream")).status_code == 422
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    *pieces, (name, end) = _events(streamed.text)
    assert len(pieces) > 1 and {piece[0] for piece in pieces} == {"message"}
    assert "".join(text for _, text in pieces) == asked["answer"]
    assert name == "end" and end["status"] == "ok"
    assert end["run_id"] and end["run_id"] != asked["run_id"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def _server(scratch: Path, port: int) -> Iterator[subprocess.Popen[str]]:
    server = subprocess.Popen(
        [sys.executable, str(scratch / "examples" / "hosts" / "starlette_host.py"),
         "--port", str(port)], cwd=scratch, env=_env(scratch), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, encoding="utf-8")
    try:
        yield server
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def test_the_starlette_host_under_uvicorn(scratch: Path) -> None:
    """Served by uvicorn on loopback with a proxy set: ``/ask``, ``/ask/stream`` (its events
    add up to ``/ask``'s answer; a client that leaves after two events costs no error) and
    the mounted gateway answer, and on Ctrl-C the server runs the lifespan's shutdown and the process exits
    on its own with status 0, leaving nothing running."""
    (scratch / "guard.log").unlink(missing_ok=True)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with _server(scratch, port) as server, httpx.Client(base_url=base, trust_env=False,
                                                        timeout=30) as client:
        deadline = time.monotonic() + 30  # a wait for start-up, not a timing assertion
        while True:
            try:
                asked = client.get("/ask", params={"q": QUESTION})
                break
            except httpx.TransportError:
                assert server.poll() is None, server.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert asked.status_code == 200 and asked.json()["answer"]
        streamed = _events(client.get("/ask/stream", params={"q": QUESTION}).text)
        assert "".join(text for name, text in streamed if name == "message") == \
            asked.json()["answer"] and streamed[-1][0] == "end"
        with client.stream("GET", "/ask/stream", params={"q": QUESTION}) as gone:
            lines = gone.iter_lines()  # two events read, then the connection is closed
            read = [next(lines) for _ in range(4)]
        assert read == [f"data: {json.dumps(streamed[0][1])}", "",
                        f"data: {json.dumps(streamed[1][1])}", ""]
        chat = client.post("/openai/v1/chat/completions", json={
            "model": "docs-qa", "messages": [{"role": "user", "content": QUESTION}]})
        assert chat.json()["choices"][0]["message"]["content"] == asked.json()["answer"]
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=20)
        assert server.returncode == 0, err[-3000:]
        assert "Application shutdown complete" in err
        assert "Traceback" not in err and "ERROR" not in err, err[-3000:]
    assert _guard_log(scratch) == []
    assert _written(scratch) == []


class _Stalling:
    """A streaming backend whose first answer stalls after two pieces until it is stopped
    (a slow model, a client that leaves meanwhile); later answers end at once."""

    def __init__(self) -> None:
        self.calls = 0
        self.stopped = anyio.Event()  # the first answer was cancelled or closed early

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta]:
        self.calls += 1
        return self._stream(stall=self.calls == 1)

    async def _stream(self, stall: bool) -> AsyncIterator[Delta]:
        try:
            yield Delta(text="one", index=0)
            yield Delta(text=" two", index=1)
            if stall:
                await anyio.sleep_forever()
            yield Delta(text=" three", index=2, finish_reason="stop")
        except BaseException:
            self.stopped.set()
            raise


def _stalling_app(backend: object) -> Starlette:
    """The host's ``/ask/stream`` endpoint on a pipeline answering from ``backend``."""
    ask_stream = _module(HOSTS / "starlette_host.py").ask_stream

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with Kernel() as kernel, kernel.compose({"llm": backend}) as pipeline:
            app.state.pipeline = pipeline
            yield

    return Starlette(routes=[Route("/ask/stream", ask_stream)], lifespan=lifespan)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_client_gone_mid_stream_cancels_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Served by an ASGI server of the test's own (any loop): the client takes two events,
    stops reading while the second is written, and disconnects; the run is cancelled there
    (the model stops), the app returns with no error, nothing is logged (no generator left
    open across a yield, closed later in another task), and the next request streams to
    its end."""
    backend = _Stalling()
    app = _stalling_app(backend)

    async def serve(gone: anyio.Event | None) -> list[bytes]:
        sent: list[bytes] = []
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": "1.1", "method": "GET", "scheme": "http", "path":
                 "/ask/stream", "raw_path": b"/ask/stream", "root_path": "",
                 "query_string": b"q=hi", "headers": [], "server": ("127.0.0.1", 80)}
        requested = False

        async def receive() -> Message:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await (gone.wait() if gone is not None else anyio.sleep_forever())
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message.get("body", b""))
            if gone is not None and len(sent) == 3:  # the start, two events: the client
                gone.set()  # stopped reading (the write waits) and went away
                await anyio.sleep_forever()

        with anyio.fail_after(30):  # no hang
            await app(scope, receive, send)
        return sent

    async with app.router.lifespan_context(app):
        left = await serve(anyio.Event())
        gc.collect()  # an async generator left open would be finalized now
        await anyio.lowlevel.checkpoint()
        assert backend.stopped.is_set()
        assert left[1:] == [b'data: "one"\n\n', b'data: " two"\n\n']
        whole = b"".join(await serve(None)).decode()
    assert [text for _, text in _events(whole)][:3] == ["one", " two", " three"]
    assert _events(whole)[-1][0] == "end"
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.anyio
async def test_a_run_failing_after_the_stream_began_ends_it_with_an_error_event() -> None:
    """The status line is sent before the run answers: a run that fails then ends the
    stream with an ``error`` event naming the stage and component, not a broken body."""
    app = _stalling_app(ScriptedBackend(fail_with=RuntimeError("model down")))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        streamed = await client.get("/ask/stream", params={"q": "hi"})
    [(name, data)] = _events(streamed.text)
    assert streamed.status_code == 200 and name == "error"
    assert data["error"].startswith("stage 'generate', hook aieng_stream of 'llm'")
    assert data["error"].endswith("RuntimeError: model down")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # uvicorn runs asyncio
async def test_a_client_gone_mid_stream_under_uvicorn(caplog: pytest.LogCaptureFixture) -> None:
    """Under a real uvicorn on loopback (asyncio): a client that reads two events and
    closes its connection cancels the run (the model stops), the server logs no error and
    no traceback, and the next request streams to its end."""
    backend = _Stalling()
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(_stalling_app(backend), host="127.0.0.1",
                                           port=port, log_config=None, lifespan="on"))
    url = f"http://127.0.0.1:{port}/ask/stream"
    caplog.set_level(logging.INFO)
    with anyio.fail_after(30):  # no hang
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve)
            while not server.started:
                await anyio.sleep(0.01)
            async with httpx.AsyncClient(trust_env=False) as client:
                async with client.stream("GET", url, params={"q": "hi"}) as gone:
                    lines = gone.aiter_lines()
                    read = [await anext(lines) for _ in range(4)]
                await backend.stopped.wait()
                whole = await client.get(url, params={"q": "hi"})
            server.should_exit = True
    assert read == ['data: "one"', "", 'data: " two"', ""]
    assert [text for _, text in _events(whole.text)][:3] == ["one", " two", " three"]
    assert not [record for record in caplog.records
                if record.levelno >= logging.WARNING or record.exc_info], caplog.text


# ---------------------------------------------------------------------------- the page


def _python_blocks(text: str) -> list[str]:
    return [textwrap.dedent(code) for code in
            re.findall(r"^ *```python\n(.*?)^ *```", text, re.DOTALL | re.MULTILINE)]


def test_the_page_shows_only_code_the_programs_run() -> None:
    """Every Python block of docs/embedding.md is an excerpt of a host program (run above),
    every program the page's commands name exists, and each program is on the page."""
    text = PAGE.read_text(encoding="utf-8")
    sources = {path.stem: path.read_text(encoding="utf-8") for path in HOSTS.glob("*.py")}
    blocks = _python_blocks(text)
    assert blocks
    for block in blocks:
        assert any(block.strip() in source for source in sources.values()), block[:300]
    named = set(re.findall(r"examples/hosts/(\w+)\.py", text))
    assert named == set(sources)

