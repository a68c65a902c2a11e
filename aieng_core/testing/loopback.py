"""A real HTTP server on loopback for tests: an ASGI app under uvicorn in a thread.

Tests of HTTP backends and servers use it to talk to a real socket (``127.0.0.1``, a port
the OS picks) rather than an in-process transport, so timeouts, streaming and connection
handling are the real ones. uvicorn is imported when a server is built.

The server runs its own asyncio loop in its thread, so a test on either of anyio's backends
(asyncio or trio) can use it. httpx sends every URL, loopback ones too, through the proxy of
``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` unless ``NO_PROXY`` names the host: the
clients of :meth:`LoopbackServer.client` and :meth:`LoopbackServer.async_client` reach the
server directly whatever the environment says.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

if TYPE_CHECKING:
    import httpx

__all__ = ["LoopbackServer"]


class LoopbackServer:
    """Runs an ASGI app under uvicorn in a background thread on 127.0.0.1 (port 0: the OS
    picks a free one) and stops it on exit::

        with LoopbackServer(app) as server, server.client() as client:
            client.get("/healthz")

    :param app: the ASGI app.
    :param lifespan: uvicorn's lifespan mode (``"on"``: the app's startup and shutdown run,
        and a failing startup fails the server; ``"off"`` for apps without a lifespan).
    :param start_timeout: seconds to wait for the server to listen (a bound on a hang:
        entering returns as soon as it listens).
    :param stop_timeout: seconds to wait for it to stop on exit.
    :raises RuntimeError: when its app's startup fails, or it does not listen, or does not
        stop, in time (the message names the limit and its value).
    """

    def __init__(self, app: Any, *, lifespan: Literal["on", "off", "auto"] = "on",
                 start_timeout: float = 30.0, stop_timeout: float = 15.0) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan=lifespan,
            access_log=False, timeout_graceful_shutdown=2))
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.thread = threading.Thread(target=self._serve, name="loopback-server",
                                       daemon=True)
        self.port = 0

    def _serve(self) -> None:
        try:
            self.server.run()
        except SystemExit:  # uvicorn's way out when its app's startup fails: said on enter
            pass

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The root of an OpenAI-compatible API served there (``http://127.0.0.1:PORT/v1``)."""
        return f"{self.url}/v1"

    def _direct(self) -> dict[str, None]:
        # httpx's mounts: this host without a proxy (the environment's stay for the others)
        return {"all://127.0.0.1": None}

    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` with ``base_url`` :attr:`url` that reaches the server
        directly, whatever proxy the environment names (``kwargs`` go to the client; a
        ``base_url`` of its own, such as ``f"{server.url}/v1"``, replaces :attr:`url`)."""
        import httpx

        mounts = {**self._direct(), **kwargs.pop("mounts", {})}
        return httpx.Client(**{"base_url": self.url, **kwargs}, mounts=mounts)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` (asyncio or trio) as :meth:`client` is."""
        import httpx

        mounts = {**self._direct(), **kwargs.pop("mounts", {})}
        return httpx.AsyncClient(**{"base_url": self.url, **kwargs}, mounts=mounts)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:  # set by uvicorn once it listens
            if not self.thread.is_alive():
                raise RuntimeError(
                    "the loopback server stopped before it listened: its app's startup "
                    "failed (lifespan 'on': see the error logged above), or it could not "
                    "bind 127.0.0.1")
            if time.monotonic() > deadline:
                self.server.should_exit = True
                raise RuntimeError(
                    f"the loopback server did not listen within {self.start_timeout:g} s "
                    "(start_timeout=): its app's startup hangs, or the machine is too "
                    "busy for the limit (give a larger start_timeout)")
            time.sleep(0.01)  # a poll of uvicorn's flag; the limit only bounds a hang
        sockets = [s for server in self.server.servers for s in server.sockets]
        self.port = int(sockets[0].getsockname()[1])
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.stop_timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"the loopback server did not stop within "
                               f"{self.stop_timeout:g} s (stop_timeout=): a connection or "
                               "its app's shutdown hangs, or give a larger stop_timeout")
