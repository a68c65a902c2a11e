"""Batch cuts: ``batch_bounds`` (least padding plus a cost per forward pass) and the
``batching`` option; property tests on the cuts, and equal vectors either way; the
``workers`` pool; dynamic batching of concurrent calls (``max_batch``)."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import anyio
import numpy as np
import pytest
from _onnx_texts import SENTENCES
from aieng_onnx import MiniLMOnnxEmbedder, MiniLMOnnxOptions
from aieng_onnx._runtime import ENCODE_CHUNK, PASS_COST, batch_bounds
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core.testing.conformance import BackendSuite

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


# -- workers: several forward passes of one call at once ------------------------------------

@pytest.fixture(scope="module")
def by_workers(bert_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> dict[int, MiniLMOnnxEmbedder]:
    """The tiny BERT with 1 and with 3 workers, batches of at most 2 texts."""
    cache = tmp_path_factory.mktemp("workers")
    return {n: MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        path=str(bert_dir), cache_dir=str(cache), providers=("cpu",), batch_size=2,
        workers=n)) for n in (1, 3)}


WORDS = ["the", "cat", "sat", "on", "a", "mat", "stock", "market", "fell", "Zürich", "東京",
         "kitten", "3.14159", "!"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from(WORDS), max_size=30).map(" ".join), max_size=17))
def test_workers_do_not_change_vectors(by_workers: dict[int, MiniLMOnnxEmbedder],
                                       texts: list[str]) -> None:
    """Passes run three at a time give exactly the vectors of one at a time, in input
    order (each pass is the same computation on its own thread, writing its own rows)."""
    np.testing.assert_array_equal(by_workers[3].encode(texts), by_workers[1].encode(texts))


class MeetingSession:
    """Test double around a real session: each ``run`` waits at a barrier of ``parties``
    before running, so runs made one after another break it (``BrokenBarrierError``)
    and only ``parties`` concurrent runs get through. Records the threads that ran."""

    def __init__(self, session: object, parties: int) -> None:
        self.session = session
        self.barrier = threading.Barrier(parties, timeout=10)
        self.threads: set[threading.Thread] = set()

    def __getattr__(self, name: str) -> object:
        return getattr(self.session, name)

    def run(self, *args: object, **kwargs: object) -> object:
        self.threads.add(threading.current_thread())
        self.barrier.wait()
        return self.session.run(*args, **kwargs)  # type: ignore[attr-defined]


def test_workers_run_passes_at_once(bert_dir: Path, tmp_path: Path) -> None:
    """With ``workers = 2`` two forward passes of one call are in ``session.run`` at the
    same moment, on the pool's threads; ``close`` ends them and a later call makes new
    ones. With one worker the same call never has two runs at once."""
    texts = ["a cat", "the stock market fell", "a dog sat on the mat", "kitten"]
    reference = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        path=str(bert_dir), cache_dir=str(tmp_path), providers=("cpu",))).encode(texts)
    encoder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        path=str(bert_dir), cache_dir=str(tmp_path), providers=("cpu",), batch_size=2,
        workers=2)).load()
    assert len(encoder.batches(texts)) == 2
    real = encoder.session
    encoder.session = MeetingSession(real, parties=2)
    np.testing.assert_allclose(encoder.encode(texts), reference, atol=1e-5)
    assert len(encoder.session.threads) == 2
    workers = encoder.session.threads
    assert all(t.name.startswith("aieng-onnx-encode") for t in workers)
    encoder.close()
    assert not any(t.is_alive() for t in workers)
    encoder.session = MeetingSession(real, parties=2)
    np.testing.assert_allclose(encoder.encode(texts), reference, atol=1e-5)
    encoder.close()

    encoder.workers = 1
    encoder.session = MeetingSession(real, parties=2)
    encoder.session.barrier = threading.Barrier(2, timeout=0.5)
    with pytest.raises(threading.BrokenBarrierError):
        encoder.encode(texts)


def test_workers_option() -> None:
    """``workers`` defaults to 1 and must be a positive integer."""
    assert MiniLMOnnxOptions().workers == 1
    for bad in (0, -2, 1.5, "2"):
        with pytest.raises((ValueError, TypeError)):
            MiniLMOnnxOptions(workers=bad)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_pipeline_close_ends_the_workers(bert_dir: Path, tmp_path: Path) -> None:
    """Through the hooks: ``aieng_embed`` of a many-batch call runs on the pool, the
    pipeline's close ends its threads, and the component still embeds afterwards."""
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        path=str(bert_dir), cache_dir=str(tmp_path), providers=("cpu",), batch_size=1,
        workers=2))
    texts = ["a cat", "the stock market fell", "kitten"]
    await embedder.aieng_pipeline_open()
    first = await embedder.aieng_embed(texts, None)
    pool = embedder.load()._pool
    assert pool is not None
    threads = list(pool._threads)
    assert threads and all(t.is_alive() for t in threads)
    await embedder.aieng_pipeline_close()
    assert not any(t.is_alive() for t in threads)
    again = await embedder.aieng_embed(texts, None)
    assert first is not None and again is not None
    np.testing.assert_array_equal(first, again)
    await embedder.aieng_pipeline_close()


# -- dynamic batching of concurrent calls (``max_batch``) ----------------------------------


class TestBatchedOnnxConformance(BackendSuite):
    """``minilm-onnx`` on a tiny BERT with ``max_batch`` passes the backend suite."""

    @pytest.fixture
    def component(self, bert_dir: Path, tmp_path: Path) -> MiniLMOnnxEmbedder:
        return MiniLMOnnxEmbedder(MiniLMOnnxOptions(
            path=str(bert_dir), cache_dir=str(tmp_path), providers=("cpu",), max_batch=16,
            max_wait_ms=2))


async def embed_at_once(embedder: MiniLMOnnxEmbedder, calls: list[list[str]]
                        ) -> list[np.ndarray]:
    """``calls`` made concurrently through ``aieng_embed``; their vectors, in order."""
    got: dict[int, np.ndarray] = {}

    async def call(index: int) -> None:
        vectors = await embedder.aieng_embed(calls[index], None)
        assert vectors is not None
        got[index] = vectors

    async with anyio.create_task_group() as tg:
        for index in range(len(calls)):
            tg.start_soon(call, index)
    return [got[index] for index in range(len(calls))]


@pytest.mark.anyio
@pytest.mark.parametrize("workers", [1, 2])
async def test_concurrent_calls_share_passes(bert_dir: Path, tmp_path: Path,
                                            workers: int) -> None:
    """Concurrent ``aieng_embed`` calls with ``max_batch`` are encoded in shared batches
    and each gets the vectors it gets alone (fp32: to float rounding), with one worker or
    two; the pipeline's open starts the batcher and its close stops it, and a later call
    starts it again. Their 36 texts fill one batch, which closes once full (the long wait
    only keeps a busy machine's delays from splitting it)."""
    options = {"path": str(bert_dir), "cache_dir": str(tmp_path), "providers": ("cpu",)}
    alone = MiniLMOnnxEmbedder(MiniLMOnnxOptions(**options))  # type: ignore[arg-type]
    batched = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        **options,  # type: ignore[arg-type]
        max_batch=36, max_wait_ms=10_000, batch_size=4, workers=workers))
    await batched.aieng_pipeline_open()
    assert batched.batcher().running
    calls = [["the cat sat"], ["a dog", "on the mat"], ["the stock market fell today"],
             ["kitten"], ["rug"] * 3, ["東京 Zürich"]] * 4
    got = await embed_at_once(batched, calls)
    for group, vectors in zip(calls, got, strict=True):
        np.testing.assert_allclose(vectors, alone.encode(group), atol=1e-5)
    assert (batched.batcher().batches, batched.batcher().items) == (1, len(calls))
    await batched.aieng_pipeline_close()
    assert not batched.batcher().running
    batched.batcher().max_wait = 0.0  # a lone call need not wait the long batch wait
    again = await batched.aieng_embed(["kitten"], None)
    assert again is not None
    np.testing.assert_allclose(again, alone.encode(["kitten"]), atol=1e-5)
    assert batched.batcher().running
    await batched.aieng_pipeline_close()


@pytest.mark.anyio
async def test_a_call_of_max_batch_texts_runs_alone(bert_dir: Path, tmp_path: Path) -> None:
    """A call with ``max_batch`` texts or more does not go through the batcher."""
    batched = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        path=str(bert_dir), cache_dir=str(tmp_path), providers=("cpu",), max_batch=3))
    vectors = await batched.aieng_embed(["a", "b", "c"], None)
    assert vectors is not None and vectors.shape == (3, 64)
    assert batched._batcher is None
    vectors = await batched.aieng_embed(["a", "b"], None)
    assert vectors is not None and batched.batcher().items == 1
    await batched.aieng_pipeline_close()


@pytest.mark.anyio
@pytest.mark.parametrize("max_batch", [1, 8])
async def test_non_strings_fail_their_caller_only(bert_dir: Path, tmp_path: Path,
                                                 max_batch: int) -> None:
    """A call holding a non-string gets a TypeError naming it, before any batch; a
    concurrent good call still gets its vectors."""
    embedder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        path=str(bert_dir), cache_dir=str(tmp_path), providers=("cpu",),
        max_batch=max_batch, max_wait_ms=20))
    outcome: dict[str, object] = {}

    async def bad() -> None:
        try:
            await embedder.aieng_embed(["fine", 3], None)  # type: ignore[list-item]
        except TypeError as error:
            outcome["bad"] = error

    async def good() -> None:
        outcome["good"] = await embedder.aieng_embed(["fine"], None)

    async with anyio.create_task_group() as tg:
        tg.start_soon(bad)
        tg.start_soon(good)
    assert "strings, not int" in str(outcome["bad"])
    assert isinstance(outcome["good"], np.ndarray) and outcome["good"].shape == (1, 64)
    await embedder.aieng_pipeline_close()


def test_batching_options() -> None:
    """``max_batch`` defaults to 1 (off) and must be a positive integer; ``max_wait_ms``
    defaults to 5 and must lie in [0, 10 s]."""
    assert MiniLMOnnxOptions().max_batch == 1
    assert MiniLMOnnxOptions().max_wait_ms == 5.0
    assert MiniLMOnnxOptions(max_wait_ms=0).max_wait_ms == 0.0
    for bad in (0, -1, 2.5, "4"):
        with pytest.raises((ValueError, TypeError)):
            MiniLMOnnxOptions(max_batch=bad)  # type: ignore[arg-type]
    for wait in (-1.0, 10_001.0):
        with pytest.raises(ValueError):
            MiniLMOnnxOptions(max_wait_ms=wait)


@pytest.mark.anyio
async def test_shipped_int8_batched_keeps_parity(shipped_int8: MiniLMOnnxEmbedder,
                                                 shipped_fp32: MiniLMOnnxEmbedder,
                                                 onnx_cache: Path) -> None:
    """Needs the shipped model: with int8, concurrent single-sentence calls get vectors
    within int8's parity to fp32 (mean cosine ≥ 0.99), each its own sentence's. They are
    not the unbatched int8 vectors: activations are quantized with one scale per forward
    pass, so a vector depends on what shares its pass (README, Dynamic batching)."""
    batched = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        cache_dir=str(onnx_cache), precision="int8", max_batch=256, max_wait_ms=0,
        batch_size=8))
    await batched.aieng_pipeline_open()
    calls = [[sentence] for sentence in SENTENCES]
    got = np.vstack(await embed_at_once(batched, calls))
    await batched.aieng_pipeline_close()
    assert batched.batcher().batches < len(calls)
    fp32 = shipped_fp32.encode(SENTENCES)
    alone = np.vstack([shipped_int8.encode(call) for call in calls])
    for vectors in (got, alone):
        assert np.sum(vectors * fp32, axis=1).mean() >= 0.99
    # Each row is its own sentence's: nearer its fp32 vector than any other sentence's.
    assert (np.argmax(got @ fp32.T, axis=1) == np.arange(len(calls))).all()


class CountingTokenizer:
    """A tokenizer that records how many texts each ``encode_batch`` call got."""

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer = tokenizer
        self.calls: list[int] = []

    def encode_batch(self, texts: list[str]) -> object:
        self.calls.append(len(texts))
        return self.tokenizer.encode_batch(texts)  # type: ignore[attr-defined]


def test_a_long_call_is_encoded_in_bounded_slices(bert_dir: Path, tmp_path: Path) -> None:
    """A call of more than ``ENCODE_CHUNK`` texts is tokenized and padded a slice at a
    time (its memory is a slice's, not the call's: the tokenizer's encodings alone take
    ~170 bytes a token), and gives every text its vector, in order, as one call does."""
    encoder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        path=str(bert_dir), cache_dir=str(tmp_path), providers=("cpu",))).load()
    short = ["a cat", "the dog sat", "kitten", "", "stock market fell", "é ✓"]
    texts = [short[i % len(short)] for i in range(2 * ENCODE_CHUNK + 3)]
    counting = CountingTokenizer(encoder.tokenizer)
    encoder.tokenizer = counting
    vectors = encoder.encode(texts)
    assert counting.calls == [ENCODE_CHUNK, ENCODE_CHUNK, 3]
    unique = encoder.encode(short)
    np.testing.assert_allclose(vectors, unique[[i % len(short) for i in range(len(texts))]],
                               atol=1e-5)


@pytest.mark.parametrize("workers", [1, 2])
def test_slices_do_not_change_vectors(bert_dir: Path, tmp_path: Path, workers: int) -> None:
    """fp32 vectors do not depend on where a call is sliced (slices of 5 against one)."""
    encoder = MiniLMOnnxEmbedder(MiniLMOnnxOptions(
        path=str(bert_dir), cache_dir=str(tmp_path), providers=("cpu",), batch_size=3,
        workers=workers)).load()
    whole = encoder.encode(SENTENCES)
    encoder.chunk = 5
    np.testing.assert_allclose(encoder.encode(SENTENCES), whole, atol=1e-6)
    encoder.close()
