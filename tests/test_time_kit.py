"""The testing kit's limits on time: each only bounds a hang, and when one is reached its
error says which limit it was, its value, and what to do (``settle`` raised a bare
``TimeoutError``; the loopback server said only that it "did not start")."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from aieng_core.testing import hang_guard, settle
from aieng_core.testing.loopback import LoopbackServer
from aieng_core.testing.processes import in_forked_child


def _lifespan_app(startup: Any) -> Any:
    """An ASGI app whose lifespan startup runs ``await startup(send)``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await startup(send)
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


@pytest.mark.anyio
async def test_settle_names_what_it_waited_for_and_its_limit() -> None:
    """A condition that never holds fails ``settle`` with a ``TimeoutError`` naming the
    condition and the limit, and saying how to give it longer."""

    def never_done() -> bool:
        return False

    with pytest.raises(TimeoutError, match=r"never_done\(\) did not hold within 0\.05 s "
                                           r"\(limit=\).*larger limit"):
        await settle(never_done, limit=0.05)


def test_a_loopback_server_that_does_not_listen_in_time_says_its_limit() -> None:
    """A server whose app's startup hangs fails to start with the limit named
    (``start_timeout=``, its value) and what to do; let go, its thread ends."""
    release = threading.Event()

    async def hang(send: Any) -> None:
        await asyncio.to_thread(release.wait)
        await send({"type": "lifespan.startup.complete"})

    server = LoopbackServer(_lifespan_app(hang), start_timeout=0.2)
    try:
        with pytest.raises(RuntimeError, match=r"did not listen within 0\.2 s "
                                               r"\(start_timeout=\).*larger start_timeout"):
            server.__enter__()
    finally:
        release.set()
        server.thread.join(30)
    assert not server.thread.is_alive()


def test_a_loopback_server_whose_startup_fails_says_so_at_once() -> None:
    """An app whose startup fails stops the server before it listens: the error says so
    (not a time limit: the thread ended), without waiting for ``start_timeout``."""

    async def fail(send: Any) -> None:
        await send({"type": "lifespan.startup.failed", "message": "no model"})

    server = LoopbackServer(_lifespan_app(fail), start_timeout=3600)
    with pytest.raises(RuntimeError, match="stopped before it listened: its app's startup "
                                           "failed"):
        server.__enter__()
    server.thread.join(30)
    assert not server.thread.is_alive()


def test_in_forked_child_names_its_timeout() -> None:
    """A child still running at ``timeout`` is killed, and the error names the option."""
    with pytest.raises(TimeoutError, match=r"after 0\.2 s \(killed\).*timeout="):
        in_forked_child(lambda: threading.Event().wait(), timeout=0.2)


def test_hang_guard_names_its_seconds() -> None:
    """A block still running after ``hang_guard``'s seconds fails naming the option."""
    with pytest.raises(TimeoutError, match=r"after 1 s \(hang_guard's seconds=\)"), \
            hang_guard(1):
        time.sleep(30)
