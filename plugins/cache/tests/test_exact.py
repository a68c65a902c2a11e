"""``cache``: conformance, pipelines built by name, levels and promotion, events."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import aieng_cache
import attrs
import pytest
from aieng_cache import CacheMiss, CacheOptions, CacheStored, ExactCache, SQLiteLevel
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import (
    CacheHit,
    Completion,
    Delta,
    Message,
    Request,
    TokenLogprob,
    ToolCall,
    ToolSpec,
    Usage,
)

from aieng_core import ConfigError, Kernel
from aieng_core.registry import PluginInfo
from aieng_core.testing import EventCapture, ManualClock
from aieng_core.testing.conformance import CacheSuite
from aieng_core.testing.doubles import ScriptedBackend

pytestmark = pytest.mark.anyio
Register = Callable[..., AbstractContextManager[PluginInfo]]


def ask(text: str, **params: object) -> Request:
    return Request(messages=(Message("user", text),), **params)  # type: ignore[arg-type]


class TestMemoryCacheConformance(CacheSuite):
    """The memory level alone passes the cache suite (sampled requests allowed: the suite
    stores requests of any temperature)."""

    @pytest.fixture
    def component(self) -> ExactCache:
        return ExactCache(CacheOptions(cache_sampled=True))


class TestTieredCacheConformance(CacheSuite):
    """Memory over a SQLite file passes the cache suite."""

    @pytest.fixture
    def component(self, tmp_path: Path) -> ExactCache:
        return ExactCache(CacheOptions(cache_sampled=True, sqlite=str(tmp_path / "c.db")))


class TestSQLiteCacheConformance(CacheSuite):
    """A SQLite file alone passes the cache suite, its I/O off the event loop."""

    @pytest.fixture
    def component(self, tmp_path: Path) -> ExactCache:
        return ExactCache(CacheOptions(memory=False, cache_sampled=True,
                                       sqlite=str(tmp_path / "c.db")))


def cached_pipeline(tmp_path: Path, **cache: Any) -> dict[str, Any]:
    return {
        "pipeline": {"name": "faq", "stages": ["cache_lookup", "generate", "cache_store"]},
        "components": {"cache": {"use": "cache", "sqlite": str(tmp_path / "c.db"), **cache},
                       "llm": {"use": "scripted"}},
    }


class ScriptedPlugin:
    """Offers the ``scripted`` backend double, one shared instance to count its calls."""

    def __init__(self) -> None:
        self.backend = ScriptedBackend(lambda r: f"answer to {r.prompt}")

    @hookimpl
    def aieng_register_components(self, registry: Any) -> None:
        registry.add("scripted", lambda: self.backend)


async def test_second_run_is_a_hit_and_the_backend_runs_once(
    aieng_kernel: Kernel, register_plugin: Register, tmp_path: Path,
    captured_events: EventCapture,
) -> None:
    """A pipeline file naming ``cache`` answers the repeated request from the cache: the
    backend double is called once, the second run is marked cached, and the events say
    miss, store, hit."""
    scripted = ScriptedPlugin()
    with register_plugin(aieng_cache, "cache") as info, register_plugin(scripted, "scripted"):
        assert info.status == "loaded", info.error
        pipeline = aieng_kernel.pipeline(cached_pipeline(tmp_path))
    async with pipeline:
        first = await pipeline.run("What is RRF?")
        second = await pipeline.run("What  is RRF? ")
    assert len(scripted.backend.requests) == 1
    assert first.answer == second.answer == "answer to What is RRF?"
    assert first.cache_hit is None and second.cache_hit == "cache"
    assert second.completion is not None and second.completion.cached
    assert [e.reason for e in captured_events.of(CacheMiss)] == ["absent"]
    assert [e.kind for e in captured_events.of(CacheStored)] == ["chat"]
    assert [e.component for e in captured_events.of(CacheHit)] == ["cache"]
    assert "cache.level_hit" in captured_events.names("cache.*")


async def test_entries_survive_a_restart_of_the_pipeline(
    aieng_kernel: Kernel, register_plugin: Register, tmp_path: Path
) -> None:
    """A new pipeline on the same SQLite file answers from what the first one stored,
    without calling its backend."""
    first_plugin, second_plugin = ScriptedPlugin(), ScriptedPlugin()
    with register_plugin(aieng_cache, "cache"):
        with register_plugin(first_plugin, "scripted"):
            one = aieng_kernel.pipeline(cached_pipeline(tmp_path))
        async with one:
            await one.run("What is RRF?")
        with register_plugin(second_plugin, "scripted"):
            two = aieng_kernel.pipeline(cached_pipeline(tmp_path))
    async with two:
        result = await two.run("What is RRF?")
    assert result.cache_hit == "cache" and second_plugin.backend.requests == []


async def test_sampled_requests_are_not_cached_by_default(tmp_path: Path) -> None:
    """temperature > 0 without a seed is neither stored nor looked up unless allowed; with
    a seed it is cached."""
    cache = ExactCache(CacheOptions())
    sampled = ask("tell a joke", temperature=0.8)
    await cache.aieng_cache_store(sampled, Completion(text="joke"))
    assert await cache.aieng_cache_lookup(sampled) is None
    assert cache.stats.uncacheable == 1 and len(cache.memory or ()) == 0
    seeded = ask("tell a joke", temperature=0.8, seed=1)
    await cache.aieng_cache_store(seeded, Completion(text="joke"))
    assert await cache.aieng_cache_lookup(seeded) is not None
    allowed = ExactCache(CacheOptions(cache_sampled=True))
    await allowed.aieng_cache_store(sampled, Completion(text="joke"))
    assert await allowed.aieng_cache_lookup(sampled) is not None


class Scoring:
    """A backend giving its tokens' log-probabilities when the request asks for them."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion:
        self.requests.append(request)
        logprobs = [TokenLogprob("yes", -0.5)] if request.metadata.get("logprobs") else None
        return Completion(text="yes", logprobs=logprobs)


async def test_an_answer_without_logprobs_never_answers_a_request_for_them(
        aieng_kernel: Kernel) -> None:
    """A request asking for log-probabilities misses an entry stored without them (the
    model answers it, with them); each kind then hits its own entry."""
    backend = Scoring()
    pipeline = aieng_kernel.compose({"cache": ExactCache(), "llm": backend})
    plain, asking = ask("ok?"), ask("ok?", metadata={"logprobs": True})
    assert (await pipeline.run(plain)).completion.logprobs is None  # type: ignore[union-attr]
    scored = await pipeline.run(asking)
    assert scored.cache_hit is None and len(backend.requests) == 2
    assert scored.completion is not None
    assert scored.completion.logprobs == (TokenLogprob("yes", -0.5),)
    again, plain_again = await pipeline.run(asking), await pipeline.run(plain)
    assert again.cache_hit == plain_again.cache_hit == "cache" and len(backend.requests) == 2
    assert again.completion is not None and plain_again.completion is not None
    assert again.completion.logprobs == (TokenLogprob("yes", -0.5),)
    assert plain_again.completion.logprobs is None


async def test_memory_ttl_on_an_injected_clock() -> None:
    """The memory level honours the TTL of the request's content type."""
    clock = ManualClock()
    cache = ExactCache(CacheOptions(ttl={"default": 5, "tools": 100}), clock=clock,
                       monotonic=clock)
    await cache.aieng_cache_store(ask("hi"), Completion(text="a"))
    clock.now += 5
    assert await cache.aieng_cache_lookup(ask("hi")) is None


async def test_hit_in_sqlite_is_promoted_to_memory_with_its_remaining_ttl(
    tmp_path: Path
) -> None:
    """A SQLite hit is copied into memory expiring when the SQLite entry does, not a full
    TTL later; the next lookup is a memory hit."""
    clock = ManualClock()
    path = tmp_path / "c.db"
    writer = ExactCache(CacheOptions(memory=False, sqlite=str(path), ttl={"default": 100}),
                        clock=clock, monotonic=clock)
    await writer.aieng_cache_store(ask("hi"), Completion(text="a"))
    await writer.aclose()
    clock.now += 60
    cache = ExactCache(CacheOptions(sqlite=str(path), ttl={"default": 100}), clock=clock,
                       monotonic=clock)
    assert await cache.aieng_cache_lookup(ask("hi")) is not None
    assert await cache.aieng_cache_lookup(ask("hi")) is not None
    assert cache.stats.hits == {"sqlite": 1, "memory": 1}
    assert cache.memory is not None
    found = cache.memory.get(cache.key(ask("hi")), clock.now)
    assert found is not None and found.expires_at == 1_000_000.0 + 100
    clock.now += 40
    assert await cache.aieng_cache_lookup(ask("hi")) is None
    await cache.aclose()


async def test_store_writes_every_level_and_promotion_can_be_off(tmp_path: Path) -> None:
    """A store reaches memory and SQLite; with ``promote = false`` a SQLite hit is not
    copied up."""
    cache = ExactCache(CacheOptions(sqlite=str(tmp_path / "c.db"), promote=False))
    await cache.aieng_cache_store(ask("hi"), Completion(text="a"))
    level = cache.levels[0]
    assert isinstance(level, SQLiteLevel) and level.store.count() == 1
    assert cache.memory is not None and len(cache.memory) == 1
    cache.memory.clear()
    assert await cache.aieng_cache_lookup(ask("hi")) is not None
    assert len(cache.memory) == 0
    await cache.invalidate(ask("hi"))
    assert await cache.aieng_cache_lookup(ask("hi")) is None
    await cache.aclose()


async def test_a_failing_level_raises_its_own_error_and_others_are_written(
        tmp_path: Path) -> None:
    """A store whose SQLite file is not a database raises that level's error itself
    (not an ExceptionGroup hiding it), after writing the levels that work."""
    import sqlite3

    broken = tmp_path / "broken.db"
    broken.write_bytes(b"not a database " * 512)
    good = SQLiteLevel(tmp_path / "good.db")
    cache = ExactCache(CacheOptions(), levels=[good, SQLiteLevel(broken)])
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        await cache.aieng_cache_store(ask("hi"), Completion(text="a"))
    assert good.store.count() == 1
    assert cache.memory is not None and len(cache.memory) == 1
    await cache.aclose()


async def test_the_pipeline_name_is_part_of_the_key(aieng_kernel: Kernel) -> None:
    """Two pipelines sharing one cache do not answer each other's requests (unless
    ``key_pipeline = false``)."""
    shared = ExactCache(CacheOptions())
    a = aieng_kernel.compose({"cache": shared, "llm": ScriptedBackend(["from a"])}, name="a",
                             stages=["cache_lookup", "generate", "cache_store"])
    b = aieng_kernel.compose({"cache": shared, "llm": ScriptedBackend(["from b"])}, name="b",
                             stages=["cache_lookup", "generate", "cache_store"])
    await a.run("hi")
    result = await b.run("hi")
    assert result.cache_hit is None and result.answer == "from b"


async def test_bad_options_fail_loading(aieng_kernel: Kernel, register_plugin: Register,
                                  tmp_path: Path) -> None:
    """Unknown keys, a TTL table without default, a zero TTL and no level at all are
    configuration errors naming what is wrong."""
    with register_plugin(aieng_cache, "cache"), register_plugin(ScriptedPlugin(), "scripted"):
        for bad, message in [({"ttls": {}}, "unknown option"),
                             ({"ttl": {"json": 5}}, "'default' entry"),
                             ({"ttl": {"default": 0}}, "ttl.default must be"),
                             ({"memory": False, "sqlite": ""}, "no level")]:
            config = cached_pipeline(tmp_path, **bad)
            if "sqlite" in bad:
                config["components"]["cache"]["sqlite"] = ""
            with pytest.raises(ConfigError, match=message):
                aieng_kernel.pipeline(config)


def test_a_redis_level_without_aieng_redis_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking for a level no distribution offers names the package to install."""
    monkeypatch.setattr(aieng_cache._levels, "entry_points", lambda **_: [])
    with pytest.raises(LookupError, match="pip install aieng-redis"):
        ExactCache(CacheOptions(redis="redis://127.0.0.1:1"))


async def test_a_toml_pipeline_file_with_a_ttl_table(
    aieng_kernel: Kernel, register_plugin: Register, tmp_path: Path
) -> None:
    """A TOML file's ``ttl`` table (integers, ``inf``) loads into the options and
    round-trips through ``to_dict``."""
    path = tmp_path / "faq.toml"
    path.write_text(f'''
[pipeline]
name = "faq"
stages = ["cache_lookup", "generate", "cache_store"]

[components.cache]
use = "cache"
sqlite = "{tmp_path / 'faq.db'}"
max_entries = 500
ttl = {{ default = 3600, json = 86400, faq = inf }}
template_version = "v3"

[components.llm]
use = "scripted"
''')
    with register_plugin(aieng_cache, "cache"), register_plugin(ScriptedPlugin(), "scripted"):
        pipeline = aieng_kernel.load_pipeline(path)
    table = pipeline.to_dict()["components"]["cache"]
    assert table["ttl"] == {"default": 3600.0, "json": 86400.0, "faq": float("inf")}
    assert table["template_version"] == "v3" and table["max_entries"] == 500
    async with pipeline:
        await pipeline.run("hi")
        assert (await pipeline.run("hi")).cache_hit == "cache"


class ToolCallingPlugin:
    """Offers a ``scripted`` backend that asks for two tool calls (ids, nested arguments)."""

    CALLS = (ToolCall("call_1", "search", {"q": "RRF", "filters": {"year": [2009, None]}}),
             ToolCall("call_2", "calc", {"expr": "1/(60+1)", "exact": True}))

    def __init__(self) -> None:
        self.backend = ScriptedBackend([self.CALLS], usage=Usage(11, 7))

    @hookimpl
    def aieng_register_components(self, registry: Any) -> None:
        registry.add("scripted", lambda: self.backend)


@pytest.mark.parametrize("memory", [False, True])
async def test_a_streamed_hit_replays_tool_calls_and_usage(
    aieng_kernel: Kernel, register_plugin: Register, tmp_path: Path, memory: bool,
) -> None:
    """A streaming caller answered from the cache (the memory level, or the file read
    back) gets the stored tool calls — ids, names, arguments — and usage exactly, as one
    delta, and the backend is asked once."""
    plugin = ToolCallingPlugin()
    tools = (ToolSpec(name="search"), ToolSpec(name="calc"))
    request = Request(messages=(Message("user", "Look up RRF"),), tools=tools)
    with register_plugin(aieng_cache, "cache"), register_plugin(plugin, "scripted"):
        pipeline = aieng_kernel.pipeline(cached_pipeline(tmp_path, memory=memory))
        reopened = aieng_kernel.pipeline(cached_pipeline(tmp_path, memory=memory))
    runs: list[list[Delta]] = [[], []]
    async with pipeline:
        first = await pipeline.run(request, on_delta=runs[0].append)
        if memory:  # the same process: its memory level answers
            second = await pipeline.run(request, on_delta=runs[1].append)
    if not memory:  # a new process would: the file answers
        async with reopened:
            second = await reopened.run(request, on_delta=runs[1].append)
    assert len(plugin.backend.requests) == 1
    assert second.cache_hit == "cache" and second.completion is not None
    assert second.completion == attrs.evolve(first.completion, cached=True)
    [delta] = runs[1]
    assert delta.tool_calls == ToolCallingPlugin.CALLS
    assert delta.usage == Usage(11, 7) and delta.finish_reason == "tool_calls"
