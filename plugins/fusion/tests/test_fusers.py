"""``convex`` and ``dbsf``: the fuser conformance suite, worked examples, properties."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import aieng_fusion
import pytest
from aieng_fusion import ConvexFuser, ConvexOptions, DBSFFuser, convex_fusion, dbsf_fusion
from aieng_hookspecs import ComponentRegistry, hookimpl
from aieng_hookspecs.types import Document, Hit, Query
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core import ConfigError, Kernel
from aieng_core.registry import PluginInfo
from aieng_core.testing import strategies as aist
from aieng_core.testing.conformance import FuserSuite

Register = Callable[..., AbstractContextManager[PluginInfo]]
Fuse = Callable[[Sequence[Sequence[Hit]]], list[Hit]]

FUSERS: dict[str, Fuse] = {
    "convex": convex_fusion,
    "convex-alpha": lambda runs: convex_fusion(runs, alpha=0.8, dense_sources=("a", "b")),
    "dbsf": dbsf_fusion,
}


class TestConvexConformance(FuserSuite):
    """``convex`` passes every check the kit makes of a fuser."""

    @pytest.fixture
    def component(self) -> ConvexFuser:
        """The convex fuser with its default options."""
        return ConvexFuser()


class TestDBSFConformance(FuserSuite):
    """``dbsf`` passes every check the kit makes of a fuser."""

    @pytest.fixture
    def component(self) -> DBSFFuser:
        """The DBSF fuser."""
        return DBSFFuser()


def run(source: str, *scored: tuple[str, float]) -> list[Hit]:
    return [Hit(Document(doc_id, f"text of {doc_id}"), score=score, rank=rank, source=source)
            for rank, (doc_id, score) in enumerate(scored, start=1)]


def scores(hits: list[Hit]) -> dict[str, float]:
    return {hit.document.id: hit.score for hit in hits}


# -- worked examples ---------------------------------------------------------------------


def test_convex_worked_example() -> None:
    """Min-max per run, dense runs weighted by alpha, a missing document counts 0, ties
    broken by id."""
    dense = run("vectors", ("a", 0.9), ("b", 0.5), ("c", 0.1))
    lexical = run("memory", ("b", 10.0), ("d", 4.0))
    fused = convex_fusion([dense, lexical], alpha=0.5)
    assert [(h.document.id, h.rank) for h in fused] == [("b", 1), ("a", 2), ("c", 3), ("d", 4)]
    assert scores(fused) == pytest.approx({"b": 0.75, "a": 0.5, "c": 0.0, "d": 0.0})
    assert all(h.source == "convex" for h in fused)
    dense_only = convex_fusion([dense, lexical], alpha=1.0)
    assert scores(dense_only) == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0, "d": 0.0})
    lexical_only = convex_fusion([dense, lexical], alpha=0.0)
    assert scores(lexical_only) == {"a": 0.0, "b": 1.0, "c": 0.0, "d": 0.0}


def test_convex_one_kind_of_run_shares_the_weight() -> None:
    """Without dense runs, alpha has nothing to weigh: the runs share the weight equally;
    a run of equal scores normalizes to 1."""
    fused = convex_fusion([run("bm25", ("a", 3.0), ("b", 1.0)), run("memory", ("b", 2.0))],
                          alpha=0.9)
    assert scores(fused) == {"b": 0.5 * 0.0 + 0.5 * 1.0, "a": 0.5}
    assert [h.document.id for h in fused] == ["b", "a"]  # equal scores: b is in both runs


def test_dbsf_worked_example() -> None:
    """Each run maps mean - 3 std to 0 and mean + 3 std to 1; a lone hit gets 0.5."""
    fused = dbsf_fusion([run("x", ("a", 3.0), ("b", 2.0), ("c", 1.0)), run("y", ("c", 7.0))])
    std = math.sqrt(2.0 / 3.0)
    expected = {"a": (3.0 - (2.0 - 3 * std)) / (6 * std), "b": 0.5,
                "c": (1.0 - (2.0 - 3 * std)) / (6 * std) + 0.5}
    assert scores(fused) == pytest.approx(expected, rel=1e-12)
    assert [h.document.id for h in fused] == ["c", "a", "b"]


@pytest.mark.parametrize("name", sorted(FUSERS))
def test_extreme_scores_stay_finite(name: str) -> None:
    """Scores at the edge of the float range neither overflow nor produce NaN."""
    huge = run("vectors", ("a", 1.7e308), ("b", -1.7e308), ("c", -1.7e308))
    tiny = run("memory", ("b", 5e-324), ("a", 0.0))
    fused = FUSERS[name]([huge, tiny])
    assert len(fused) == 3 and all(math.isfinite(h.score) for h in fused)


def test_duplicates_inside_a_run_count_once_at_their_first_position() -> None:
    """A document repeated in one run counts once, with its first (best) score."""
    repeated = run("vectors", ("a", 5.0), ("b", 3.0), ("a", 1.0))
    assert scores(convex_fusion([repeated])) == {"a": 1.0, "b": 0.0}
    assert dbsf_fusion([repeated]) == dbsf_fusion([run("vectors", ("a", 5.0), ("b", 3.0))])


@pytest.mark.parametrize("name", sorted(FUSERS))
def test_one_version_of_a_document_whatever_the_order(name: str) -> None:
    """When runs carry different versions of one id, the best-placed one is kept (then by
    source and text), whichever run comes first."""
    old = [Hit(Document("a", "old text"), score=1.0, rank=1, source="memory"),
           Hit(Document("b", "b"), score=0.5, rank=2, source="memory")]
    new = [Hit(Document("b", "b"), score=0.9, rank=1, source="vectors"),
           Hit(Document("a", "new text"), score=0.2, rank=2, source="vectors")]
    fuse = FUSERS[name]
    assert fuse([old, new]) == fuse([new, old])
    kept = {h.document.id: h.document.text for h in fuse([new, old])}
    assert kept["a"] == "old text"


@pytest.mark.parametrize("name", sorted(FUSERS))
def test_metadata_of_any_shape_fuses(name: str) -> None:
    """Nested metadata keys of mixed or non-JSON types (only top-level keys must be
    strings) neither fail the fusion nor make the kept version depend on the run order."""
    mixed = Hit(Document("a", "same", metadata={"pages": {1: "intro", "n": 2}}), score=1.0,
                rank=1, source="memory")
    tupled = Hit(Document("a", "same", metadata={"spans": {(0, 4): "x"}, "tags": {"b"}}),
                 score=2.0, rank=1, source="memory")
    fuse = FUSERS[name]
    assert [h.document for h in fuse([[mixed]])] == [mixed.document]
    assert fuse([[mixed], [tupled]]) == fuse([[tupled], [mixed]])
    assert [h.document.id for h in fuse([[mixed], [tupled]])] == ["a"]


def test_at_equal_scores_the_document_more_runs_found_comes_first() -> None:
    """A run's worst hit normalizes to 0 under convex, as a document missing from it does:
    at equal fused scores the document held by more runs ranks first, whatever its id."""
    dense = run("vectors", ("a", 0.9), ("z", 0.1))
    lexical = run("bm25", ("b", 5.0), ("w", 1.0), ("z", 1.0))
    fused = convex_fusion([dense, lexical])
    assert scores(fused) == {"a": 0.5, "b": 0.5, "w": 0.0, "z": 0.0}
    assert [h.document.id for h in fused] == ["a", "b", "z", "w"]


def test_empty_runs() -> None:
    """No runs, or only empty ones, fuse to nothing; an empty run takes no weight."""
    for fuse in FUSERS.values():
        assert fuse([]) == [] and fuse([[], []]) == []
    assert scores(convex_fusion([[], run("memory", ("a", 1.0))])) == {"a": 1.0}


def test_options_validate() -> None:
    """alpha must lie in [0, 1] and dense sources must be non-blank names."""
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            ConvexOptions(alpha=bad)
    with pytest.raises(TypeError):
        ConvexOptions(alpha=True)
    with pytest.raises(ValueError):
        ConvexOptions(dense_sources=("vectors", " "))
    with pytest.raises(TypeError):
        ConvexOptions(dense_sources="vectors")


# -- properties ----------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(runs=aist.runs(max_runs=5), order=st.permutations(range(5)),
       name=st.sampled_from(sorted(FUSERS)))
def test_independent_of_the_order_of_runs_exactly(runs: list[list[Hit]], order: list[int],
                                                  name: str) -> None:
    """Any permutation of the input runs gives the identical fused list: the same
    documents (every field), order, ranks and bit-identical scores, ties included."""
    fuse = FUSERS[name]
    permuted = [runs[i] for i in order if i < len(runs)]
    assert fuse(permuted) == fuse(runs)


@settings(max_examples=50, deadline=None)
@given(runs=aist.runs(max_runs=5), name=st.sampled_from(sorted(FUSERS)))
def test_fused_lists_are_well_formed(runs: list[list[Hit]], name: str) -> None:
    """Every document of the runs comes out once, ranks 1..n, scores not increasing and
    within the fuser's range ([0, 1] for convex, [0, number of runs] for dbsf)."""
    fused = FUSERS[name](runs)
    assert [h.rank for h in fused] == list(range(1, len(fused) + 1))
    assert sorted(h.document.id for h in fused) == sorted(
        {h.document.id for r in runs for h in r})
    assert all(a.score >= b.score for a, b in itertools.pairwise(fused))
    high = 1.0 if name.startswith("convex") else float(len(runs))
    assert all(0.0 <= h.score <= high + 1e-12 for h in fused)
    held = {h.document.id: sum(any(x.document.id == h.document.id for x in r) for r in runs)
            for h in fused}
    for a, b in itertools.pairwise(fused):  # equal scores: more runs first, then by id
        if a.score == b.score:
            assert (-held[a.document.id], a.document.id) < (-held[b.document.id],
                                                             b.document.id)


@settings(max_examples=50, deadline=None)
@given(runs=aist.runs(min_runs=1, max_runs=4), which=st.integers(0, 3),
       power=st.integers(0, 20), name=st.sampled_from(sorted(FUSERS)))
def test_a_runs_scale_does_not_matter(runs: list[list[Hit]], which: int, power: int,
                                      name: str) -> None:
    """Multiplying one run's scores by a power of two (exact in floating point) leaves the
    fused list unchanged: both normalizations are scale-free."""
    which %= len(runs)
    factor = 2.0 ** power
    scaled = [list(r) for r in runs]
    scaled[which] = [Hit(h.document, score=h.score * factor, rank=h.rank, source=h.source)
                     for h in runs[which]]
    assert FUSERS[name](scaled) == FUSERS[name](runs)


_VERSIONS = st.builds(
    Document, id=st.sampled_from("abcd"), text=st.sampled_from(["x", "y"]),
    title=st.sampled_from(["", "t"]),
    metadata=st.sampled_from([{}, {"v": 1}, {"v": {2: "n", "k": [1]}}, {"v": {(0, 1): 2}}]))


@st.composite
def messy_runs(draw: st.DrawFn) -> list[list[Hit]]:
    """Runs as retrievers and expansions really send them: one id in several versions, an
    id repeated inside a run, sources shared by several runs (a query and its expansions),
    negative scores and ties."""
    result = []
    for _ in range(draw(st.integers(0, 4))):
        docs = draw(st.lists(_VERSIONS, max_size=6))
        values = sorted(draw(st.lists(st.sampled_from([-2.5, -1.0, 0.0, 0.5, 3.0]),
                                      min_size=len(docs), max_size=len(docs))), reverse=True)
        source = draw(st.sampled_from(["vectors", "bm25"]))
        result.append([Hit(doc, score=value, rank=rank, source=source)
                       for rank, (doc, value) in enumerate(zip(docs, values), start=1)])
    return result


@settings(max_examples=80, deadline=None)
@given(runs=messy_runs(), order=st.permutations(range(4)),
       name=st.sampled_from(sorted(FUSERS)))
def test_messy_runs_fuse_well_whatever_their_order(runs: list[list[Hit]], order: list[int],
                                                   name: str) -> None:
    """Versions, repeats and shared sources: the fused list is identical for every order of
    the runs, holds each id once in one of its given versions, ranks 1..n, and its scores
    lie in the fuser's range."""
    fuse = FUSERS[name]
    fused = fuse(runs)
    assert fuse([runs[i] for i in order if i < len(runs)]) == fused
    assert sorted(h.document.id for h in fused) == sorted({h.document.id for r in runs
                                                           for h in r})
    given_docs = [h.document for r in runs for h in r]
    assert all(h.document in given_docs for h in fused)
    assert [h.rank for h in fused] == list(range(1, len(fused) + 1))
    high = 1.0 if name.startswith("convex") else float(len(runs))
    assert all(0.0 <= h.score <= high + 1e-12 for h in fused)


# -- in a pipeline -----------------------------------------------------------------------


class CannedDense:
    """A retriever double answering every query with the same dense-looking run."""

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        return run("vectors", ("hnsw", 0.91), ("rrf", 0.62), ("bm25", 0.30))[:k]


class CannedPlugin:
    """Offers the ``canned`` retriever double."""

    @hookimpl
    def aieng_register_components(self, registry: ComponentRegistry) -> None:
        registry.add("canned", CannedDense)


PIPELINE: dict[str, Any] = {
    "pipeline": {"name": "hybrid-convex", "stages": ["retrieve"]},
    "components": {
        "lexical": {"use": "memory"},
        "dense": {"use": "canned"},
        "fuse": {"use": "convex", "alpha": 0.7},
    },
}


@pytest.mark.anyio
async def test_convex_fuses_a_hybrid_pipeline(aieng_kernel: Kernel,
                                              register_plugin: Register) -> None:
    """With a ``convex`` component in the pipeline, the retrieve stage fuses the lexical
    and dense runs with it instead of the kernel's RRF."""
    with register_plugin(aieng_fusion, "fusion") as info, \
            register_plugin(CannedPlugin(), "canned"):
        assert info.status == "loaded", info.error
        pipeline = aieng_kernel.pipeline(PIPELINE)
    await pipeline.index([Document("rrf", "reciprocal rank fusion of ranked lists"),
                          Document("bm25", "bm25 ranks by term frequency"),
                          Document("hnsw", "a layered graph")])
    result = await pipeline.run("reciprocal rank fusion")
    runs = [result.runs["lexical"], result.runs["dense"]]
    assert list(result.retrieved) == convex_fusion(runs, alpha=0.7)
    assert [h.source for h in result.retrieved] == ["convex"] * len(result.retrieved)
    # dense (x .7): hnsw 1, rrf .52, bm25 0; lexical (x .3): rrf 1 -> hnsw .70, rrf .67
    assert [h.document.id for h in result.retrieved] == ["hnsw", "rrf", "bm25"]


@pytest.mark.anyio
async def test_convex_options_are_checked(aieng_kernel: Kernel,
                                          register_plugin: Register) -> None:
    """An alpha outside [0, 1] or a string for the source list fails the load."""
    with register_plugin(aieng_fusion, "fusion"), register_plugin(CannedPlugin(), "canned"):
        for bad in ({"alpha": 2.0}, {"dense_sources": "vectors"}, {"weight": 1.0}):
            config = {**PIPELINE, "components": {**PIPELINE["components"],
                                                  "fuse": {"use": "convex", **bad}}}
            with pytest.raises(ConfigError, match="components.fuse"):
                aieng_kernel.pipeline(config)


def test_imports_alone() -> None:
    """The plugin module imports on its own with warnings as errors."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-W", "error", "-c", "import aieng_fusion"], check=True,
                   env=_env())


def _env() -> dict[str, str]:
    """The environment with this plugin's folder first on the path, installed or not."""
    import os
    from pathlib import Path

    here = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_an_alpha_that_weighs_nothing_is_warned_about_once() -> None:
    """``dense_sources`` naming the component (``dense``) where the hits' source is
    ``vectors`` leaves every run weighed equally: the fuser says so, once."""
    import structlog

    fuser = ConvexFuser(ConvexOptions(alpha=0.8, dense_sources=("dense",)))
    runs = [run("vectors", ("a", 0.9), ("b", 0.1)), run("bm25", ("b", 9.0), ("a", 1.0))]
    with structlog.testing.capture_logs() as logs:
        first = fuser.aieng_fuse(runs)
        fuser.aieng_fuse(runs)
    warned = [entry for entry in logs if entry["event"] == "fusion.alpha_unused"]
    assert len(warned) == 1
    assert warned[0]["run_sources"] == ["bm25", "vectors"]
    assert scores(first) == pytest.approx({"a": 0.5, "b": 0.5})  # equal weights: a tie
    right = ConvexFuser(ConvexOptions(alpha=0.8, dense_sources=("vectors",)))
    with structlog.testing.capture_logs() as logs:
        assert scores(right.aieng_fuse(runs)) == pytest.approx({"a": 0.8, "b": 0.2})
    assert logs == []


def test_an_empty_run_is_no_evidence_that_alpha_weighs_nothing() -> None:
    """A retriever that found nothing gives an empty run, whose kind no hit tells: with
    the lexical runs empty (a query's words, and its rewrites', missing from the BM25
    index) and several dense runs, the set-up is right, so there is no warning; and the
    fuser still warns, once, when a later call shows the mistake."""
    import structlog

    right = ConvexFuser(ConvexOptions(alpha=0.8))
    dense = [run("vectors", ("a", 0.9), ("b", 0.1)), run("vectors", ("b", 0.8), ("a", 0.2))]
    with structlog.testing.capture_logs() as logs:
        right.aieng_fuse([[], dense[0], [], dense[1]])
        right.aieng_fuse([run("bm25", ("a", 3.0)), *dense])
    assert logs == []
    wrong = ConvexFuser(ConvexOptions(alpha=0.8, dense_sources=("dense",)))
    with structlog.testing.capture_logs() as logs:
        wrong.aieng_fuse([[], *dense])
        wrong.aieng_fuse([run("bm25", ("a", 3.0)), *dense])
    assert [entry["event"] for entry in logs] == ["fusion.alpha_unused"]
    assert logs[0]["run_sources"] == ["bm25", "vectors"]
