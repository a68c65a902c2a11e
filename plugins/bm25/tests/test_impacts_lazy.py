"""``scorer = "impacts"`` under a bulk load: a write leaves the impacts stale and the next
search rebuilds them once, for every write before it; searches that meet a rebuild in
progress wait for it and share it, and none misses a write that has returned.

Growth is shown with counts (rebuilds through a counting wrapper of the build), never
with timings."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aieng_bm25._impacts as impacts_module
import anyio
import pytest
from aieng_bm25 import MEMORY, BM25Index, BM25Options
from aieng_hookspecs.types import Document
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

WORDS = ["wing", "flow", "shock", "plate", "heat", "shell", "drag", "lift", "mach"]
IDS = [f"d{i}" for i in range(8)]


class Builds:
    """A counting double around the impacts' build (``_impacts._build``): ``count`` is the
    number of rebuilds; with ``hold`` set, each build first waits for ``release``."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real, self.count = real, 0
        self.hold = False
        self.started, self.release = threading.Event(), threading.Event()
        self.fail: BaseException | None = None

    def __call__(self, *args: Any) -> Any:
        self.count += 1
        if self.hold:
            self.started.set()
            assert self.release.wait(60), "the test never released the build"
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        return self.real(*args)


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Iterator[Builds]:
    double = Builds(impacts_module._build)
    monkeypatch.setattr(impacts_module, "_build", double)
    yield double
    double.release.set()  # never leave a thread waiting


def _index(where: str) -> BM25Index:
    index = BM25Index(BM25Options(path=where, scorer="impacts"))
    index.open()  # opening builds once (an empty index here)
    return index


@pytest.fixture(params=["memory", "disk"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return MEMORY if request.param == "memory" else str(tmp_path / "idx")


def _batch(start: int, size: int) -> list[Document]:
    return [Document(f"d{i:05d}", f"wing {WORDS[i % len(WORDS)]} flow") for i in
            range(start, start + size)]


@pytest.mark.parametrize("batches", [3, 12])
def test_a_bulk_load_rebuilds_once(builds: Builds, where: str, batches: int) -> None:
    """n batches of writes then one search: one rebuild, whatever n (it was n)."""
    index = _index(where)
    builds.count = 0
    for b in range(batches):
        index.add(_batch(b * 8, 8))
    index.delete(["d00000"])
    assert builds.count == 0
    hits = index.search("wing", 1000)
    assert builds.count == 1
    assert len(hits) == batches * 8 - 1
    index.search("flow", 5)
    index.search("wing", 5)
    assert builds.count == 1
    index.close()


def test_a_search_between_writes_rebuilds_and_sees_them(builds: Builds, where: str) -> None:
    """Each search after a write sees it (one rebuild each); a search with no write
    since the last one rebuilds nothing."""
    index = _index(where)
    builds.count = 0
    index.add([Document("a", "wing"), Document("b", "flow")])
    assert [h.document.id for h in index.search("wing", 5)] == ["a"]
    index.add([Document("c", "wing wing")])
    assert [h.document.id for h in index.search("wing", 5)] == ["c", "a"]
    index.add([Document("c", "flow")])  # an upsert
    assert [h.document.id for h in index.search("wing", 5)] == ["a"]
    index.delete(["a"])
    assert index.search("wing", 5) == []
    assert builds.count == 4
    assert [h.document.id for h in index.search("flow", 5)] == ["b", "c"]
    assert builds.count == 4
    index.close()


def test_refresh_rebuilds_now_and_the_search_does_not(builds: Builds) -> None:
    """An explicit refresh pays the rebuild; the search after it finds the impacts
    current."""
    index = _index(MEMORY)
    builds.count = 0
    index.add(_batch(0, 20))
    index.refresh()
    assert builds.count == 1
    assert len(index.search("wing", 50)) == 20
    assert builds.count == 1


def _stale(builds: Builds) -> BM25Index:
    """An index built once, then written to ("new", a write that has returned, so every
    later search must see it); from now on each rebuild waits for ``builds.release``."""
    index = _index(MEMORY)
    index.add([Document("old", "wing")])
    index.search("wing", 5)
    index.add([Document("new", "wing wing")])
    builds.count, builds.hold = 0, True
    return index


def _arrivals(index: BM25Index) -> list[int]:
    """One entry per look at ``index``'s commit from now on (each search begins with
    one)."""
    arrived: list[int] = []
    stamp = index._stamp

    def counted_stamp() -> Any:
        arrived.append(threading.get_ident())
        return stamp()

    index._stamp = counted_stamp  # type: ignore[method-assign]
    return arrived


def _ids(index: BM25Index) -> list[str]:
    return [h.document.id for h in index.search("wing", 5)]


def test_searches_meeting_a_rebuild_wait_and_share_it(builds: Builds) -> None:
    """Searches that begin while a rebuild is in progress wait for it, answer with the
    write that returned before they began, and cause no rebuild of their own."""
    index = _stale(builds)
    answers: list[list[str]] = []
    first = threading.Thread(target=lambda: answers.append(_ids(index)))
    first.start()
    assert builds.started.wait(60)
    arrived = _arrivals(index)
    others = [threading.Thread(target=lambda: answers.append(_ids(index)))
              for _ in range(4)]
    for thread in others:
        thread.start()
    for _ in range(10_000):  # until each has looked at the commit (then it waits)
        if len(arrived) >= len(others):
            break
        threading.Event().wait(0.001)
    assert answers == []  # nobody answered from the build without "new"
    builds.release.set()
    for thread in [first, *others]:
        thread.join(60)
    assert answers == [["new", "old"]] * 5
    assert builds.count == 1


def test_a_failed_rebuild_leaves_the_impacts_stale_not_broken(builds: Builds) -> None:
    """A rebuild that raises (out of memory, say) fails its search and releases the
    rebuild: the next search rebuilds and answers."""
    index = _index(MEMORY)
    index.add([Document("a", "wing")])
    builds.count, builds.fail = 0, MemoryError()
    with pytest.raises(MemoryError):
        index.search("wing", 5)
    assert [h.document.id for h in index.search("wing", 5)] == ["a"]
    assert builds.count == 2


@pytest.mark.anyio
@pytest.mark.parametrize("cancel", ["the rebuilding search", "a waiting search"])
async def test_cancelling_a_search_does_not_break_the_rebuild(builds: Builds,
                                                               cancel: str) -> None:
    """Searches in worker threads, as the kernel runs them (abandoned when cancelled):
    cancelling the one that is rebuilding, or one waiting for it, leaves the rebuild to
    finish for the others, once, with the write."""
    index = _stale(builds)
    results: list[list[str]] = []
    ended = threading.Semaphore(0)

    def search() -> list[str]:
        try:
            return _ids(index)
        finally:
            ended.release()

    left = anyio.Event()

    async def one(scope: anyio.CancelScope) -> None:
        with scope:
            results.append(await anyio.to_thread.run_sync(search, abandon_on_cancel=True))
        if scope.cancelled_caught:  # its caller gave up; its thread runs on
            left.set()

    scopes = [anyio.CancelScope() for _ in range(4)]
    doomed = scopes[0] if cancel == "the rebuilding search" else scopes[1]
    async with anyio.create_task_group() as group:
        group.start_soon(one, scopes[0])
        assert await anyio.to_thread.run_sync(builds.started.wait, 60)
        arrived = _arrivals(index)
        for scope in scopes[1:]:
            group.start_soon(one, scope)
        for _ in range(10_000):  # until all three have looked at the commit
            if len(arrived) >= 3:
                break
            await anyio.sleep(0.001)
        doomed.cancel()
        await left.wait()
        builds.release.set()
    for _ in scopes:  # every thread ends, the abandoned one too
        assert await anyio.to_thread.run_sync(ended.acquire, True, 60)
    assert results == [["new", "old"]] * 3
    assert builds.count == 1
    assert _ids(index) == ["new", "old"]
    assert builds.count == 1


def test_analyses_stay_one_per_id_between_rebuilds() -> None:
    """Upserting the same ids again and again with no search between keeps one analysis
    per id (not one per write), and a delete drops its ids' at once."""
    index = _index(MEMORY)
    impacts = index._impacts
    assert impacts is not None
    for round_ in range(20):
        index.add([Document(f"d{i}", f"wing {WORDS[(i + round_) % len(WORDS)]}")
                   for i in range(50)])
    assert len(impacts._seen) == 50
    index.delete([f"d{i}" for i in range(25)])
    assert len(impacts._seen) == 25
    assert len(index.search("wing", 100)) == 25
    assert len(impacts._seen) == 25 and len(impacts._row_of) == 25


# -- the lazy rebuild answers as a fresh index does -----------------------------------

texts = st.lists(st.sampled_from(WORDS), max_size=5).map(" ".join)
steps = st.lists(st.one_of(
    st.tuples(st.just("add"), st.lists(st.builds(Document, st.sampled_from(IDS), texts,
                                                 texts), min_size=1, max_size=4)),
    st.tuples(st.just("delete"), st.lists(st.sampled_from(IDS), min_size=1, max_size=3)),
    st.tuples(st.just("search"), st.lists(st.sampled_from(WORDS), min_size=1,
                                          max_size=3).map(" ".join)),
), min_size=1, max_size=10)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps, k=st.integers(1, 9), title_boost=st.sampled_from([0.0, 1.0, 2.5]))
def test_lazy_impacts_answer_as_a_fresh_index(
        steps: list[tuple[str, Any]], k: int, title_boost: float) -> None:
    """Any sequence of writes, deletes and searches: every search's hits (ids, ranks and
    scores, bit for bit) are those of a fresh impacts index of the documents live then,
    written in one batch."""
    options = BM25Options(path=MEMORY, scorer="impacts", title_boost=title_boost)
    index = BM25Index(options)
    model: dict[str, Document] = {}
    for op, arg in [*steps, ("search", " ".join(WORDS))]:
        if op == "add":
            index.add(arg)
            model.update({doc.id: doc for doc in arg})
        elif op == "delete":
            index.delete(arg)
            for doc_id in arg:
                model.pop(doc_id, None)
        else:
            fresh = BM25Index(options)
            fresh.add(list(model.values()))
            got = [(h.document, h.score, h.rank) for h in index.search(arg, k)]
            assert got == [(h.document, h.score, h.rank) for h in fresh.search(arg, k)]
