"""What holds of the kernel's reciprocal rank fusion for a document present in every run.

Issue 4 asks for the property "under RRF a document present in every run ranks no lower
than in any single run". Taken literally (fused rank <= its best rank in the runs) it is
false for every ``k``, and so is the weaker "fused rank <= its worst rank": both have
counterexamples below. What does hold, proved here and checked by hypothesis:

1. **Rank bound.** A document ``d`` present in all ``m`` runs, at positions ``p_1..p_m``,
   gets a fused rank of at most ``1 + sum(p_r - 1)``, for every ``k >= 1``. Proof: a
   document ``x`` placed below ``d`` (or absent) in every run has each of its terms
   ``1/(k + q_r)`` strictly below ``d``'s ``1/(k + p_r)`` (or 0), so it scores strictly
   less; every document fused ahead of ``d`` is therefore above ``d`` in some run, and run
   ``r`` has only ``p_r - 1`` documents above ``d``. The bound is tight: with runs
   ``[x, d, y]`` and ``[y, d, x]``, ``d`` is 2nd in both and fused 3rd = 1 + 1 + 1.
2. **Dominance.** If ``d`` is in every run and above ``x`` in every run that holds ``x``,
   ``d`` fuses strictly above ``x`` (the step inside the proof of 1). In particular a
   document first in every run is fused first.
3. **Consensus for large k.** With ``L`` the longest run, if ``k >= (m - 1)(L - 1)``
   every document present in all ``m`` runs fuses above every document missing from at
   least one: ``m / (k + L) > (m - 1) / (k + 1)`` exactly when ``k > (m - 1)L - m``. Then
   a document in every run ranks no lower than the number of documents in every run. The
   threshold is sharp: at ``k = (m - 1)(L - 1) - 1`` the two sides can tie.
"""

from __future__ import annotations

from collections.abc import Sequence

from aieng_hookspecs.types import Document, Hit
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core import reciprocal_rank_fusion
from aieng_core.testing import strategies as aist

PROPERTY = settings(max_examples=200, deadline=None)


def ranked(*ids: str, source: str = "r") -> list[Hit]:
    return [Hit(Document(doc_id, doc_id), score=1.0 / rank, rank=rank, source=source)
            for rank, doc_id in enumerate(ids, start=1)]


def fused_ranks(runs: Sequence[Sequence[Hit]], k: int) -> dict[str, int]:
    return {hit.document.id: hit.rank for hit in reciprocal_rank_fusion(runs, k=k)}


def positions(run: Sequence[Hit]) -> dict[str, int]:
    return {hit.document.id: position for position, hit in enumerate(run, start=1)}


@st.composite
def runs_with_a_shared_document(draw: st.DrawFn) -> tuple[list[list[Hit]], str]:
    """One to five runs over a pool of twelve documents, one of which is inserted, at a
    drawn position, wherever it is missing, so that it is present in every run. (Only
    positions matter to RRF: the documents are kept plain so that examples are cheap and
    hypothesis spends its budget on orderings.)"""
    pool = [Document(f"d{i:02d}", f"document {i}") for i in range(12)]
    shared = draw(st.sampled_from(pool))
    result: list[list[Hit]] = []
    for index in range(draw(st.integers(1, 5))):
        docs = draw(st.lists(st.sampled_from(pool), max_size=8, unique_by=lambda d: d.id))
        if shared not in docs:
            docs.insert(draw(st.integers(0, len(docs))), shared)
        result.append([Hit(doc, score=float(-rank), rank=rank, source=f"run{index}")
                       for rank, doc in enumerate(docs, start=1)])
    return result, shared.id


# -- the statement of the issue, and its worst-rank variant, are false ---------------------


def test_literal_statement_fails_for_every_k() -> None:
    """d is 1st in one run and 3rd in the other; x is 2nd and 1st. x fuses above d for
    every k (1/(k+2) + 1/(k+1) > 1/(k+1) + 1/(k+3)), so d's fused rank 2 is worse than its
    rank 1 in the first run."""
    runs = [ranked("d", "x", "y"), ranked("x", "y", "d")]
    for k in (1, 60, 10**6):
        assert fused_ranks(runs, k)["d"] == 2


def test_worst_rank_variant_fails_too_and_the_bound_is_tight() -> None:
    """d is 2nd in both runs, x and y swap 1st and 3rd. By convexity of 1/(k+p),
    1/(k+1) + 1/(k+3) > 2/(k+2): both fuse above d, which ends 3rd, worse than its worst
    rank 2, and exactly at the bound 1 + (2 - 1) + (2 - 1)."""
    runs = [ranked("x", "d", "y"), ranked("y", "d", "x")]
    for k in (1, 60, 10**6):
        assert fused_ranks(runs, k)["d"] == 3


def test_consensus_threshold_is_sharp() -> None:
    """Two runs, L = 4: at k = (m-1)(L-1) - 1 = 2, a document last in both runs ties with
    one first in a single run (2/(2+4) = 1/(2+1)) and loses on the id tie-break; at
    k = 3 it wins."""
    runs = [ranked("a", "p", "q", "z"), ranked("b", "r", "s", "z")]
    assert fused_ranks(runs, 2)["z"] > fused_ranks(runs, 2)["a"]
    assert fused_ranks(runs, 3)["z"] == 1


# -- what holds --------------------------------------------------------------------------


@PROPERTY
@given(case=runs_with_a_shared_document(), k=st.integers(1, 1_000))
def test_rank_bound_for_a_document_in_every_run(case: tuple[list[list[Hit]], str],
                                                k: int) -> None:
    """A document present in every run fuses at rank <= 1 + sum over runs of
    (its position - 1), for any k; so first in every run means first fused."""
    runs, shared = case
    bound = 1 + sum(positions(run)[shared] - 1 for run in runs)
    assert fused_ranks(runs, k)[shared] <= bound
    everywhere = {doc_id for doc_id in positions(runs[0])
                  if all(doc_id in positions(run) for run in runs)}
    for doc_id in everywhere:  # every document in every run obeys it, not only the shared
        assert fused_ranks(runs, k)[doc_id] <= 1 + sum(positions(run)[doc_id] - 1
                                                       for run in runs)


@PROPERTY
@given(case=runs_with_a_shared_document(), k=st.integers(1, 1_000))
def test_dominance(case: tuple[list[list[Hit]], str], k: int) -> None:
    """A document in every run fuses strictly above any document that is below it in
    every run holding that document."""
    runs, shared = case
    ranks = fused_ranks(runs, k)
    places = [positions(run) for run in runs]
    for doc_id in ranks:
        if doc_id == shared:
            continue
        holding = [place for place in places if doc_id in place]
        if all(place[doc_id] > place[shared] for place in holding):
            assert ranks[shared] < ranks[doc_id]


@PROPERTY
@given(case=runs_with_a_shared_document(), extra=st.integers(0, 100))
def test_consensus_for_large_k(case: tuple[list[list[Hit]], str], extra: int) -> None:
    """With k >= (m - 1)(L - 1), every document present in all m runs fuses above every
    document missing from one of them (L: the longest run)."""
    runs, _ = case
    m, longest = len(runs), max(len(run) for run in runs)
    k = max(1, (m - 1) * (longest - 1)) + extra
    ranks = fused_ranks(runs, k)
    places = [positions(run) for run in runs]
    everywhere = [d for d in ranks if all(d in place for place in places)]
    elsewhere = [d for d in ranks if d not in everywhere]
    assert everywhere  # the shared document
    assert max(ranks[d] for d in everywhere) < min((ranks[d] for d in elsewhere),
                                                   default=len(ranks) + 1)


@settings(max_examples=60, deadline=None)
@given(runs=aist.runs(max_runs=5), order=st.permutations(range(5)),
       k=st.integers(1, 1_000))
def test_rrf_is_independent_of_the_order_of_runs(runs: list[list[Hit]], order: list[int],
                                                 k: int) -> None:
    """The kernel's RRF gives the identical list for any order of its runs."""
    permuted = [runs[i] for i in order if i < len(runs)]
    assert reciprocal_rank_fusion(permuted, k=k) == reciprocal_rank_fusion(runs, k=k)
