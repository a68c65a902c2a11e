"""The conformance suite of fusers (``aieng_fuse``, part of the ``retriever`` role)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from aieng_hookspecs.types import Document, Hit, Query

from ...pipeline import Pipeline
from .. import strategies as aist
from .._kit import EventCapture
from ._base import PROPERTY, STAGE, RoleSuite, check_valid, left_unchanged, unique

__all__ = ["FuserSuite"]

_MAX_RUNS = 4


class FuserSuite(RoleSuite):
    """Conformance of a fuser (``aieng_fuse``): merging several retrievers' runs.

    Subclass it with a ``component`` fixture returning the fuser::

        class TestMyFuser(FuserSuite):
            @pytest.fixture
            def component(self) -> MyFuser:
                return MyFuser()

    Runs come from :func:`aieng_core.testing.strategies.runs`: ties are frequent and the
    same document turns up in several runs.
    """

    role = "retriever"
    required_hooks = ("aieng_fuse",)
    role_hooks = ("aieng_fuse",)

    async def fuse(self, pipeline: Pipeline, query: Query,
                   runs: Sequence[Sequence[Hit]]) -> Any:
        """``aieng_fuse`` through the pipeline's dispatcher; ``None`` when not answered;
        fails when the impl changes the query or the runs in place."""
        lists = [list(run) for run in runs]
        found = await left_unchanged(
            pipeline.dispatcher.first("aieng_fuse", {"query": query, "runs": lists},
                                      stage=STAGE),
            "aieng_fuse", query=query, runs=lists)
        return None if found is None else found[0]

    async def steady_call(self, pipeline: Pipeline, i: int) -> None:
        """Two runs of hits under ids of their own (made of ``i``), in opposite orders,
        fused for a query of its own (straight through the dispatcher)."""
        ids = [f"steady-{i}-{n}" for n in range(4)]
        first = [Hit(Document(d, f"passage {d}"), score=1.0 / (n + 1), rank=n + 1,
                     source="a") for n, d in enumerate(ids)]
        second = [Hit(Document(d, f"passage {d}"), score=1.0 / (n + 1), rank=n + 1,
                      source="b") for n, d in enumerate(reversed(ids))]
        await pipeline.dispatcher.first("aieng_fuse", {
            "query": Query(f"question {i}"), "runs": [first, second]}, stage=STAGE)

    # -- checks --------------------------------------------------------------------------

    def check_fused(self, fused: object, runs: Sequence[Sequence[Hit]]) -> list[Hit]:
        """One list of hits, ranks 1..n, scores not increasing, each document once and each
        one of the runs' documents, unchanged."""
        assert isinstance(fused, (list, tuple)), (
            f"aieng_fuse returned {type(fused).__name__}, expected a list of Hit")
        for position, hit in enumerate(fused, start=1):
            assert isinstance(hit, Hit), f"item {position} is {type(hit).__name__}, not Hit"
            check_valid(hit, f"hit {position}")
            assert hit.rank == position, f"hit {position} has rank {hit.rank}"
        typed: list[Hit] = list(fused)
        ids = [h.document.id for h in typed]
        assert unique(ids), f"a document is fused twice: {ids}"
        given_ids = {h.document.id for run in runs for h in run}
        stray = [i for i in ids if i not in given_ids]
        assert not stray, f"fused documents {stray} are in none of the runs"
        for hit in typed:  # the runs' documents as they are: same text, title, metadata
            assert any(h.document == hit.document for run in runs for h in run), (
                f"fused document {hit.document.id!r} differs from the runs' document")
        for before, after in itertools.pairwise(typed):
            assert before.score >= after.score, (
                f"scores increase: rank {before.rank} has {before.score}, "
                f"rank {after.rank} has {after.score}")
        return typed

    async def check_order_invariant(self, pipeline: Pipeline, query: Query,
                                    runs: Sequence[Sequence[Hit]],
                                    order: Sequence[int]) -> None:
        """Fusing the runs in ``order`` gives what fusing them as given gives."""
        reordered = [runs[i] for i in order]
        first = await self.fuse(pipeline, query, runs)
        second = await self.fuse(pipeline, query, reordered)
        if first is None or second is None:  # "not mine" must not depend on order either
            assert first is None and second is None, (
                "aieng_fuse answered for one order of the runs and not for another")
            return
        a, b = self.check_fused(first, runs), self.check_fused(second, reordered)
        assert [h.document for h in a] == [h.document for h in b], (
            f"the fused order depends on the order of the runs: "
            f"{[h.document.id for h in a]} != {[h.document.id for h in b]}")
        for x, y in zip(a, b):
            assert math.isclose(x.score, y.score, rel_tol=1e-9, abs_tol=1e-12), (
                f"the score of {x.document.id!r} depends on the order of the runs: "
                f"{x.score} != {y.score}")

    # -- tests ---------------------------------------------------------------------------

    @PROPERTY
    @given(query=aist.queries(), runs=aist.runs(max_runs=_MAX_RUNS),
           shuffle=st.permutations(range(_MAX_RUNS)))
    async def test_order_of_runs_does_not_matter(
        self, conformance_pipeline: Pipeline, query: Query, runs: list[list[Hit]],
        shuffle: list[int],
    ) -> None:
        """Permuting the input runs changes nothing: same documents, order and scores."""
        order = [i for i in shuffle if i < len(runs)]
        await self.check_order_invariant(conformance_pipeline, query, runs, order)

    async def test_ties_and_versions_do_not_follow_the_order_of_runs(
        self, conformance_pipeline: Pipeline
    ) -> None:
        """Documents placed symmetrically in two runs (so tied under a fuser treating runs
        alike) and one document given in a different version by each run, all at the same
        position: every order of the runs fuses to the same list, ties broken and versions
        kept by a rule of the fuser's own, not by which run came first (the kernel's RRF
        orders ties by document id and keeps the version first by source, text, title,
        metadata)."""

        def hit(doc: Document, score: float, rank: int, source: str) -> Hit:
            return Hit(doc, score=score, rank=rank, source=source)

        x, y, w = (Document(i, f"text of {i}") for i in ("x", "y", "w"))
        versions = [Document("v", "version one", metadata={"n": 1}),
                    Document("v", "version two", title="Two"),
                    Document("v", "version three", metadata={"n": [3]})]
        runs = [
            [hit(x, 1.0, 1, "a"), hit(y, 0.5, 2, "a"), hit(versions[0], 0.25, 3, "a")],
            [hit(y, 1.0, 1, "b"), hit(x, 0.5, 2, "b"), hit(versions[1], 0.25, 3, "b")],
            [hit(w, 1.0, 1, "c"), hit(Document("z", "text of z"), 0.5, 2, "c"),
             hit(versions[2], 0.25, 3, "c")],
        ]
        for order in itertools.permutations(range(len(runs))):
            await self.check_order_invariant(conformance_pipeline, Query("x y"), runs, order)
        for order in itertools.permutations(range(2)):  # the symmetric pair on its own
            await self.check_order_invariant(conformance_pipeline, Query("x y"), runs[:2],
                                             order)

    @PROPERTY
    @given(query=aist.queries(), runs=aist.runs())
    async def test_fused_hits_are_well_formed(
        self, conformance_pipeline: Pipeline, query: Query, runs: list[list[Hit]]
    ) -> None:
        """The fused list has ranks 1..n, each document once, drawn from the runs."""
        fused = await self.fuse(conformance_pipeline, query, runs)
        if fused is not None:
            self.check_fused(fused, runs)

    async def test_fuses_every_document(self, conformance_pipeline: Pipeline) -> None:
        """Two disjoint runs fuse into a list holding documents of both."""
        left = [Hit(Document(f"l{i}", f"left {i}"), score=1.0 - i / 10, rank=i + 1,
                    source="left") for i in range(3)]
        right = [Hit(Document(f"r{i}", f"right {i}"), score=5.0 - i, rank=i + 1,
                     source="right") for i in range(3)]
        fused = await self.fuse(conformance_pipeline, Query("anything"), [left, right])
        assert fused is not None, "aieng_fuse returned None for plain runs"
        ids = {h.document.id for h in self.check_fused(fused, [left, right])}
        assert ids & {"l0", "l1", "l2"} and ids & {"r0", "r1", "r2"}, (
            "the fused list lost one of the runs entirely")

    async def test_does_not_block_the_loop(
        self, conformance_pipeline: Pipeline, captured_events: EventCapture
    ) -> None:
        """Fusing never stalls the event loop."""
        docs = [Document(f"d{i}", f"text {i}") for i in range(200)]
        runs = [[Hit(d, score=float(-i), rank=i + 1, source=f"r{r}")
                 for i, d in enumerate(docs[r::3])] for r in range(3)]
        async with self.loop_watch(captured_events):
            for _ in range(5):
                await self.fuse(conformance_pipeline, Query("anything"), runs)
