"""The Redis level in a host program: under trio, across event loops, across ``fork``."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import aieng_redis
import anyio
import pytest
from aieng_hookspecs import hookimpl
from aieng_redis import RedisLevel

from aieng_core import Kernel
from aieng_core.registry import PluginInfo
from aieng_core.testing.doubles import ScriptedBackend

Register = Callable[..., AbstractContextManager[PluginInfo]]
INF = float("inf")


class ScriptedPlugin:
    """Registers a ``scripted`` backend double."""

    def __init__(self) -> None:
        self.backend = ScriptedBackend(lambda r: f"answer to {r.prompt}")

    @hookimpl
    def aieng_register_components(self, registry: Any) -> None:
        registry.add("scripted", lambda: self.backend)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_under_trio_the_pipeline_fails_to_open_naming_the_backend(
    aieng_kernel: Kernel, register_plugin: Register, redis_url: str, prefix: str
) -> None:
    """Under trio, a pipeline with ``redis-cache`` fails when it opens, with an error that
    names trio and says what to do, not redis-py's "no running event loop" from deep in a
    lookup; nothing hangs (the guard only stops a hang from blocking the suite)."""
    config = {
        "pipeline": {"name": "faq", "stages": ["cache_lookup", "generate", "cache_store"]},
        "components": {"cache": {"use": "redis-cache", "url": redis_url, "prefix": prefix},
                       "llm": {"use": "scripted"}},
    }
    with register_plugin(aieng_redis, "redis"), register_plugin(ScriptedPlugin(), "scripted"):
        pipeline = aieng_kernel.pipeline(config)
    with anyio.fail_after(30), pytest.raises(Exception) as caught:
        async with pipeline:
            await pipeline.run("What is RRF?")
    text = "".join(str(exc) for exc in (caught.value, caught.value.__cause__) if exc)
    assert "needs asyncio" in text and "trio" in text, text
    assert "backend='asyncio'" in text


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_level_used_under_trio_says_it_needs_asyncio(redis_url: str,
                                                             prefix: str) -> None:
    """A ``RedisLevel`` used directly under trio raises the same clear ``RuntimeError`` on
    its first call, and closing it afterwards raises nothing."""
    level = RedisLevel(redis_url, prefix)
    with pytest.raises(RuntimeError, match=r"needs asyncio.*does not run under trio"):
        await level.get("k", 0.0)
    await level.aclose()


def test_a_level_answers_in_a_second_event_loop(redis_url: str, prefix: str) -> None:
    """A level used in one ``asyncio`` run answers in the next (a script calling
    ``anyio.run`` twice, a notebook): its pooled connections belonged to the first loop,
    and the second failed with "attached to a different loop"."""
    level = RedisLevel(redis_url, prefix)

    async def store() -> None:
        await level.put("k", "first", kind="chat", now=0.0, expires_at=INF)

    async def read() -> str | None:
        found = await level.get("k", 0.0)
        return None if found is None else found.payload

    anyio.run(store)
    assert anyio.run(read) == "first"
    anyio.run(level.aclose)


def _child(level: RedisLevel, results: Any) -> None:
    async def work() -> str | None:
        await level.put("child", "from the child", kind="chat", now=0.0, expires_at=INF)
        found = await level.get("parent", 0.0)
        await level.aclose()
        return None if found is None else found.payload

    results.put(anyio.run(work))


def test_a_forked_child_uses_connections_of_its_own(redis_url: str, prefix: str) -> None:
    """After ``fork`` (multiprocessing "fork", gunicorn --preload) the child answers with
    connections of its own, not the parent's pooled sockets (shared, the two would read
    each other's replies), and the parent's keep answering."""
    level = RedisLevel(redis_url, prefix)

    async def store() -> None:
        await level.put("parent", "from the parent", kind="chat", now=0.0, expires_at=INF)

    anyio.run(store)
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()
    child = context.Process(target=_child, args=(level, results))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert results.get() == "from the parent"

    async def read() -> str | None:
        found = await level.get("child", 0.0)
        return None if found is None else found.payload

    assert anyio.run(read) == "from the child"
    anyio.run(level.aclose)
