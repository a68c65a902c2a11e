"""Dynamic batching: the batcher (with a pure-Python batch function), batched embeddings
(tiny BERT) and batched decoding (a random tiny Llama in float64, so batched and
one-request passes cannot round apart where two logits nearly tie)."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
import torch
from _tiny import byte_tokenizer
from aieng_hookspecs.types import Message, Request
from aieng_transformers import MiniLMEmbedder, MiniLMOptions, SmolLM2Backend, SmolLM2Options
from aieng_transformers._batched import Decoded, decode_batch
from aieng_transformers._batching import Batcher, EmbedBatcher, Ticket, checked_texts
from aieng_transformers._causal import CausalLM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM

from aieng_core.testing.conformance import BackendSuite

pytestmark = pytest.mark.anyio

FIXTURES = [HealthCheck.function_scoped_fixture]


def ask(text: str, **params: Any) -> Request:
    return Request(messages=(Message("user", text),), **params)


class TestBatchedConformance(BackendSuite):
    """``smollm2`` with ``max_batch`` (generate batched) passes the backend suite."""

    @pytest.fixture
    def component(self, chain_dir: Path) -> SmolLM2Backend:
        return SmolLM2Backend(
            SmolLM2Options(path=str(chain_dir), model="chain", max_batch=4, max_wait_ms=2)
        )


class TestSpeculativeConformance(BackendSuite):
    """``smollm2`` with prompt-lookup speculation passes the backend suite."""

    @pytest.fixture
    def component(self, chain_dir: Path) -> SmolLM2Backend:
        return SmolLM2Backend(
            SmolLM2Options(path=str(chain_dir), model="chain", speculative="prompt-lookup")
        )


class TestBatchedEmbedderConformance(BackendSuite):
    """``minilm`` on a tiny BERT with ``max_batch`` passes the backend suite."""

    @pytest.fixture
    def component(self, bert_dir: Path) -> MiniLMEmbedder:
        return MiniLMEmbedder(MiniLMOptions(path=str(bert_dir), max_batch=16, max_wait_ms=2))


# -- the batcher -------------------------------------------------------------------------


class Doubler:
    """A batch function: each item doubled; item < 0 raises (as a whole-batch failure);
    it records batch sizes, says when its first batch started, and can be slowed down."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.delay = delay
        self.started = threading.Event()

    def __call__(self, tickets: Sequence[Ticket[int, int]]) -> list[int | BaseException]:
        self.sizes.append(len(tickets))
        self.started.set()
        time.sleep(self.delay)
        if any(t.item < 0 for t in tickets):
            raise ValueError(f"negative: {[t.item for t in tickets if t.item < 0]}")
        return [2 * t.item for t in tickets]


async def test_concurrent_calls_coalesce() -> None:
    """Concurrent submits share batches of at most ``max_batch``; each gets its result. A
    batch closes as soon as it is full: with a wait far longer than any scheduling delay,
    32 calls make four full batches however slowly they arrive (a short wait would let a
    busy machine's delays decide the batches)."""
    work = Doubler()
    batcher = Batcher(work, max_batch=8, max_wait_ms=60_000, name="test")
    results: dict[int, int] = {}

    async def call(item: int) -> None:
        results[item] = await batcher.submit(item)

    async with anyio.create_task_group() as tg:
        for item in range(32):
            tg.start_soon(call, item)
    await anyio.to_thread.run_sync(batcher.stop)
    assert results == {i: 2 * i for i in range(32)}
    assert work.sizes == [8, 8, 8, 8]
    assert not batcher.running


async def test_errors_reach_their_callers_only() -> None:
    """A batch that fails is rerun item by item: the bad item's caller gets the error,
    the others their results."""
    batcher = Batcher(Doubler(), max_batch=16, max_wait_ms=30, name="test")
    outcomes: dict[int, object] = {}

    async def call(item: int) -> None:
        try:
            outcomes[item] = await batcher.submit(item)
        except ValueError as error:
            outcomes[item] = str(error)

    async with anyio.create_task_group() as tg:
        for item in (1, -3, 4, 5):
            tg.start_soon(call, item)
    await anyio.to_thread.run_sync(batcher.stop)
    assert outcomes == {1: 2, -3: "negative: [-3]", 4: 8, 5: 10}


async def test_a_cancelled_caller_does_not_break_the_batch() -> None:
    """One caller cancelled while its batch runs: the others still get their results
    (the cancel lands while the batch of all four is running: no sleep decides when)."""
    running, release = threading.Event(), threading.Event()

    def work(tickets: Sequence[Ticket[int, int]]) -> list[int | BaseException]:
        running.set()
        release.wait(30.0)
        return [2 * t.item for t in tickets]

    batcher: Batcher[int, int] = Batcher(work, max_batch=4, max_wait_ms=60_000, name="test")
    results: dict[int, int] = {}

    async def call(item: int) -> None:
        results[item] = await batcher.submit(item)

    async with anyio.create_task_group() as tg:
        for item in range(3):
            tg.start_soon(call, item)
        with anyio.CancelScope() as scope:

            async def cancel_once_running() -> None:
                assert await anyio.to_thread.run_sync(running.wait, 30.0)
                scope.cancel()
                release.set()

            tg.start_soon(cancel_once_running)
            await batcher.submit(99)
        assert scope.cancelled_caught
    await anyio.to_thread.run_sync(batcher.stop)
    assert results == {0: 0, 1: 2, 2: 4}
    assert (batcher.batches, batcher.items) == (1, 4)


async def test_a_failed_batch_reruns_only_the_callers_still_waiting() -> None:
    """A batch that fails is rerun item by item for the callers still waiting only: five
    of six cancelled while the batch ran cost no rerun each (nobody would read them)."""
    calls: list[list[int]] = []
    started, release = threading.Event(), threading.Event()

    def work(tickets: Sequence[Ticket[int, int]]) -> list[int | BaseException]:
        calls.append([t.item for t in tickets])
        if len(tickets) > 1:
            started.set()
            release.wait(10.0)
            raise ValueError("the batch failed")
        return [2 * t.item for t in tickets]

    # A full batch closes at once: the long wait only keeps a busy machine's delays from
    # splitting the six calls.
    batcher: Batcher[int, int] = Batcher(work, max_batch=6, max_wait_ms=60_000, name="test")
    scopes: dict[int, anyio.CancelScope] = {}
    results: dict[int, int] = {}
    gone: list[int] = []

    async def call(item: int) -> None:
        with anyio.CancelScope() as scope:
            scopes[item] = scope
            try:
                results[item] = await batcher.submit(item)
            except anyio.get_cancelled_exc_class():
                gone.append(item)
                raise

    async with anyio.create_task_group() as tg:
        for item in range(1, 7):
            tg.start_soon(call, item)
        assert await anyio.to_thread.run_sync(started.wait, 10.0)
        for item in range(2, 7):
            scopes[item].cancel()
        while len(gone) < 5:
            await anyio.sleep(0.001)
        release.set()
    await anyio.to_thread.run_sync(batcher.stop)
    assert results == {1: 2} and sorted(gone) == [2, 3, 4, 5, 6]
    # One batch of the six (in the order the calls arrived: trio's varies), then 1 alone.
    assert [sorted(batch) for batch in calls] == [[1, 2, 3, 4, 5, 6], [1]]


async def test_stop_fails_what_is_queued() -> None:
    """Items still queued when the batcher stops fail with RuntimeError, not hang."""
    started = threading.Event()

    def work(tickets: Sequence[Ticket[int, int]]) -> list[int | BaseException]:
        if not started.is_set():  # the first batch runs until the stop is asked for
            started.set()
            assert batcher._stopping.wait(30.0)
        return [2 * t.item for t in tickets]

    batcher: Batcher[int, int] = Batcher(work, max_batch=1, max_wait_ms=0, name="test")
    outcomes: list[object] = []

    async def call(item: int) -> None:
        try:
            outcomes.append(await batcher.submit(item))
        except RuntimeError as error:
            outcomes.append(type(error).__name__)

    async with anyio.create_task_group() as tg:
        for item in range(3):
            tg.start_soon(call, item)
        # the first item is being run (until the stop), the other two wait in the queue
        assert await anyio.to_thread.run_sync(started.wait, 30.0)
        await anyio.to_thread.run_sync(batcher.stop)
    # The item run first (the first to arrive: trio's order varies) is answered, the two
    # still queued fail.
    answered = [o for o in outcomes if isinstance(o, int)]
    assert len(answered) == 1 and answered[0] in (0, 2, 4), outcomes
    assert sorted(o for o in outcomes if isinstance(o, str)) == ["RuntimeError"] * 2
    assert await batcher.submit(7) == 14  # a later submit starts a new thread
    await anyio.to_thread.run_sync(batcher.stop)


class _StopOnPut:
    """The batcher's queue, with a ``stop()`` (a pipeline closing, in a worker thread)
    let run just before a ticket goes in: the moment between the thread's start and the
    ticket's queueing. It waits for the stop up to ``grace`` seconds (a stop that waits
    for the submit's lock goes on after it)."""

    def __init__(self, batcher: Batcher[int, int], grace: float = 0.5) -> None:
        self.batcher, self.grace, self.real = batcher, grace, batcher._queue
        self.raced = False

    def put(self, item: Any) -> None:
        if isinstance(item, Ticket) and not self.raced:
            self.raced = True
            stopper = threading.Thread(target=self.batcher.stop)
            stopper.start()
            stopper.join(self.grace)
        self.real.put(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_a_stop_racing_a_submit_never_strands_it() -> None:
    """A close (``stop()`` in a worker thread) landing while a call is being queued ends
    the thread either after the call's ticket (which it then runs or fails) or before it
    (and the call gets a thread of its own); the call never waits forever on a queue no
    thread reads."""
    batcher: Batcher[int, int] = Batcher(Doubler(), max_batch=4, max_wait_ms=0, name="race")
    batcher.start()
    batcher._queue = _StopOnPut(batcher)  # type: ignore[assignment]
    outcome: object = None
    with anyio.fail_after(10):
        try:
            outcome = await batcher.submit(7)
        except RuntimeError as error:
            outcome = str(error)
    assert outcome in (14, "race stopped before this call ran (its pipeline closed)")
    await anyio.to_thread.run_sync(batcher.stop)
    assert not batcher.running


def test_bad_options() -> None:
    """``max_batch`` < 1 and negative, infinite or NaN waits are refused by name (an
    infinite one crashed the batcher thread at its first wait, and left every caller
    waiting; NaN closed every batch at once)."""
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(Doubler(), max_batch=0, max_wait_ms=1, name="x")
    for wait in (-1, math.inf, math.nan):
        with pytest.raises(ValueError, match="max_wait_ms must be a finite number"):
            Batcher(Doubler(), max_batch=2, max_wait_ms=wait, name="x")


@pytest.mark.parametrize("options", [MiniLMOptions, SmolLM2Options])
def test_max_wait_ms_says_its_unit_and_range(options: Any) -> None:
    """A wait that is no number of milliseconds in [0, 10000] (NaN, infinity, a string
    with a unit) is refused naming the option, its unit and its range."""
    for wait in (math.nan, math.inf, -1, 10_001):
        with pytest.raises(ValueError, match=r"max_wait_ms must be from 0 to 10000 "
                                             r"milliseconds, got"):
            options(max_wait_ms=wait)
    for wait in ("5ms", "5", True):
        with pytest.raises(TypeError, match=r"max_wait_ms must be a number of "
                                            r"milliseconds \(as 5 or 2.5, no unit\)"):
            options(max_wait_ms=wait)
    assert options(max_wait_ms=0).max_wait_ms == 0.0


def run_calls(batcher: Batcher[Any, Any], call: Any, plan: Sequence[tuple[Any, int]]) -> None:
    """In a fresh event loop, ``call(index, item, delay)`` for each ``(item, delay)`` of
    ``plan`` at once; then stop ``batcher``."""

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for index, (item, delay) in enumerate(plan):
                tg.start_soon(call, index, item, delay)
        await anyio.to_thread.run_sync(batcher.stop)

    anyio.run(main)


@settings(max_examples=25, deadline=None)
@given(
    plan=st.lists(st.tuples(st.integers(-3, 50), st.integers(0, 4)), min_size=1, max_size=24),
    max_batch=st.integers(1, 9),
    wait=st.sampled_from([0, 1, 5]),
)
def test_any_interleaving_routes_results(
    plan: list[tuple[int, int]], max_batch: int, wait: int
) -> None:
    """Property: whatever the arrival order (random delays) and batch limits, every
    caller gets its own item's result, or its own error."""
    batcher = Batcher(Doubler(), max_batch=max_batch, max_wait_ms=wait, name="prop")
    got: dict[int, object] = {}

    async def call(index: int, item: int, delay: int) -> None:
        await anyio.sleep(delay / 1000)
        try:
            got[index] = await batcher.submit(item)
        except ValueError:
            got[index] = "error"

    run_calls(batcher, call, plan)
    assert got == {i: ("error" if item < 0 else 2 * item) for i, (item, _) in enumerate(plan)}


# -- embeddings ----------------------------------------------------------------------------


def rows_of(texts: list[str]) -> np.ndarray:
    """A stand-in encoder: one row per text that names it (its length and code points)."""
    out = np.zeros((len(texts), 4), dtype=np.float32)
    for row, text in enumerate(texts):
        out[row, 0] = len(text)
        out[row, 1 : 1 + min(3, len(text))] = [ord(c) for c in text[:3]]
    return out


@settings(max_examples=25, deadline=None)
@given(
    calls=st.lists(
        st.tuples(st.lists(st.text(max_size=5), min_size=1, max_size=5), st.integers(0, 3)),
        min_size=1,
        max_size=16,
    ),
    max_batch=st.integers(1, 12),
)
def test_embed_batches_route_rows(calls: list[tuple[list[str], int]], max_batch: int) -> None:
    """Property: concurrent embed calls through ``EmbedBatcher``, arriving in any order,
    each get exactly their own texts' rows, in order, as arrays of their own (not views of
    the batch's), and no batch holds more than ``max_batch`` texts (unless one call
    alone does)."""
    sizes: list[int] = []

    def encode(texts: list[str], checkpoint: Any) -> np.ndarray:
        checkpoint()  # every caller still waits: it returns
        sizes.append(len(texts))
        return rows_of(texts)

    batcher = EmbedBatcher(encode, max_batch=max_batch, max_wait_ms=1, name="rows")
    got: dict[int, np.ndarray] = {}

    async def call(index: int, texts: list[str], delay: int) -> None:
        await anyio.sleep(delay / 1000)
        got[index] = await batcher.submit(texts, size=len(texts))

    run_calls(batcher, call, calls)
    for index, (texts, _) in enumerate(calls):
        np.testing.assert_array_equal(got[index], rows_of(texts))
        assert got[index].base is None
    largest = max(len(texts) for texts, _ in calls)
    assert all(size <= max(max_batch, largest) for size in sizes)
    assert sum(sizes) == sum(len(texts) for texts, _ in calls)


def test_checked_texts() -> None:
    """Strings pass as a new list; anything else is a TypeError naming it."""
    texts = ("a", "b")
    assert checked_texts(texts) == ["a", "b"]
    for bad in (["a", 3], [None], [b"bytes"]):
        with pytest.raises(TypeError, match="aieng_embed takes strings, not"):
            checked_texts(bad)
    for one in ("hello", b"hello"):
        with pytest.raises(TypeError, match="a sequence of strings, not one"):
            checked_texts(one)  # type: ignore[arg-type]


async def test_batched_embeddings_equal_unbatched(bert_dir: Path) -> None:
    """Concurrent ``aieng_embed`` calls with ``max_batch`` share forward passes and each
    gets the vectors it would get alone (to float32 rounding); the lifecycle hooks start
    and stop the batcher. Their 36 texts fill one batch, which closes once full (the long
    wait only keeps a busy machine's delays from splitting it)."""
    alone = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir)))
    batched = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir), max_batch=36,
                                           max_wait_ms=10_000))
    await batched.aieng_pipeline_open()
    assert batched.batcher().running
    texts = [
        ["the cat sat"],
        ["a dog", "on the mat"],
        ["the stock market fell today"],
        ["kitten"],
        ["rug"] * 3,
        ["the"],
    ] * 4
    got: dict[int, np.ndarray] = {}

    async def call(index: int) -> None:
        vectors = await batched.aieng_embed(texts[index], None)
        assert vectors is not None
        got[index] = vectors

    async with anyio.create_task_group() as tg:
        for index in range(len(texts)):
            tg.start_soon(call, index)
    for index, group in enumerate(texts):
        expected = await alone.aieng_embed(group, None)
        assert expected is not None and got[index].shape == expected.shape
        np.testing.assert_allclose(got[index], expected, atol=1e-5)
    assert sum(len(group) for group in texts) == 36 and batched.batcher().batches == 1
    await batched.aieng_pipeline_close()
    assert not batched.batcher().running


async def test_minilm_batched_equals_unbatched(shipped_minilm: MiniLMEmbedder) -> None:
    """Needs the shipped model: concurrent single-sentence calls to a batched
    all-MiniLM-L6-v2 (packed passes, in one batch that closes once full) each get the
    unbatched component's vectors."""
    batched = MiniLMEmbedder(MiniLMOptions(max_batch=40, max_wait_ms=10_000, batch_size=8))
    await batched.aieng_pipeline_open()
    texts = [f"call {i}: " + "dense retrieval with a small encoder " * (i % 5) for i in range(40)]
    got: dict[int, np.ndarray] = {}

    async def call(index: int) -> None:
        vectors = await batched.aieng_embed([texts[index]], None)
        assert vectors is not None
        got[index] = vectors

    async with anyio.create_task_group() as tg:
        for index in range(len(texts)):
            tg.start_soon(call, index)
    await batched.aieng_pipeline_close()
    assert batched.batcher().batches == 1
    for index, text in enumerate(texts):
        expected = await shipped_minilm.aieng_embed([text], None)
        assert expected is not None
        np.testing.assert_allclose(got[index], expected, atol=1e-5)


@pytest.mark.parametrize("max_batch", [1, 8])
async def test_embed_rejects_non_strings(bert_dir: Path, max_batch: int) -> None:
    """A caller passing a non-string gets a TypeError naming it, before batching and
    before the model loads, batched or not."""
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(bert_dir), max_batch=max_batch))
    with pytest.raises(TypeError, match="strings, not int"):
        await embedder.aieng_embed(["fine", 3], None)  # type: ignore[list-item]
    assert embedder._encoder is None


# -- batched decoding ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> CausalLM:
    """A random 2-layer Llama on the byte tokenizer, float64, built in memory."""
    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    torch.manual_seed(11)
    return CausalLM(LlamaForCausalLM(config).double().eval(), tokenizer)


def alone(lm: CausalLM, request: Request) -> Decoded:
    result = decode_batch(lm, [request])[0]
    assert isinstance(result, Decoded)
    return result


def one_by_one(lm: CausalLM, request: Request) -> Decoded:
    """Plain decoding, one request, one token per step (the unbatched path)."""
    generation = lm.start(request, logprobs=bool(request.metadata.get("logprobs")))
    texts = []
    while generation.finish is None:
        texts.append(generation.step().text)
    return Decoded(
        "".join(texts),
        generation.finish,
        generation.usage,
        tuple(generation.logprobs) if generation.want_logprobs else None,
    )


REQUEST = st.builds(
    lambda text, tokens, stop, temperature, seed: ask(
        text, max_tokens=tokens, stop=stop, temperature=temperature, seed=seed,
        metadata={"logprobs": True},
    ),
    st.text("abc xyz.\n", min_size=0, max_size=30),
    st.integers(1, 24),
    st.sampled_from([(), ("a",), ("xy", "\n")]),
    st.sampled_from([0.0, 0.0, 0.9]),
    st.integers(0, 5),
)


@settings(max_examples=30, deadline=None, suppress_health_check=FIXTURES)
@given(requests=st.lists(REQUEST, min_size=1, max_size=6))
def test_batched_decoding_equals_alone(tiny: CausalLM, requests: list[Request]) -> None:
    """Property: a batch of requests (prompts of different lengths, left-padded; own
    stops, budgets, temperatures and seeds) gives each request what it gets decoded
    alone, one token per step: text, finish, usage, and log-probabilities (to float64
    rounding; they, more than a random model's text, show a cache row mixed up)."""
    batch = decode_batch(tiny, requests)
    for got, expected in zip(batch, [one_by_one(tiny, r) for r in requests], strict=True):
        assert isinstance(got, Decoded) and got.logprobs is not None
        assert (got.text, got.finish, got.usage) == (expected.text, expected.finish,
                                                     expected.usage)
        assert expected.logprobs is not None
        assert [t.token for t in got.logprobs] == [t.token for t in expected.logprobs]
        assert [t.logprob for t in got.logprobs] == pytest.approx(
            [t.logprob for t in expected.logprobs], abs=1e-9)


def test_batch_with_logprobs_and_a_bad_request(tiny: CausalLM) -> None:
    """Log-probabilities per row; a request that cannot start gets its own error."""
    good = ask("abc", max_tokens=6, metadata={"logprobs": True})
    bad = ask("x", response_schema={"type": "object", "anyOf": []})
    batch = decode_batch(tiny, [good, bad, good])
    assert isinstance(batch[1], ValueError)
    assert batch[0] == batch[2] == one_by_one(tiny, good)
    assert isinstance(batch[0], Decoded) and batch[0].logprobs is not None


def test_a_batch_row_with_a_logprobs_string_fails_alone(tiny: CausalLM) -> None:
    """A request whose ``metadata["logprobs"]`` is no boolean (``"false"``) gets its own
    error naming the key; the others decode."""
    good = ask("abc", max_tokens=6)
    batch = decode_batch(tiny, [good, ask("x", metadata={"logprobs": "false"}), good])
    assert isinstance(batch[1], ValueError) and "metadata['logprobs']" in str(batch[1])
    assert batch[0] == batch[2] == one_by_one(tiny, good)
    assert isinstance(batch[0], Decoded) and batch[0].logprobs is None


def test_a_cancelled_row_drops_out(tiny: CausalLM) -> None:
    """A row whose caller went away stops; the other rows decode to the end unchanged."""
    requests = [ask("abc", max_tokens=20), ask("xyz", max_tokens=20)]
    flags = [threading.Event(), threading.Event()]
    flags[0].set()
    batch = decode_batch(tiny, requests, flags)
    assert batch[1] == one_by_one(tiny, requests[1])
    assert isinstance(batch[0], Decoded) and batch[0].usage.completion_tokens == 0


async def test_backend_batches_concurrent_generates(chain_dir: Path, random_dir: Path) -> None:
    """Through ``aieng_generate`` with ``max_batch``: concurrent requests (shuffled
    start order) each get the unbatched backend's completion."""
    requests = [ask(text, max_tokens=n) for text in ("hi", "hello there", "x") for n in (3, 12)]
    order = list(range(len(requests)))
    random.Random(1).shuffle(order)

    async def call(backend: SmolLM2Backend, index: int, got: dict[int, Any]) -> None:
        got[index] = await backend.aieng_generate(requests[index])

    for folder in (chain_dir, random_dir):
        plain = SmolLM2Backend(SmolLM2Options(path=str(folder)))
        batched = SmolLM2Backend(SmolLM2Options(path=str(folder), max_batch=4, max_wait_ms=20))
        await batched.aieng_pipeline_open()
        got: dict[int, Any] = {}
        async with anyio.create_task_group() as tg:
            for index in order:
                tg.start_soon(call, batched, index, got)
        for index, request in enumerate(requests):
            assert got[index] == await plain.aieng_generate(request)
        assert batched.batcher().batches < len(requests)
        await batched.aieng_pipeline_close()


def test_batched_decoding_on_a_model_without_logits_to_keep() -> None:
    """A model whose forward refuses ``logits_to_keep`` and ``position_ids`` (BLOOM raises
    on any argument it does not know, warns on positions) decodes batched as it does
    alone, instead of every request failing."""
    from transformers import BloomConfig, BloomForCausalLM

    tokenizer = byte_tokenizer()
    config = BloomConfig(vocab_size=len(tokenizer), hidden_size=32, n_layer=2, n_head=4,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(5)
    # float32: in float64 BLOOM's mask minimum plus its ALiBi bias overflows to -inf, and
    # the fully masked positions of a left-padded row give NaN (in BLOOM itself).
    lm = CausalLM(BloomForCausalLM(config).eval(), tokenizer)
    requests = [ask("hello there", max_tokens=7), ask("x", max_tokens=4)]
    batch = decode_batch(lm, requests)
    for got, expected in zip(batch, [one_by_one(lm, r) for r in requests], strict=True):
        assert isinstance(got, Decoded)
        assert (got.text, got.finish, got.usage) == (expected.text, expected.finish,
                                                     expected.usage)
