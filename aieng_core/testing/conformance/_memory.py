"""The conformance suite of the ``memory`` role."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aieng_hookspecs.types import MemoryItem, Query

from ...kernel import Kernel
from ...pipeline import Pipeline
from .. import strategies as aist
from .._kit import EventCapture
from ._base import PROPERTY, STAGE, RoleSuite, check_valid, left_unchanged

__all__ = ["DEFAULT_FACTS", "MemorySuite"]

# A text long enough to pass any prompt-sized buffer (about 23,000 characters).
_LONG = " ".join(["Filler sentence about nothing in particular."] * 500
                 + ["The vault opens with zanzibarquartz only."])

#: The suite's default facts: ``(text stored, query recalling it)``, each query sharing
#: whitespace-separated words with its own text and with no other (Unicode, a long text
#: included), so that word overlap and embeddings of words both relate the two.
DEFAULT_FACTS: tuple[tuple[str, str], ...] = (
    ("The user's cat is called Miso", "cat Miso"),
    ("The user lives in Lyon near the Saône", "Lyon"),
    ("Project Falcon ships on 12 March", "Falcon ships when"),
    ("Die Straße heißt Königsallee", "Königsallee Straße"),
    ("東京 は 日本 の 首都 です", "首都 東京"),
    ("The mascot is a fox 🦊", "mascot 🦊"),
    (_LONG, "zanzibarquartz"),
)


def _marker() -> str:
    """A word no text stored before has."""
    return f"zq{uuid.uuid4().hex[:12]}"


class MemorySuite(RoleSuite):
    """Conformance of a memory (``aieng_memory_store``, ``aieng_memory_recall``).

    Subclass it with a ``component`` fixture returning an *empty* memory::

        class TestMyMemory(MemorySuite):
            @pytest.fixture
            def component(self, tmp_path) -> MyMemory:
                return MyMemory(path=tmp_path / "memory.db")

    A recall answers ``None`` ("nothing kept") or a list of at most ``k`` valid
    :class:`MemoryItem` values, best first (scores not increasing); an empty memory recalls
    nothing; the items and the query given are left as they were. A recall with
    ``Query.filters`` gives only items stored with matching metadata or, from a memory that
    supports no filters, what it recalls without them (items of another ``namespace`` never
    fill up a filtered recall).

    **The suite's assumption**: what was stored is recalled by a query sharing a word with
    its text that no other stored text has, first among what is recalled (word overlap
    ranks it so; so does an embedding of the words), and of items sharing a word with the
    query, one sharing two comes first, whatever their age. The suite stores items of the kind
    ``stored_kind`` (``"long"``: what outlives a run; override it with ``"short"`` for a
    memory that keeps short-term items only) and recalls them back, Unicode and long
    texts, one text stored twice, and many items stored concurrently, none lost.

    Fixtures it may override: ``stored_kind``; ``memory_facts`` (pairs of a text stored
    and a query recalling it, each query sharing words with its own text and no other:
    :data:`DEFAULT_FACTS`); ``companions`` (other components of the suite's pipelines by
    name: an embedder, for a memory that recalls through ``context.embed``; none by
    default, so a memory that embeds must fall back on something else or be given one).
    Set ``distinct_texts = False`` for a memory that keeps every occurrence of a text (a
    conversation buffer) rather than one entry per text.
    """

    role = "memory"
    required_hooks = ("aieng_memory_store", "aieng_memory_recall")
    role_hooks = ("aieng_memory_store", "aieng_memory_recall")
    #: Whether a text stored twice is recalled once (one entry per text).
    distinct_texts: ClassVar[bool] = True

    # -- fixtures ------------------------------------------------------------------------

    @pytest.fixture
    def stored_kind(self) -> Literal["short", "long"]:
        """The kind of the items the suite stores."""
        return "long"

    @pytest.fixture
    def memory_facts(self) -> Sequence[tuple[str, str]]:
        """``(text, query)`` pairs: each query shares a word with its own text only."""
        return DEFAULT_FACTS

    @pytest.fixture
    def companions(self) -> Mapping[str, object]:
        """Other components of the suite's pipelines, by name (none by default)."""
        return {}

    @pytest.fixture
    async def conformance_pipeline(self, aieng_kernel: Kernel, component: object,
                                   companions: Mapping[str, object]) -> Pipeline:
        """A pipeline of the kit's kernel holding the memory (``subject``) and its
        ``companions``."""
        return self.compose(aieng_kernel, component, others=companions)

    # -- calling the hooks through the kernel -------------------------------------------

    async def store(self, pipeline: Pipeline, items: Sequence[MemoryItem]) -> None:
        """``aieng_memory_store`` through the dispatcher (failing when the impl changes the
        items in place). The pipeline is opened first: a memory may embed through the
        context its opening gives it."""
        await pipeline.open()
        given_items = tuple(items)
        await left_unchanged(
            pipeline.dispatcher.gather("aieng_memory_store", {"items": given_items},
                                       stage=STAGE),
            "aieng_memory_store", items=given_items)

    async def recall(self, pipeline: Pipeline, query: Query, k: int) -> Any:
        """``aieng_memory_recall`` through the dispatcher: what the memory answered (failing
        when the impl changes the query in place)."""
        await pipeline.open()
        gathered = await left_unchanged(
            pipeline.dispatcher.gather("aieng_memory_recall", {"query": query, "k": k},
                                       stage=STAGE),
            "aieng_memory_recall", query=query)
        return gathered[0][0] if gathered else None

    async def recalled(self, pipeline: Pipeline, text: str, k: int) -> list[MemoryItem]:
        """The items recalled for ``text``, checked (:meth:`check_items`)."""
        return self.check_items(await self.recall(pipeline, Query(text=text), k), k)

    async def exercise(self, pipeline: Pipeline, request: pytest.FixtureRequest) -> None:
        """Store the facts and recall one of them."""
        await pipeline.open()
        kind = request.getfixturevalue("stored_kind")
        facts = request.getfixturevalue("memory_facts")
        await self.store(pipeline, [MemoryItem(text, kind=kind) for text, _ in facts])
        await self.recall(pipeline, Query(text=facts[0][1]), 3)

    async def steady_setup(self, pipeline: Pipeline, request: pytest.FixtureRequest) -> None:
        """Store the facts of ``memory_facts`` up to 1,000 characters long (the check
        measures what a recall keeps, not how long it scans a long text)."""
        kind = request.getfixturevalue("stored_kind")
        facts = request.getfixturevalue("memory_facts")
        await self.store(pipeline, [MemoryItem(text, kind=kind) for text, _ in facts
                                    if len(text) <= 1_000])

    async def steady_call(self, pipeline: Pipeline, i: int) -> None:
        """A recall of a query of its own (made of ``i``), k=3, from the memory the facts
        were stored in (what it stores, it keeps: only recalls are measured)."""
        await self.recall(pipeline, Query(text=f"what did I say about fusion {i}"), 3)

    # -- checks --------------------------------------------------------------------------

    def check_items(self, items: object, k: int) -> list[MemoryItem]:
        """``None``, or a list of at most ``k`` valid memory items, scores not increasing."""
        if items is None:  # "nothing kept"
            return []
        assert isinstance(items, (list, tuple)), (
            f"aieng_memory_recall returned {type(items).__name__}, expected a list of "
            "MemoryItem")
        assert len(items) <= k, f"{len(items)} items for k={k}"
        for number, item in enumerate(items, 1):
            assert isinstance(item, MemoryItem), f"item {number} ({item!r:.100}) is no MemoryItem"
            check_valid(item, f"item {number}")
        scores = [item.score for item in items]
        assert scores == sorted(scores, reverse=True), (
            f"the items are not best first: scores {scores}")
        return list(items)

    def check_first(self, items: list[MemoryItem], text: str, query: str) -> None:
        """The first item recalled is ``text``."""
        assert items, f"nothing recalled for {query!r:.80}, which shares a word with a text stored"
        assert items[0].text == text, (
            f"{query!r:.80} recalled {items[0].text!r:.80} first, not the text sharing its "
            f"word, {text!r:.80}")

    # -- tests ---------------------------------------------------------------------------

    async def test_an_empty_memory_recalls_nothing(
        self, conformance_pipeline: Pipeline, memory_facts: Sequence[tuple[str, str]]
    ) -> None:
        """Before anything was stored, every recall is None or empty."""
        for query in ["", "anything at all", "東京", *(q for _, q in memory_facts)]:
            for k in (1, 5):
                items = await self.recalled(conformance_pipeline, query, k)
                assert not items, f"an empty memory recalled {items[0].text!r:.80} for {query!r}"

    async def test_recalls_what_was_stored(
        self, conformance_pipeline: Pipeline, memory_facts: Sequence[tuple[str, str]],
        stored_kind: Literal["short", "long"],
    ) -> None:
        """Each fact stored is recalled first (``k=1``) by its own query, and among the
        first ``k`` for larger ``k``; Unicode and long texts come back as stored."""
        await self.store(conformance_pipeline,
                         [MemoryItem(text, kind=stored_kind) for text, _ in memory_facts])
        for text, query in memory_facts:
            self.check_first(await self.recalled(conformance_pipeline, query, 1), text, query)
            found = await self.recalled(conformance_pipeline, query, len(memory_facts))
            self.check_first(found, text, query)

    async def test_the_best_match_comes_first(
        self, conformance_pipeline: Pipeline, stored_kind: Literal["short", "long"]
    ) -> None:
        """Of the items sharing a word with the query, the one sharing its other word too
        comes first, whether it was stored before the others or after them (relevance,
        not age, ranks)."""
        for target_first in (True, False):
            common, rare = _marker(), _marker()
            target = [MemoryItem(f"{common} {rare} target", kind=stored_kind)]
            others = [MemoryItem(f"{common} another note {n}", kind=stored_kind)
                      for n in range(5)]
            for items in (target, others) if target_first else (others, target):
                await self.store(conformance_pipeline, items)
            query = f"{common} {rare}"
            for k in (1, 3):
                self.check_first(await self.recalled(conformance_pipeline, query, k),
                                 target[0].text, query)

    async def test_k_bounds_the_recall(
        self, conformance_pipeline: Pipeline, stored_kind: Literal["short", "long"]
    ) -> None:
        """With more relevant items kept than ``k``, a recall returns at most ``k``, best
        first, and at least one."""
        word = _marker()
        await self.store(conformance_pipeline, [
            MemoryItem(f"{word} note number {n}", kind=stored_kind) for n in range(8)])
        for k in (1, 2, 3, 7, 8, 20):
            items = await self.recalled(conformance_pipeline, word, k)
            assert items, f"nothing recalled for {word!r} (k={k}), which 8 stored texts hold"

    async def test_storing_a_text_twice(
        self, conformance_pipeline: Pipeline, stored_kind: Literal["short", "long"]
    ) -> None:
        """A text stored twice (in one call, then again) is recalled, once unless the
        suite's ``distinct_texts`` is false."""
        text = f"{_marker()} the meeting moved to Thursday"
        item = MemoryItem(text, kind=stored_kind)
        await self.store(conformance_pipeline, [item, item])
        await self.store(conformance_pipeline, [item])
        items = await self.recalled(conformance_pipeline, text, 10)
        texts = [found.text for found in items]
        assert text in texts, f"a text stored twice is not recalled: {texts}"
        if self.distinct_texts:
            assert texts.count(text) == 1, (
                f"a text stored twice is recalled {texts.count(text)} times in one answer: "
                "keep one entry per text (or set distinct_texts = False)")

    async def test_concurrent_stores_lose_nothing(
        self, conformance_pipeline: Pipeline, stored_kind: Literal["short", "long"]
    ) -> None:
        """Items stored by many concurrent calls (as the runner's concurrent steps and
        several agents on one memory store them) are all kept."""
        words = [_marker() for _ in range(16)]

        async def store(word: str) -> None:
            await self.store(conformance_pipeline,
                             [MemoryItem(f"{word} was stored concurrently", kind=stored_kind)])

        async with anyio.create_task_group() as group:
            for word in words:
                group.start_soon(store, word)
        for word in words:
            self.check_first(await self.recalled(conformance_pipeline, word, 1),
                             f"{word} was stored concurrently", word)

    async def test_filters_are_applied_or_ignored(
        self, conformance_pipeline: Pipeline, stored_kind: Literal["short", "long"]
    ) -> None:
        """Items kept under two values of a metadata key (``namespace``: one user's memory
        and another's; a plain key), recalled with a filter on one value, are all items
        stored with that value (by the rule of :meth:`Query.matches`), or, from a memory
        that supports no filters, the items recalled without the filter: another
        namespace's items never fill up a filtered recall."""
        for key in ("namespace", "aieng_conformance_group"):
            word = _marker()
            stored = {f"{word} note {n} kept for {value}": {key: value}
                      for value in ("alice", "bob") for n in range(3)}
            await self.store(conformance_pipeline, [
                MemoryItem(text, kind=stored_kind, metadata=metadata)
                for text, metadata in stored.items()])
            plain = [item.text for item in await self.recalled(conformance_pipeline, word, 10)]
            for value in ("alice", "bob"):
                query = Query(text=word, filters={key: value})
                got = [item.text for item in self.check_items(
                    await self.recall(conformance_pipeline, query, 10), 10)]
                stray = [text for text in got if not query.matches(stored.get(text, {}))]
                assert not stray or got == plain, (
                    f"a recall filtered on {key}={value!r} gave {stray[:2]}, stored with "
                    f"another {key}, yet differs from the recall without the filter: apply "
                    "the filter to every item (as Query.matches does), or ignore filters")

    @PROPERTY
    @given(text=st.text(max_size=300), k=st.integers(min_value=1, max_value=10))
    async def test_any_text_is_recalled_by_its_word(
        self, conformance_pipeline: Pipeline, stored_kind: Literal["short", "long"],
        text: str, k: int,
    ) -> None:
        """Any text (any Unicode, control characters, blank) stored after a word of its
        own is recalled first, unchanged, by that word."""
        word = _marker()
        stored = f"{word} {text}"
        await self.store(conformance_pipeline, [MemoryItem(stored, kind=stored_kind)])
        self.check_first(await self.recalled(conformance_pipeline, word, k), stored, word)

    @PROPERTY
    @given(query=aist.queries(), k=st.integers(min_value=1, max_value=10),
           items=st.lists(aist.memory_items(), max_size=4))
    async def test_any_query_gets_valid_items(
        self, conformance_pipeline: Pipeline, query: Query, k: int, items: list[MemoryItem]
    ) -> None:
        """Storing any items (either kind, any metadata) and recalling for any query (any
        filters) gives None or at most ``k`` valid items, best first."""
        await self.store(conformance_pipeline, items)
        self.check_items(await self.recall(conformance_pipeline, query, k), k)

    async def test_does_not_block_the_loop(
        self, conformance_pipeline: Pipeline, captured_events: EventCapture,
        memory_facts: Sequence[tuple[str, str]], stored_kind: Literal["short", "long"],
    ) -> None:
        """Storing and recalling never stall the event loop."""
        async with self.loop_watch(captured_events):
            for text, query in memory_facts:
                await self.store(conformance_pipeline, [MemoryItem(text, kind=stored_kind)])
                await self.recall(conformance_pipeline, Query(text=query), 5)
