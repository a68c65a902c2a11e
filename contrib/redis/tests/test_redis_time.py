"""Time and the Redis level: the server counts each entry's ``PX``, so the caller's wall
clock stepping changes no entry's life; ``socket_timeout`` is a finite number of seconds."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest
from aieng_cache import CacheOptions, ExactCache
from aieng_hookspecs.types import Completion, Message, Request
from aieng_redis import RedisCacheOptions, RedisLevel
from redis.asyncio import Redis

from aieng_core.testing import ManualClock

pytestmark = pytest.mark.anyio


def ask(text: str) -> Request:
    return Request(messages=(Message("user", text),))


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    """A plain redis-py client on the test server, to look at what the cache wrote."""
    redis = Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


async def test_a_wall_clock_step_changes_no_redis_entrys_life(
        redis_url: str, prefix: str, client: Redis) -> None:
    """Stored with a 60 s TTL, then the caller's wall clock set back an hour (or forward
    a day): Redis still holds the entry for the rest of its 60 s (``PX`` is a duration
    the server counts), and a hit promoted into memory lives at most that long there."""
    wall, mono = ManualClock(), ManualClock(50.0)
    options = CacheOptions(redis=redis_url, redis_prefix=prefix, ttl={"default": 60})
    cache = ExactCache(options, clock=wall, monotonic=mono)
    await cache.aieng_cache_store(ask("hi"), Completion(text="hello"))
    key = cache.key(ask("hi"))
    for step in (-3600.0, 86_400.0):
        wall.now += step
        assert cache.memory is not None
        cache.memory.clear()
        assert await cache.aieng_cache_lookup(ask("hi")) is not None
        assert 0 < await client.pttl(prefix + key) <= 60_000
        found = cache.memory.get(key, mono.now)
        assert found is not None and found.expires_at <= mono.now + 60
    await cache.aclose()


@pytest.mark.parametrize(("value", "words"), [
    (0, "got 0"), (-1.0, "got -1.0"), (math.nan, "got nan"),
    (math.inf, "holds every call for good"), ("5s", "the unit is always seconds"),
    (True, "got True"),
])
def test_a_socket_timeout_that_is_no_finite_number_of_seconds_is_refused(
        value: object, words: str) -> None:
    """``socket_timeout`` took an infinity (a paused server then held every lookup for
    good); it is a finite number of seconds > 0, for the component's option and for a
    level built directly alike, the error naming the option and why."""
    with pytest.raises(ValueError, match="socket_timeout must be a finite number") as caught:
        RedisCacheOptions(socket_timeout=value)  # type: ignore[arg-type]
    assert words in str(caught.value)
    with pytest.raises(ValueError, match="socket_timeout must be a finite number"):
        RedisLevel("redis://127.0.0.1:1/0", socket_timeout=value)  # type: ignore[arg-type]
