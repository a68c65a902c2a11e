"""Batch cuts: ``batch_bounds`` (least padding plus a cost per forward pass) and the
``batching`` option; property tests on the cuts, and equal vectors either way."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from aieng_onnx import MiniLMOnnxEmbedder, MiniLMOnnxOptions
from aieng_onnx._runtime import PASS_COST, batch_bounds
from hypothesis import given, settings
from hypothesis import strategies as st

#: Token counts, longest first (how the encoder hands them to ``batch_bounds``).
sorted_lengths = st.lists(st.integers(1, 300), max_size=80).map(
    lambda xs: sorted(xs, reverse=True))


def cost(lengths: list[int], bounds: list[tuple[int, int]], pass_cost: int) -> int:
    """Padded tokens (each batch as wide as its first text) plus ``pass_cost`` a batch."""
    return sum((stop - start) * lengths[start] + pass_cost for start, stop in bounds)


def fixed(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


@settings(max_examples=200, deadline=None)
@given(sorted_lengths, st.integers(1, 40), st.integers(0, 500))
def test_cuts_cover_every_text_once_within_the_batch_size(lengths: list[int], size: int,
                                                          pass_cost: int) -> None:
    """The batches are contiguous, in order, non-empty, at most ``size`` texts, and
    together hold every text exactly once."""
    bounds = batch_bounds(lengths, size, pass_cost)
    assert [i for start, stop in bounds for i in range(start, stop)] == list(range(len(lengths)))
    assert all(1 <= stop - start <= size for start, stop in bounds)


@settings(max_examples=200, deadline=None)
@given(sorted_lengths, st.integers(1, 40), st.integers(0, 500))
def test_cuts_never_cost_more_than_fixed_ones(lengths: list[int], size: int,
                                              pass_cost: int) -> None:
    """The cuts' padded tokens plus pass costs never exceed those of a cut every
    ``size`` texts (sentence-transformers' way)."""
    chosen = cost(lengths, batch_bounds(lengths, size, pass_cost), pass_cost)
    assert chosen <= cost(lengths, fixed(len(lengths), size), pass_cost)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 50), max_size=9).map(lambda xs: sorted(xs, reverse=True)),
       st.integers(1, 4), st.integers(0, 80))
def test_cuts_are_optimal(lengths: list[int], size: int, pass_cost: int) -> None:
    """On small inputs, no way of cutting (all 2^(n-1) of them, within ``size``) costs
    less: the dynamic programme finds the optimum."""
    n = len(lengths)
    best = cost(lengths, batch_bounds(lengths, size, pass_cost), pass_cost)
    for mask in itertools.product((False, True), repeat=max(n - 1, 0)):
        points = [0, *(i + 1 for i, cut in enumerate(mask) if cut), n] if n else [0]
        bounds = list(itertools.pairwise(points))
        if all(stop - start <= size for start, stop in bounds):
            assert best <= cost(lengths, bounds, pass_cost)


def test_no_pass_cost_means_no_padding() -> None:
    """With nothing charged per forward pass, every batch holds texts of one length; with
    the default cost, a lone long text gets its own batch instead of padding 31 short
    ones, and runs of equal lengths fill whole batches."""
    lengths = [40, 12, 12, 12, 11, 11, 5]
    for start, stop in batch_bounds(lengths, 4, 0):
        assert len(set(lengths[start:stop])) == 1
    assert batch_bounds([60] + [10] * 31, 32, PASS_COST)[0] == (0, 1)
    assert batch_bounds([10] * 64, 32, PASS_COST) == [(0, 32), (32, 64)]
    assert batch_bounds([], 32) == []


def test_batching_does_not_change_vectors(bert_dir: Path, tmp_path: Path) -> None:
    """``least-padding`` and ``fixed`` batches give the same vectors, in input order."""
    texts = ["a", "the cat sat on the mat", "dog", "the stock market fell on the mat",
             "kitten", "a dog sat", "", "mat rug cat dog stock market fell kitten the a"]
    vectors = {}
    for batching in ("least-padding", "fixed"):
        embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
            path=str(bert_dir), cache_dir=str(tmp_path), providers=("cpu",), batch_size=3,
            batching=batching))  # type: ignore[arg-type]
        vectors[batching] = embedder.encode(texts)
    tokens = sorted((len(e.ids) for e in embedder.load().tokenizer.encode_batch(texts)),
                    reverse=True)
    assert batch_bounds(tokens, 3) != fixed(len(texts), 3), "the two cut differently"
    np.testing.assert_allclose(vectors["least-padding"], vectors["fixed"], atol=1e-5)
    assert MiniLMOnnxOptions().batching == "least-padding"
    with pytest.raises(ValueError):
        MiniLMOnnxOptions(batching="dynamic")  # type: ignore[arg-type]
