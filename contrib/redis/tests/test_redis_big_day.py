"""The big day for the Redis level: a namespace's ``clear`` under values of many MB.

``clear_namespace`` finds each key's namespace in its value. It used to read the values
whole (``MGET``, 500 keys a batch): with completions of many MB, 500 of them at once in
the process's memory, and every byte under the prefix sent over the network. It reads
the last KB of each value now (``GETRANGE``), where the codec writes the namespace."""

from __future__ import annotations

import json
import subprocess

import pytest
from aieng_cache import encode_completion, payload_namespace
from aieng_hookspecs.types import Completion, Message, Request, ToolCall
from aieng_redis import RedisCacheOptions, redis_cache
from aieng_redis._level import _TAIL, _tail_namespace
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

pytestmark = pytest.mark.anyio

_BIG = 400_000  # characters of each big completion


def ask(text: str) -> Request:
    return Request(messages=(Message("user", text),))


async def _sent(client: Redis) -> int:
    """Bytes the server has sent to its clients so far."""
    return int((await client.info("stats"))["total_net_output_bytes"])


async def test_clear_of_a_namespace_reads_the_end_of_each_value_not_all_of_it(
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """Two namespaces of 20 big entries each (8 MB each), old-layout entries without a
    namespace and another program's hash: ``clear`` of one namespace removes its
    entries and the unknown ones, keeps the other's, and the server sends well under
    1 MB for it (it sent every value: over 8 MB)."""
    url, _ = own_redis
    prefix = "big:"
    mine = redis_cache(RedisCacheOptions(url=url, prefix=prefix, namespace="a"))
    other = redis_cache(RedisCacheOptions(url=url, prefix=prefix, namespace="b"))
    client = Redis.from_url(url)
    big = "x" * _BIG
    for i in range(20):
        await mine.aieng_cache_store(ask(f"q{i}"), Completion(text=big))
        await other.aieng_cache_store(ask(f"q{i}"), Completion(text=big))
    await client.set(prefix + mine.key(ask("old")), encode_completion(Completion(text=big)))
    await client.hset(prefix + "a-hash", "field", "value")
    before = await _sent(client)
    await mine.clear()
    sent = await _sent(client) - before
    assert sent < 1_000_000, sent
    kept = sorted(await client.keys(prefix + "*"))
    assert kept == sorted((prefix + other.key(ask(f"q{i}"))).encode() for i in range(20))
    found = await other.aieng_cache_lookup(ask("q3"))
    assert found is not None and found.text == big
    await mine.aclose()
    await other.aclose()
    await client.aclose()


async def test_a_namespace_longer_than_the_end_read_is_read_whole(
    redis_url: str, prefix: str
) -> None:
    """A namespace longer than the bytes read at the end of a value (or any of
    backslashes, quotes and non-ASCII, escaped in the value): its entries are still told
    apart, the value read whole when the end does not hold all of the namespace."""
    long_name = 'ns "quoted" \\ é ' * 100  # over _TAIL once escaped
    names = [long_name, long_name + "2", '\\"', "\\", "ø" * 300]
    caches = [redis_cache(RedisCacheOptions(url=redis_url, prefix=prefix, namespace=n))
              for n in names]
    for cache in caches:
        await cache.aieng_cache_store(ask("q"), Completion(text="y" * 3000))
    for index, cache in enumerate(caches):
        await cache.clear()
        assert await cache.aieng_cache_lookup(ask("q")) is None
        for later in caches[index + 1:]:
            found = await later.aieng_cache_lookup(ask("q"))
            assert found is not None, later.options.namespace
    for cache in caches:
        await cache.aclose()


_TEXT = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ['"', "\\", '\\"', '","ns":"x"}', "]}", '"}'])


@settings(max_examples=300, deadline=None)
@given(text=_TEXT, namespace=st.none() | _TEXT,
       arguments=st.lists(_TEXT, max_size=2), cut=st.integers(1, 120))
def test_the_end_of_an_entry_names_its_namespace_as_the_whole_does(
    text: str, namespace: str | None, arguments: list[str], cut: int
) -> None:
    """Any encoded entry's last ``cut`` bytes give its namespace as the whole value does,
    or say that they cannot (only when the namespace member does not fit in them)."""
    completion = Completion(text=text, tool_calls=tuple(
        ToolCall(id=str(i), name="f", arguments={"a": a}) for i, a in enumerate(arguments)))
    value = encode_completion(completion, namespace=namespace).encode()
    known, found = _tail_namespace(value[-cut:])
    if known:
        assert found == payload_namespace(value)
    member = b',"ns":' + json.dumps(namespace).encode() + b"}"
    if cut >= 2 and (namespace is None or cut > len(member)):
        assert known
    assert len(value[-_TAIL:]) <= _TAIL
