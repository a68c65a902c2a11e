"""The long run against a real redis-server: every key the cache writes expires (a key
without one, under a distinct request each, is the classic way a Redis cache fills its
server), the level keeps no set or index of keys beside them, its connections stay
within the pool, and the in-process level in front of it keeps its bound."""

from __future__ import annotations

import pytest
from aieng_hookspecs.types import Completion, Message, Request
from aieng_redis import RedisCacheOptions, redis_cache
from redis.asyncio import Redis

from aieng_core.testing.steady import ameasure_growth

pytestmark = pytest.mark.anyio


def ask(text: str) -> Request:
    return Request(messages=(Message("user", text),))


async def test_distinct_requests_leave_only_expiring_keys(redis_url: str, prefix: str) -> None:
    """400 distinct requests looked up (missed) and stored through ``redis-cache`` with
    its memory level: each key has a TTL no longer than its content type's, no other key
    is written under the prefix, the server holds no more connections of this process
    than at the start plus the pool, and the process keeps nothing per request."""
    cache = redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix, memory=True,
                                          max_entries=50, ttl={"default": 600}))
    spy = Redis.from_url(redis_url)
    clients = (await spy.info("clients"))["connected_clients"]

    async def call(i: int) -> None:
        request = ask(f"question {i} of user {i % 997}")
        assert await cache.aieng_cache_lookup(request) is None
        await cache.aieng_cache_store(request, Completion(text=f"answer {i}"))

    growth = await ameasure_growth(call, warmup=100, calls=300)
    keys = [key async for key in spy.scan_iter(match=f"{prefix}*", count=1_000)]
    ttls = [await spy.pttl(key) for key in keys]
    connected = (await spy.info("clients"))["connected_clients"]
    await cache.aclose()
    await spy.aclose()
    assert len(keys) == 400
    assert all(0 < ttl <= 600_000 for ttl in ttls), sorted(ttls)[:3]
    assert connected <= clients + 1  # one call at a time: one pooled connection
    assert cache.memory is not None and len(cache.memory) == 50
    assert growth.per_call < 32 and not growth.held, growth.report()
