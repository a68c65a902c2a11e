"""Redis that stops answering, restarts, or is left mid-call: clear errors within the
socket timeout, never a hang nor another call's answer; and any completion round-trips
through Redis as through the embedded levels."""

from __future__ import annotations

import math
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import attrs
import pytest
from aieng_hookspecs.types import Completion, Message, Request
from aieng_redis import RedisCacheOptions, RedisLevel, RedisUnavailable, redis_cache
from hypothesis import HealthCheck, given, settings

from aieng_core.testing import strategies as aist

pytestmark = pytest.mark.anyio

Server = tuple[str, "subprocess.Popen[bytes]"]
#: Far above the level's socket timeout: only a hang reaches it.
_HANG_GUARD_S = 10.0


@contextmanager
def paused(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """The server stopped (SIGSTOP: connections open, nothing answered) while inside."""
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


async def test_a_server_that_stops_answering_is_a_clear_error_not_a_hang(
        own_redis: Server) -> None:
    """A paused server: every call waiting on it, and every call waiting for one of the
    pool's connections meanwhile, fails with RedisUnavailable naming the server within
    the socket timeout; once it answers again, each key reads its own value."""
    url, process = own_redis
    level = RedisLevel(url, "t:", socket_timeout=0.3, max_connections=2)
    for name in ("a", "b"):
        await level.put(name, f"value {name}", kind="chat", now=0.0, expires_at=math.inf)
    errors: list[BaseException] = []

    async def lookup() -> None:
        try:
            await level.get("a", 0.0)
        except RedisUnavailable as exc:
            errors.append(exc)

    with paused(process), anyio.fail_after(_HANG_GUARD_S):
        async with anyio.create_task_group() as group:
            for _ in range(4):  # two on the connections, two waiting for one
                group.start_soon(lookup)
    assert len(errors) == 4
    assert all(url.removeprefix("redis://") in str(e) for e in errors)
    with anyio.fail_after(_HANG_GUARD_S):
        for name in ("b", "a", "b"):
            found = await level.get(name, 0.0)
            assert found is not None and found.payload == f"value {name}"
    await level.aclose()


async def test_a_call_cancelled_mid_answer_leaves_no_answer_for_the_next(
        own_redis: Server) -> None:
    """A lookup cancelled while the server had not answered (a client gone, a stage
    timeout) leaves nothing on its connection: the next calls get their own answers."""
    url, process = own_redis
    level = RedisLevel(url, "t:", socket_timeout=5.0, max_connections=1)
    await level.put("a", "value a", kind="chat", now=0.0, expires_at=math.inf)
    await level.put("b", "value b", kind="chat", now=0.0, expires_at=math.inf)
    with paused(process), anyio.move_on_after(0.2) as scope:
        await level.get("a", 0.0)
    assert scope.cancelled_caught
    with anyio.fail_after(_HANG_GUARD_S):
        found = await level.get("b", 0.0)
        assert found is not None and found.payload == "value b"
    await level.aclose()


async def test_a_restarted_server_is_an_error_while_down_then_answers(
        own_redis: Server, tmp_path: Path) -> None:
    """Through the cache: a server gone is RedisUnavailable at once (connection
    refused), and the cache answers again, without a rebuild, once a server is back on
    the address (its entries gone with the restart: a miss, then a store)."""
    url, process = own_redis
    cache = redis_cache(RedisCacheOptions(url=url, prefix="t:", socket_timeout=1.0))
    request = Request(messages=(Message("user", "hi"),))
    await cache.aieng_cache_store(request, Completion(text="hello"))
    process.terminate()
    process.wait()
    with anyio.fail_after(_HANG_GUARD_S), pytest.raises(RedisUnavailable):
        await cache.aieng_cache_lookup(request)
    assert isinstance(process.args, list)
    binary = str(process.args[0])  # the first server's, on its port
    port = url.rsplit(":", 1)[1].split("/")[0]
    again = await anyio.open_process(
        [binary, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        level = cache.levels[0]
        assert isinstance(level, RedisLevel)
        with anyio.fail_after(_HANG_GUARD_S):
            while True:  # until the new server listens
                try:
                    await level.ping()
                    break
                except RedisUnavailable:
                    await anyio.sleep(0.02)
            assert await cache.aieng_cache_lookup(request) is None
            await cache.aieng_cache_store(request, Completion(text="hello again"))
            found = await cache.aieng_cache_lookup(request)
        assert found is not None and found.text == "hello again"
    finally:
        await cache.aclose()
        again.terminate()
        with anyio.fail_after(_HANG_GUARD_S):
            await again.wait()
        await again.aclose()


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=aist.requests(), completion=aist.completions())
async def test_any_completion_round_trips_through_redis(
        redis_url: str, prefix: str, request: Request, completion: Completion) -> None:
    """As through the SQLite file: any request stored with any completion (tool calls,
    logprobs, unicode) is read back by a fresh cache equal in every field."""
    options = RedisCacheOptions(url=redis_url, prefix=prefix, cache_sampled=True)
    writer = redis_cache(options)
    await writer.aieng_cache_store(request, completion)
    await writer.aclose()
    reader = redis_cache(options)
    found = await reader.aieng_cache_lookup(request)
    await reader.aclose()
    assert found == attrs.evolve(completion, cached=True)
