"""``clear()`` of a cache empties its own namespace only, in a SQLite file shared by
namespaces, and files written before entries recorded their namespace stay readable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from aieng_cache import (
    CacheOptions,
    ExactCache,
    KeyScope,
    SemanticCache,
    SemanticOptions,
    SQLiteLevel,
    SQLiteStore,
    decode_completion,
    encode_completion,
    payload_namespace,
    request_key,
)
from aieng_hookspecs.types import Completion, Message, Request

pytestmark = pytest.mark.anyio


def ask(text: str) -> Request:
    return Request(messages=(Message("user", text),))


def sqlite_cache(path: Path, namespace: str, *, memory: bool = False) -> ExactCache:
    return ExactCache(CacheOptions(memory=memory, sqlite=str(path), namespace=namespace))


def test_the_payload_carries_the_namespace_and_readers_ignore_it() -> None:
    """An entry encoded with a namespace decodes to the same completion; one encoded
    without (or unreadable) has no known namespace."""
    completion = Completion(text="a")
    tagged = encode_completion(completion, namespace="tenant-é")
    assert payload_namespace(tagged) == "tenant-é"
    assert payload_namespace(encode_completion(completion, namespace="")) == ""
    assert decode_completion(tagged) == decode_completion(encode_completion(completion))
    for unknown in (encode_completion(completion), "not json", b"\xff\xfe", "[1]",
                    '{"f":1,"ns":3}'):
        assert payload_namespace(unknown) is None


@pytest.mark.parametrize("memory", [False, True])
async def test_clear_empties_only_its_own_namespace(tmp_path: Path, memory: bool) -> None:
    """Two caches of other namespaces share one file; clearing one leaves the other's
    entries answering (the empty namespace included) and removes all of its own."""
    path = tmp_path / "shared.db"
    first, second = sqlite_cache(path, "", memory=memory), sqlite_cache(path, "b",
                                                                           memory=memory)
    for i in range(3):
        await first.aieng_cache_store(ask(f"q{i}"), Completion(text=f"first {i}"))
        await second.aieng_cache_store(ask(f"q{i}"), Completion(text=f"second {i}"))
    await first.clear()
    for i in range(3):
        assert await first.aieng_cache_lookup(ask(f"q{i}")) is None
        found = await second.aieng_cache_lookup(ask(f"q{i}"))
        assert found is not None and found.text == f"second {i}"
    await second.clear()
    level = second.levels[0]
    assert isinstance(level, SQLiteLevel) and level.store.count() == 0
    await first.aclose()
    await second.aclose()


async def test_a_file_written_without_namespaces_is_served_and_cleared(tmp_path: Path) -> None:
    """A file of the earlier layout (no ``scope`` column, values without a namespace) still
    answers its requests; its entries, of unknown namespace, go with any namespace's
    ``clear`` (they may be that namespace's), and a corrupt value does not stop it."""
    path = tmp_path / "old.db"
    request = ask("What is RRF?")
    key = request_key(request, KeyScope(namespace="a"))
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                     "kind TEXT NOT NULL, tag TEXT, vector BLOB, created REAL NOT NULL, "
                     "expires REAL)")
        conn.execute("INSERT INTO entries VALUES (?, ?, 'chat', NULL, NULL, 1.0, NULL)",
                     (key, encode_completion(Completion(text="old answer"))))
        conn.execute("INSERT INTO entries VALUES ('corrupt', '{\"f\":1,', 'chat', NULL, "
                     "NULL, 1.0, NULL)")
    conn.close()
    cache = sqlite_cache(path, "a")
    other = sqlite_cache(path, "b")
    found = await cache.aieng_cache_lookup(request)
    assert found is not None and found.text == "old answer"
    await other.aieng_cache_store(ask("kept"), Completion(text="b's"))
    await cache.clear()
    assert await cache.aieng_cache_lookup(request) is None
    level = cache.levels[0]
    assert isinstance(level, SQLiteLevel) and level.store.count() == 1
    assert (await other.aieng_cache_lookup(ask("kept"))) is not None
    await cache.aclose()
    await other.aclose()


def test_store_clear_without_a_namespace_empties_the_file(tmp_path: Path) -> None:
    """``SQLiteStore.clear()`` with no namespace still removes every row."""
    store = SQLiteStore(tmp_path / "s.db")
    for ns in ("a", "b", None):
        store.put(f"k{ns}", encode_completion(Completion(text="x"), namespace=ns),
                  kind="chat", now=1.0)
    store.clear("a")
    assert store.count() == 1 and store.get("kb", 2.0) is not None
    store.clear()
    assert store.count() == 0
    store.close()


async def test_a_level_without_clear_namespace_is_emptied_whole() -> None:
    """A third-party level offering only ``clear`` is still cleared (whole)."""

    class Plain:
        name = "plain"

        def __init__(self) -> None:
            self.cleared = 0

        async def get(self, key: str, now: float) -> None:
            return None

        async def put(self, key: str, payload: str, *, kind: str, now: float,
                      expires_at: float) -> None:
            return None

        async def delete(self, key: str) -> None:
            return None

        async def clear(self) -> None:
            self.cleared += 1

        async def aclose(self) -> None:
            return None

    level = Plain()
    cache = ExactCache(CacheOptions(namespace="a"), levels=[level])
    await cache.clear()
    assert level.cleared == 1


async def test_semantic_rows_in_a_shared_file_keep_their_namespace(tmp_path: Path) -> None:
    """A semantic cache writing into the file of an exact cache of another namespace keeps
    its rows when the exact cache clears its own."""
    path = tmp_path / "shared.db"

    def embed(texts: object, model: object) -> list[list[float]]:
        return [[1.0, 0.0]]

    semantic = SemanticCache(SemanticOptions(path=str(path), namespace="s"), embedder=embed)
    await semantic.aieng_cache_store(ask("hello"), Completion(text="hi"))
    exact = sqlite_cache(path, "e")
    await exact.aieng_cache_store(ask("hello"), Completion(text="exact"))
    await exact.clear()
    assert semantic.store is not None and semantic.store.count() == 1
    await exact.aclose()
    await semantic.aclose()


def test_a_namespace_is_cleared_without_sqlite_json_functions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds of SQLite before 3.38 may lack the JSON functions: clearing a namespace does
    not use them (every json_* call is refused here), and clears what it should."""
    import aieng_cache._sqlite as module

    real = sqlite3.connect

    def connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = real(*args, **kwargs)  # type: ignore[arg-type]

        def no_json(action: int, _: str | None, name: str | None, *rest: object) -> int:
            refused = action == sqlite3.SQLITE_FUNCTION and (name or "").startswith("json")
            return sqlite3.SQLITE_DENY if refused else sqlite3.SQLITE_OK

        conn.set_authorizer(no_json)
        return conn

    monkeypatch.setattr(module.sqlite3, "connect", connect)
    store = SQLiteStore(tmp_path / "c.db")
    for namespace, key in (("a", "k1"), ("b", "k2"), (None, "k3")):
        store.put(key, encode_completion(Completion(text=key), namespace=namespace),
                  kind="chat", now=0.0)
    store.clear("a")
    assert store.count() == 1 and store.get("k2", 0.0) is not None
    store.close()
