"""The testing kit in a host program on trio as on asyncio: the conformance suites' release
check sees trio's tasks, the suites run whole under trio, and the loopback server is
reached with proxy variables in the environment."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from aieng_hookspecs import PipelineContext, blocking, hookimpl

from aieng_core.builtins import MemoryOptions, MemoryRetriever
from aieng_core.kernel import Kernel
from aieng_core.testing.conformance import DEFAULT_CORPUS, RetrieverSuite, ToolSuite
from aieng_core.testing.conformance._resources import snapshot
from aieng_core.testing.loopback import LoopbackServer
from aieng_core.testing.reference import EchoTool

pytestmark = pytest.mark.anyio
BOTH = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


class Fixtures:
    """Stands in for pytest's ``request`` where a test calls the suite's test itself."""

    @staticmethod
    def getfixturevalue(name: str) -> object:
        return {"corpus": list(DEFAULT_CORPUS)}[name]


class Refreshing(MemoryRetriever):
    """A retriever that starts a background task when its pipeline opens (on the running
    backend, as a component does: ``create_task`` or trio's system nursery) and cancels it
    on close unless it ``keeps`` it."""

    def __init__(self, keeps: bool) -> None:
        super().__init__(MemoryOptions())
        self.keeps = keeps
        self.stop: Any = None  # cancels the task

    @hookimpl
    async def aieng_pipeline_open(self, context: PipelineContext) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio
            import trio

            scope = trio.CancelScope()

            async def refresh() -> None:
                with scope:
                    await trio.sleep_forever()

            trio.lowlevel.spawn_system_task(refresh, name="refresher")
            self.stop = scope.cancel
        else:
            self.stop = loop.create_task(asyncio.sleep(3600), name="refresher").cancel

    @hookimpl
    async def aieng_pipeline_close(self) -> None:
        if not self.keeps:
            self.stop()


async def _release_check(kernel: Kernel, component: Refreshing) -> None:
    """The retriever suite's release check on ``component``; a skip (a part it could not
    see) fails."""
    suite = RetrieverSuite()
    suite.release_grace = 0.2  # type: ignore[misc]  # what it keeps, it keeps for good
    before = snapshot()
    pipeline = suite.compose(kernel, component)
    try:
        await suite.test_releases_what_it_opened(before, component, pipeline,
                                                 Fixtures())  # type: ignore[arg-type]
    except pytest.skip.Exception as exc:
        pytest.fail(f"the release check did not check everything: {exc}")


@BOTH
async def test_the_release_check_names_a_task_kept_on_either_backend(
        aieng_kernel: Kernel) -> None:
    """A task a component keeps after its pipeline closed fails the check under trio as
    under asyncio (trio's tasks were not looked at: the check skipped instead)."""
    component = Refreshing(keeps=True)
    try:
        with pytest.raises(AssertionError,
                           match=r"Refreshing still holds .*task 'refresher'"):
            await _release_check(aieng_kernel, component)
    finally:
        if component.stop is not None:
            component.stop()


@BOTH
async def test_the_release_check_passes_a_tidy_component_on_either_backend(
        aieng_kernel: Kernel) -> None:
    """The component cancelling its task passes, having checked tasks too (no skip)."""
    await _release_check(aieng_kernel, Refreshing(keeps=False))


class Blocking(MemoryRetriever):
    """The built-in retriever with its search marked ``@blocking``: the kernel runs it in
    the backend's worker threads (anyio's pool; trio's thread cache under trio)."""

    @hookimpl
    @blocking
    def aieng_retrieve(self, query: Any, k: int) -> Any:
        return super().aieng_retrieve(query=query, k=k)


@BOTH
async def test_the_backends_idle_worker_threads_are_no_leak(aieng_kernel: Kernel) -> None:
    """A ``@blocking`` search leaves the backend's idle worker thread behind, which is the
    loop's, not the component's: under trio the check called trio's ``Trio thread 0`` a
    leak, failing every component with a ``@blocking`` impl."""
    suite = RetrieverSuite()
    before = snapshot()
    component = Blocking(MemoryOptions())
    pipeline = suite.compose(aieng_kernel, component)
    await suite.test_releases_what_it_opened(before, component, pipeline,
                                             Fixtures())  # type: ignore[arg-type]


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="file descriptors are read from /proc/self/fd (Linux)")
@BOTH
async def test_a_snapshot_sees_everything_on_either_backend() -> None:
    """On Linux, a snapshot taken under either backend leaves nothing unobserved."""
    assert snapshot().unobserved == ()


class TestMemoryRetrieverOnTrio(RetrieverSuite):
    """A whole suite on trio, chosen as plugin-authors.md says: an ``anyio_backend``
    fixture (here of the class; in a conftest.py for every test of a project)."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "trio"

    @pytest.fixture
    def component(self) -> MemoryRetriever:
        return MemoryRetriever(MemoryOptions())


class TestEchoToolOnBothBackends(ToolSuite):
    """A suite on both backends through an ``anyio_backend`` fixture of the class."""

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def component(self) -> EchoTool:
        return EchoTool()

    @pytest.fixture
    def tool_examples(self) -> dict[str, dict[str, object]]:
        return {"echo": {"text": "hello"}}


# ---------------------------------------------------------------------------- loopback


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app answering ``ok`` to any request."""
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
            "all_proxy")


@pytest.fixture
def dead_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every proxy variable naming a port nothing listens on, and no ``NO_PROXY``: a host
    whose environment sends HTTP through a proxy that this machine cannot reach."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in _PROXIES:
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    yield


@pytest.fixture
def served() -> Iterator[LoopbackServer]:
    with LoopbackServer(_app, lifespan="off") as server:
        yield server


def test_a_plain_client_would_go_through_the_proxy(dead_proxy: None,
                                                   served: LoopbackServer) -> None:
    """What the helpers below avoid: httpx sends even a loopback URL to the proxy."""
    with pytest.raises(httpx.TransportError):  # the proxy (nothing there) refuses it
        httpx.get(f"{served.url}/", timeout=5)


def test_the_servers_client_reaches_it_with_proxies_set(dead_proxy: None,
                                                        served: LoopbackServer) -> None:
    """``server.client()`` talks to the server directly whatever the proxy variables."""
    with served.client(timeout=5) as client:
        response = client.get("/")
    assert (response.status_code, response.text) == (200, "ok")


@BOTH
async def test_the_servers_async_client_reaches_it_with_proxies_set(
        dead_proxy: None, served: LoopbackServer) -> None:
    """``server.async_client()`` does too, under trio as under asyncio."""
    async with served.async_client(timeout=5) as client:
        response = await client.get("/")
    assert (response.status_code, response.text) == (200, "ok")


@BOTH
async def test_a_loopback_server_started_from_a_worker_thread_under_the_backend() -> None:
    """A test on either backend may start the server off the loop (it waits for the
    server to listen with blocking sleeps): in a worker thread, then reached async."""
    server = await anyio.to_thread.run_sync(lambda: LoopbackServer(_app, lifespan="off")
                                            .__enter__())
    try:
        async with server.async_client(timeout=5) as client:
            assert (await client.get("/")).text == "ok"
    finally:
        await anyio.to_thread.run_sync(server.__exit__, None, None, None)
    assert not server.thread.is_alive()


# -- in_forked_child ---------------------------------------------------------------------


def test_in_forked_child_returns_raises_and_kills_a_hang() -> None:
    """The kit's fork helper brings back the child's value and its error (pickled: the
    kernel's errors keep their fields), and kills a child that hangs instead of waiting."""
    from aieng_core import HookError
    from aieng_core.testing.processes import in_forked_child

    parent = os.getpid()
    assert in_forked_child(lambda: (os.getpid() != parent, [1, 2])) == (True, [1, 2])

    def fail() -> None:
        raise HookError(hook="aieng_generate", plugin="llm", stage="generate",
                        cause=ValueError("boom"))

    with pytest.raises(HookError, match="boom") as caught:
        in_forked_child(fail)
    assert (caught.value.hook, caught.value.plugin) == ("aieng_generate", "llm")
    with pytest.raises(RuntimeError, match="Unpicklable"):
        in_forked_child(lambda: (_ for _ in ()).throw(Unpicklable()))
    with pytest.raises(TimeoutError, match="had not ended after 0.5 s"):
        in_forked_child(lambda: threading.Event().wait(), timeout=0.5)


class Unpicklable(Exception):
    """An error whose state does not pickle (a lock)."""

    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()
