"""``redis-cache`` and the ``redis`` level against a real redis-server (see conftest)."""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import aieng_redis
import anyio
import pytest
from aieng_cache import CacheOptions, ExactCache, SQLiteLevel, encode_completion
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Message, Request, TokenLogprob, Usage
from aieng_redis import RedisCacheOptions, RedisLevel, RedisUnavailable, redis_cache
from redis.asyncio import Redis

from aieng_core import Kernel
from aieng_core.registry import PluginInfo
from aieng_core.testing.conformance import CacheSuite
from aieng_core.testing.doubles import ScriptedBackend

pytestmark = pytest.mark.anyio
Register = Callable[..., AbstractContextManager[PluginInfo]]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ask(text: str, **params: object) -> Request:
    return Request(messages=(Message("user", text),), **params)  # type: ignore[arg-type]


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    """A plain redis-py client on the test server, to look at what the cache wrote."""
    redis = Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


class TestRedisCacheConformance(CacheSuite):
    """``redis-cache`` passes the cache suite on a real server."""

    @pytest.fixture
    def component(self, redis_url: str, prefix: str) -> ExactCache:
        return redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix, cache_sampled=True))


class TestRedisBehindMemoryConformance(CacheSuite):
    """``redis-cache`` with a memory LRU in front passes the cache suite."""

    @pytest.fixture
    def component(self, redis_url: str, prefix: str) -> ExactCache:
        return redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix, memory=True,
                                             cache_sampled=True))


async def test_entries_expire_by_px_with_the_content_types_ttl(
    redis_url: str, prefix: str, client: Redis
) -> None:
    """A stored entry carries a PX expiry of its content type's TTL; ``inf`` sets none."""
    cache = redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix,
                                          ttl={"default": 100, "json": math.inf}))
    await cache.aieng_cache_store(ask("hi"), Completion(text="a"))
    await cache.aieng_cache_store(ask("hi", response_schema={"type": "object"}),
                                  Completion(text="{}"))
    keys = sorted(await client.keys(prefix + "*"))
    assert len(keys) == 2 and all(k.startswith(prefix.encode()) for k in keys)
    ttls = sorted([await client.pttl(k) for k in keys])
    assert ttls[0] == -1 and 99_000 < ttls[1] <= 100_000
    await cache.aclose()


async def test_an_entry_redis_expired_is_a_miss(redis_url: str, prefix: str,
                                                client: Redis) -> None:
    """When Redis expires the key (an expiry set in the past), the lookup misses."""
    cache = redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix))
    await cache.aieng_cache_store(ask("hi"), Completion(text="a"))
    assert await cache.aieng_cache_lookup(ask("hi")) is not None
    await client.pexpireat(prefix + cache.key(ask("hi")), 1)
    assert await cache.aieng_cache_lookup(ask("hi")) is None
    await cache.aclose()


async def test_completions_round_trip_through_redis(redis_url: str, prefix: str) -> None:
    """Every field survives Redis, logprobs and usage included."""
    completion = Completion(text="héllo \ud800 wörld", finish_reason="length",
                            usage=Usage(3, 4), model="m",
                            logprobs=(TokenLogprob("h", -0.1), TokenLogprob("é", -2e-300)))
    cache = redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix))
    await cache.aieng_cache_store(ask("hi"), completion)
    found = await cache.aieng_cache_lookup(ask("hi"))
    assert found is not None and encode_completion(found) == encode_completion(completion)
    await cache.aclose()


async def test_memory_redis_sqlite_promotion_keeps_the_remaining_ttl(
    redis_url: str, prefix: str, client: Redis, tmp_path: Path
) -> None:
    """The multi-level ``cache`` looks up memory → Redis → SQLite: a SQLite hit is copied
    into Redis and memory with the time it has left, and the next lookup is a memory
    hit; Redis is found through the ``aieng_cache.levels`` entry point."""
    clock = Clock()
    path = tmp_path / "c.db"
    options = CacheOptions(redis=redis_url, redis_prefix=prefix, sqlite=str(path),
                           ttl={"default": 100})
    cache = ExactCache(options, clock=clock, monotonic=clock)
    assert [level.name for level in cache.levels] == ["redis", "sqlite"]
    sqlite_level = cache.levels[1]
    assert isinstance(sqlite_level, SQLiteLevel)
    key = cache.key(ask("hi"))
    payload = encode_completion(Completion(text="from disk"))
    await sqlite_level.put(key, payload, kind="chat", now=clock(), expires_at=clock() + 100)
    clock.now += 60
    found = await cache.aieng_cache_lookup(ask("hi"))
    assert found is not None and found.text == "from disk"
    assert 39_000 < await client.pttl(prefix + key) <= 40_000
    assert await cache.aieng_cache_lookup(ask("hi")) is not None
    assert cache.stats.hits == {"sqlite": 1, "memory": 1}
    assert cache.memory is not None and cache.memory.get(key, clock()) is not None
    # A fresh cache without memory now finds it in Redis, before SQLite.
    second = ExactCache(CacheOptions(memory=False, redis=redis_url, redis_prefix=prefix,
                                     sqlite=str(path)), clock=clock, monotonic=clock)
    assert await second.aieng_cache_lookup(ask("hi")) is not None
    assert second.stats.hits == {"redis": 1}
    await cache.aclose()
    await second.aclose()


async def test_store_writes_all_levels(redis_url: str, prefix: str, client: Redis,
                                       tmp_path: Path) -> None:
    """A store reaches memory, Redis and SQLite."""
    cache = ExactCache(CacheOptions(redis=redis_url, redis_prefix=prefix,
                                    sqlite=str(tmp_path / "c.db")))
    await cache.aieng_cache_store(ask("hi"), Completion(text="a"))
    key = cache.key(ask("hi"))
    assert await client.exists(prefix + key) == 1
    sqlite_level = cache.levels[1]
    assert isinstance(sqlite_level, SQLiteLevel) and sqlite_level.store.count() == 1
    assert cache.memory is not None and len(cache.memory) == 1
    await cache.aclose()


async def test_clear_removes_only_its_prefix(redis_url: str, prefix: str,
                                             client: Redis) -> None:
    """``clear`` deletes the level's keys, never another prefix's."""
    await client.set("other:keep", "1")
    cache = redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix))
    for i in range(1200):
        await cache.aieng_cache_store(ask(f"q{i}"), Completion(text="a"))
    await cache.clear()
    assert await client.keys(prefix + "*") == []
    assert await client.get("other:keep") == b"1"
    await cache.aclose()


async def test_clear_takes_the_prefix_literally(redis_url: str, prefix: str,
                                               client: Redis) -> None:
    """A prefix holding glob characters matches only itself: ``clear`` of ``p[1]:``
    leaves the keys of ``p1:`` alone."""
    literal = prefix + "[1]?:"
    await client.set(prefix + "1x:keep", "1")
    level = RedisLevel(redis_url, literal)
    await level.put("k", "v", kind="chat", now=0.0, expires_at=math.inf)
    await level.clear()
    assert await client.get(literal + "k") is None
    assert await client.get(prefix + "1x:keep") == b"1"
    await client.delete(prefix + "1x:keep")
    await level.aclose()


async def test_many_concurrent_lookups(redis_url: str, prefix: str) -> None:
    """200 tasks storing and looking up at once each see their own answer."""
    cache = redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix))
    results: dict[int, str | None] = {}

    async def worker(i: int) -> None:
        await cache.aieng_cache_store(ask(f"q{i}"), Completion(text=f"a{i}"))
        found = await cache.aieng_cache_lookup(ask(f"q{i}"))
        results[i] = None if found is None else found.text

    async with anyio.create_task_group() as group:
        for i in range(200):
            group.start_soon(worker, i)
    assert results == {i: f"a{i}" for i in range(200)}
    await cache.aclose()


async def test_unreachable_server_is_a_clear_error() -> None:
    """Without a server the lookup fails with RedisUnavailable naming the address and how
    to start one, never the password."""
    port = free_port()
    url = f"redis://:s3cret@127.0.0.1:{port}/2"
    level = RedisLevel(url, socket_timeout=1.0)
    cache = ExactCache(CacheOptions(memory=False, redis=url), levels=[level])
    with pytest.raises(RedisUnavailable) as info:
        await cache.aieng_cache_lookup(ask("hi"))
    message = str(info.value)
    assert f"127.0.0.1:{port}/2" in message and "apt-get install redis-server" in message
    assert "s3cret" not in message
    await level.aclose()


def free_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ScriptedPlugin:
    """Offers the ``scripted`` backend double, one instance to count its calls."""

    def __init__(self) -> None:
        self.backend = ScriptedBackend(lambda r: f"answer to {r.prompt}")

    @hookimpl
    def aieng_register_components(self, registry: Any) -> None:
        registry.add("scripted", lambda: self.backend)


async def test_pipeline_file_with_redis_cache(
    aieng_kernel: Kernel, register_plugin: Register, redis_url: str, prefix: str
) -> None:
    """A pipeline naming ``redis-cache`` answers the repeated request from Redis; the
    backend double runs once."""
    scripted = ScriptedPlugin()
    config = {
        "pipeline": {"name": "faq", "stages": ["cache_lookup", "generate", "cache_store"]},
        "components": {"cache": {"use": "redis-cache", "url": redis_url, "prefix": prefix,
                                 "ttl": {"default": 60, "json": 600}},
                       "llm": {"use": "scripted"}},
    }
    with register_plugin(aieng_redis, "redis") as info, register_plugin(scripted, "scripted"):
        assert info.status == "loaded", info.error
        pipeline = aieng_kernel.pipeline(config)
    async with pipeline:
        await pipeline.run("What is RRF?")
        second = await pipeline.run("What is RRF?")
    assert second.cache_hit == "cache" and len(scripted.backend.requests) == 1


async def test_connections_the_server_closed_are_reopened(
    redis_url: str, prefix: str, client: Redis
) -> None:
    """When the server drops the pool's connections (a restart, a failover, its idle
    ``timeout``), the next calls reconnect and answer instead of failing once per pooled
    connection with RedisUnavailable."""
    cache = redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix))
    questions = [ask(f"q{i}") for i in range(20)]

    async def look_all() -> list[Completion | None]:
        found: list[Completion | None] = [None] * len(questions)

        async def one(i: int) -> None:
            found[i] = await cache.aieng_cache_lookup(questions[i])

        async with anyio.create_task_group() as group:
            for i in range(len(questions)):
                group.start_soon(one, i)
        return found

    for question in questions:
        await cache.aieng_cache_store(question, Completion(text="a"))
    assert all(await look_all())  # several pooled connections are open now
    assert await client.client_kill_filter(_type="normal", skipme=True) >= 1
    assert all(await look_all())
    await cache.aieng_cache_store(ask("after"), Completion(text="b"))
    await cache.aclose()


async def test_an_unreadable_value_is_a_miss_and_is_removed(
    redis_url: str, prefix: str, client: Redis
) -> None:
    """Bytes under the cache's key that are not UTF-8 (another program writing under the
    prefix) make the lookup a miss and remove the key, like any unreadable entry."""
    cache = redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix))
    key = prefix + cache.key(ask("hi"))
    await client.set(key, b"\xff\xfe not utf-8")
    assert await cache.aieng_cache_lookup(ask("hi")) is None
    assert await client.exists(key) == 0
    await cache.aieng_cache_store(ask("hi"), Completion(text="a"))
    assert await cache.aieng_cache_lookup(ask("hi")) is not None
    await cache.aclose()


async def test_a_key_of_another_type_is_a_miss_and_is_removed(
    redis_url: str, prefix: str, client: Redis
) -> None:
    """A key under the prefix that is no string (another program's hash or list) is an
    unreadable entry like any other: the lookup misses and removes it, instead of failing
    with WRONGTYPE on every lookup of that request."""
    cache = redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix))
    key = prefix + cache.key(ask("hi"))
    await client.hset(key, "field", "value")
    assert await cache.aieng_cache_lookup(ask("hi")) is None
    assert await client.exists(key) == 0
    assert cache.stats.errors == 1
    await cache.aieng_cache_store(ask("hi"), Completion(text="a"))
    assert await cache.aieng_cache_lookup(ask("hi")) is not None
    await cache.aclose()


async def test_a_ttl_beyond_what_redis_takes_is_stored(
    redis_url: str, prefix: str, client: Redis
) -> None:
    """A finite TTL too long for ``PX`` (the options accept any seconds > 0) stores the
    entry with the longest expiry Redis takes instead of failing every store."""
    cache = redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix,
                                          ttl={"default": 1e17}))
    await cache.aieng_cache_store(ask("hi"), Completion(text="a"))
    assert await client.pttl(prefix + cache.key(ask("hi"))) > 10**14
    assert await cache.aieng_cache_lookup(ask("hi")) is not None
    await cache.aclose()


@pytest.mark.parametrize("seconds", [1e306, 1.7e308])
async def test_a_ttl_near_the_largest_float_is_stored(
    redis_url: str, prefix: str, client: Redis, seconds: float
) -> None:
    """A TTL whose milliseconds overflow a float (the options accept any finite seconds)
    is stored with the longest expiry Redis takes, not an OverflowError on every store."""
    cache = redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix,
                                          ttl={"default": seconds}))
    await cache.aieng_cache_store(ask("hi"), Completion(text="a"))
    assert await client.pttl(prefix + cache.key(ask("hi"))) > 10**14
    assert await cache.aieng_cache_lookup(ask("hi")) is not None
    await cache.aclose()


async def test_an_expired_put_replaces_the_live_entry(redis_url: str, prefix: str,
                                                      client: Redis, tmp_path: Path) -> None:
    """A put whose expiry has passed leaves no entry under the key, as in the SQLite level
    (its row is stored expired: a miss), instead of leaving the older, live value there to
    answer later lookups."""
    level = RedisLevel(redis_url, prefix)
    sqlite = SQLiteLevel(tmp_path / "c.db")
    now = 1_000_000.0
    for each in (level, sqlite):
        await each.put("k", "old", kind="chat", now=now, expires_at=now + 60)
        await each.put("k", "new", kind="chat", now=now, expires_at=now)
        assert await each.get("k", now) is None, each.name
        await each.aclose()
    assert await client.exists(prefix + "k") == 0


@pytest.mark.parametrize("path", ["/cache", "/0/1", "/-1"])
def test_a_database_that_is_no_number_fails_to_build(path: str) -> None:
    """``redis://host:port/cache`` is an error naming the database, not database 0 used
    silently (redis-py ignores a path it cannot read as a number)."""
    with pytest.raises(ValueError, match="database") as info:
        RedisLevel(f"redis://:s3cret@127.0.0.1:6379{path}")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(("url", "where"), [
    ("redis://[::1]:6380/cache", "[::1]:6380/cache"),
    ("redis://:s3cret@[FE80::1]/cache", "[fe80::1]:6379/cache"),
    ("rediss://u:s3cret@cache.example/x", "cache.example:6379/x"),
])
def test_messages_name_an_ipv6_server_in_brackets(url: str, where: str) -> None:
    """An IPv6 server is named ``[::1]:6380/db`` in messages, as in its URL, not the
    unreadable ``::1:6380``; never with the credentials."""
    with pytest.raises(ValueError, match="database") as info:
        RedisLevel(url)
    assert str(info.value).endswith(f" in {where}") and "s3cret" not in str(info.value)


async def test_a_closed_level_is_a_clear_error_not_a_new_connection(
    redis_url: str, prefix: str, client: Redis
) -> None:
    """After ``aclose`` every call fails saying the level is closed, as the SQLite level
    does, instead of redis-py silently opening new connections nobody closes; closing
    again is harmless."""
    level = RedisLevel(redis_url, prefix)
    await level.put("k", "v", kind="chat", now=0.0, expires_at=math.inf)
    await level.aclose()
    calls: list[Callable[[], Any]] = [
        level.ping,
        lambda: level.get("k", 0.0),
        lambda: level.put("k", "w", kind="chat", now=0.0, expires_at=math.inf),
        lambda: level.delete("k"),
        level.clear,
        lambda: level.clear_namespace(""),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match=r"Redis level at 127\.0\.0\.1:\d+/0 is closed"):
            await call()
    await level.aclose()
    assert await client.get(prefix + "k") == b"v"  # nothing was written or deleted


async def test_clear_empties_only_its_own_namespace(redis_url: str, prefix: str,
                                                   client: Redis) -> None:
    """Two caches of other namespaces under one prefix: ``clear`` of one leaves the other's
    entries answering (the empty namespace included), across several SCAN batches."""
    first = redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix))
    second = redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix, namespace="b",
                                           memory=True))
    for i in range(700):
        await first.aieng_cache_store(ask(f"q{i}"), Completion(text="first"))
        await second.aieng_cache_store(ask(f"q{i}"), Completion(text="second"))
    await first.clear()
    assert len(await client.keys(prefix + "*")) == 700
    assert await first.aieng_cache_lookup(ask("q5")) is None
    assert second.memory is not None
    second.memory.clear()  # answer from Redis, not from the memory level
    found = await second.aieng_cache_lookup(ask("q5"))
    assert found is not None and found.text == "second"
    await second.clear()
    assert await client.keys(prefix + "*") == []
    await first.aclose()
    await second.aclose()


async def test_keys_written_without_a_namespace_are_served_and_cleared(
    redis_url: str, prefix: str, client: Redis
) -> None:
    """Keys of the earlier layout (a value without its namespace) still answer; their
    namespace unknown, any namespace's ``clear`` removes them, along with values that are
    no entry (another program's hash); other namespaces' entries stay."""
    cache = redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix, namespace="a"))
    other = redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix, namespace="b"))
    await client.set(prefix + cache.key(ask("old")),
                     encode_completion(Completion(text="old answer")))
    await client.hset(prefix + "a-hash", "field", "value")
    found = await cache.aieng_cache_lookup(ask("old"))
    assert found is not None and found.text == "old answer"
    await other.aieng_cache_store(ask("kept"), Completion(text="b's"))
    await cache.clear()
    assert await client.keys(prefix + "*") == [(prefix + other.key(ask("kept"))).encode()]
    await cache.aclose()
    await other.aclose()


async def test_a_pipeline_skipping_cache_errors_answers_while_redis_is_away(
    aieng_kernel: Kernel, register_plugin: Register, tmp_path: Path
) -> None:
    """With ``on_error = "skip"`` on the cache stages (the cache as an optimization), a
    Redis that goes away costs misses, not runs, and caching resumes when it is back."""
    import shutil
    import subprocess

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs redis-server on PATH: apt-get install redis-server")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    def launch() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)

    async def start() -> subprocess.Popen[bytes]:
        process = launch()
        with anyio.fail_after(30):  # a hang guard, not a timing assertion
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    return process
                except OSError:
                    await anyio.sleep(0.02)  # waiting for the server, not a timing assertion

    def stop(process: subprocess.Popen[bytes]) -> None:
        process.terminate()
        process.wait(timeout=10)

    scripted = ScriptedPlugin()
    config = {
        "pipeline": {"name": "faq", "stages": ["cache_lookup", "generate", "cache_store"]},
        "stage": {"cache_lookup": {"on_error": "skip"}, "cache_store": {"on_error": "skip"}},
        "components": {"cache": {"use": "redis-cache", "url": url, "socket_timeout": 1.0},
                       "llm": {"use": "scripted"}},
    }
    with register_plugin(aieng_redis, "redis"), register_plugin(scripted, "scripted"):
        pipeline = aieng_kernel.pipeline(config)
    process = await start()
    try:
        async with pipeline:
            await pipeline.run("What is RRF?")
            assert (await pipeline.run("What is RRF?")).cache_hit == "cache"
            stop(process)
            away = await pipeline.run("What is RRF?")
            assert away.cache_hit is None and away.completion is not None
            process = await start()  # empty: the server kept nothing
            await pipeline.run("What is RRF?")
            assert (await pipeline.run("What is RRF?")).cache_hit == "cache"
    finally:
        if process.poll() is None:
            stop(process)
    assert len(scripted.backend.requests) == 3


@pytest.mark.parametrize("url", ["redis://:hunter2@cache.internal:6379/0",
                                 "rediss://app:hunter2@cache.internal:6380/1"])
def test_the_password_of_the_url_is_never_in_a_repr(url: str) -> None:
    """The options' repr (and that of the cache options the component builds) shows where
    Redis is, never its password; the URL itself is kept whole for the connection."""
    options = RedisCacheOptions(url=url)
    cache = redis_cache(options)
    for shown in (repr(options), repr(cache.options)):
        assert "hunter2" not in shown and "cache.internal" in shown, shown
    assert options.url == url and cache.options.redis == url
