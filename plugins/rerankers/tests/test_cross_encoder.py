"""``cross-encoder`` over tiny BERT classifiers built from a config in the test session."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from aieng_hookspecs.types import Query
from aieng_rerankers import CrossEncoderOptions, CrossEncoderReranker
from rerankers_doubles import VOCABULARY, hits_of

from aieng_core import HookError, Kernel

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

QUERY = "how do i cook pasta"
PASSAGES = (
    "boil water and salt it then cook the pasta for ten minutes",
    "paris is the capital city of france",
    "tomato sauce",
    "rank fusion of bm25 and dense retrieval " * 40,  # longer than the model's 128 positions
    "",
)


def direct_scores(folder: Path, query: str, passages: tuple[str, ...], *,
                  max_length: int = 128) -> list[float]:
    """The model's relevance logit for each pair, one pair per forward pass (no padding)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    out = []
    with torch.inference_mode():
        for passage in passages:
            batch = tokenizer(query, passage, truncation=True, max_length=max_length,
                              return_tensors="pt")
            logits = model(**batch).logits[0]
            out.append(float(logits[0]) if len(logits) == 1 else float(logits[1] - logits[0]))
    return out


def test_scores_are_the_models_logits(tiny_cross_encoder: Path) -> None:
    """Batched, padded and truncated scoring gives each pair the logit the model gives it
    alone; texts past the model's 128 positions are truncated, not an error."""
    reranker = CrossEncoderReranker(CrossEncoderOptions(path=str(tiny_cross_encoder),
                                                        batch_size=2))
    expected = direct_scores(tiny_cross_encoder, QUERY, PASSAGES)
    assert reranker.scores(QUERY, list(PASSAGES)) == pytest.approx(expected, abs=1e-4)


class PairSpy:
    """A tokenizer that records the longest text of the (query, passage) pairs it is given
    (in tokens) and the token ids of each pair it returns, padding left out."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.longest = 0
        self.pairs: list[list[int]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.tokenizer(*args, **kwargs)
        if len(args) == 2:
            for text in (*args[0], *args[1]):
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                self.longest = max(self.longest, len(ids))
            for ids, mask in zip(out["input_ids"].tolist(), out["attention_mask"].tolist(),
                                 strict=True):
                self.pairs.append([i for i, m in zip(ids, mask, strict=True) if m])
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


def test_a_long_query_with_long_passages_is_cut_first(tiny_cross_encoder: Path) -> None:
    """A long query paired with long passages reaches the model as transformers' own
    truncation of the whole texts, token for token, but each text is cut to a few times
    ``max_length`` tokens before the pair is tokenized: the fast tokenizer's pair
    truncation is quadratic in the two lengths (a 3,000-token query with a 10,000-token
    passage took a minute for one pair). Of two long texts, the longer still gives up the
    odd token of the split (the passage when they are as long), as it does uncut."""
    reranker = CrossEncoderReranker(CrossEncoderOptions(path=str(tiny_cross_encoder),
                                                        max_length=16, batch_size=8))
    model = reranker.load()
    spy = PairSpy(model.tokenizer)
    model.tokenizer = spy
    query = "how do i cook pasta " * 40  # 200 tokens
    passages = ["boil water and salt it " * 30, "paris " * 100, "tomato sauce",
                "the " * 400, "pasta " * 200, "salt " * 199, "seine " * 201]
    reranker.scores(query, passages)
    uncut = spy.tokenizer([query] * len(passages), passages, truncation=True,
                          max_length=16)["input_ids"]
    assert sorted(spy.pairs) == sorted(uncut)
    assert 0 < spy.longest <= 4 * 16 + 32


class OffsetSpy:
    """A tokenizer recording how many texts each call for offsets (the pre-cut's) reads."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.offset_calls: list[int] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("return_offsets_mapping"):
            self.offset_calls.append(len(args[0]))
        return self.tokenizer(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


def test_the_pre_cut_reads_one_batch_at_a_time(tiny_cross_encoder: Path) -> None:
    """One long passage among many makes every passage's offsets needed, but a batch's at
    a time (and the query's once), not all of them together: 10,000 candidates held their
    offsets all at once, hundreds of MB of tuples. The pairs are those of the whole
    texts' own truncation, across batches too."""
    reranker = CrossEncoderReranker(CrossEncoderOptions(path=str(tiny_cross_encoder),
                                                        max_length=16, batch_size=4))
    model = reranker.load()
    spy = OffsetSpy(PairSpy(model.tokenizer))
    model.tokenizer = spy
    query = "how do i cook pasta " * 40
    passages = ["pasta " * 200, *(f"salt water {i}" for i in range(30)), "the " * 400]
    reranker.scores(query, passages)
    assert len(spy.offset_calls) > 1 and max(spy.offset_calls) <= 4 + 1
    assert sum(spy.offset_calls) == len(passages) + 1  # each text once, the query too
    uncut = model.tokenizer.tokenizer.tokenizer(
        [query] * len(passages), passages, truncation=True, max_length=16)["input_ids"]
    assert sorted(spy.tokenizer.pairs) == sorted(uncut)


def test_rerank_sorts_by_score_and_cuts_to_k(tiny_cross_encoder: Path) -> None:
    """The hits come back sorted by the model's score, at most the option's k, with the
    new scores and ranks 1..n."""
    reranker = CrossEncoderReranker(CrossEncoderOptions(path=str(tiny_cross_encoder), k=3))
    hits = hits_of(*PASSAGES)
    out = reranker.aieng_rerank(Query(QUERY), hits, 10)
    scores = direct_scores(tiny_cross_encoder, QUERY, PASSAGES)
    best = sorted(range(len(PASSAGES)), key=lambda i: -scores[i])[:3]
    assert [h.document.id for h in out] == [f"d{i}" for i in best]
    assert [h.score for h in out] == pytest.approx([scores[i] for i in best], abs=1e-4)
    assert [h.rank for h in out] == [1, 2, 3]


def test_two_label_model_with_sigmoid(cross_encoder_builder: Callable[..., Path]) -> None:
    """A two-label model scores by relevant minus not-relevant; ``sigmoid`` maps that to a
    probability without changing the order."""
    folder = cross_encoder_builder(labels=2, seed=1)
    raw = CrossEncoderReranker(CrossEncoderOptions(path=str(folder)))
    squashed = CrossEncoderReranker(CrossEncoderOptions(path=str(folder), activation="sigmoid"))
    logits = raw.scores(QUERY, list(PASSAGES))
    assert logits == pytest.approx(direct_scores(folder, QUERY, PASSAGES), abs=1e-4)
    probabilities = squashed.scores(QUERY, list(PASSAGES))
    assert probabilities == pytest.approx([1 / (1 + math.exp(-x)) for x in logits], abs=1e-5)


def test_sigmoid_keeps_the_order_of_confident_logits(tiny_cross_encoder: Path,
                                                     tmp_path: Path) -> None:
    """``sigmoid`` keeps the logits' order where they are all large (a confident model):
    the probabilities are computed in double precision, where float32 rounds every one
    of them to 1.0 and the hits would fall back to their incoming order."""
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(tiny_cross_encoder))
    with torch.no_grad():
        model.classifier.bias += 20.0  # logits near 20: float32 sigmoid gives 1.0
    model.save_pretrained(tmp_path)
    transformers.AutoTokenizer.from_pretrained(str(tiny_cross_encoder)).save_pretrained(
        tmp_path)
    raw = CrossEncoderReranker(CrossEncoderOptions(path=str(tmp_path)))
    squashed = CrossEncoderReranker(CrossEncoderOptions(path=str(tmp_path),
                                                        activation="sigmoid"))
    hits = hits_of(*PASSAGES)
    by_logit = raw.aieng_rerank(Query(QUERY), hits, 10)
    by_probability = squashed.aieng_rerank(Query(QUERY), hits, 10)
    assert len({h.score for h in by_logit}) == len(PASSAGES)
    assert [h.document.id for h in by_probability] == [h.document.id for h in by_logit]
    assert all(0.0 < h.score < 1.0 for h in by_probability)
    assert len({h.score for h in by_probability}) == len(PASSAGES)


def test_a_missing_folder_says_how_to_get_a_model(tmp_path: Path) -> None:
    """A ``path`` without a model says that nothing is downloaded and how to get one."""
    reranker = CrossEncoderReranker(CrossEncoderOptions(path=str(tmp_path / "nowhere")))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        reranker.load()


def test_more_than_two_labels_is_refused(cross_encoder_builder: Callable[..., Path]) -> None:
    """A classifier with three labels is not a cross-encoder."""
    folder = cross_encoder_builder(labels=3)
    with pytest.raises(ValueError, match="3 labels"):
        CrossEncoderReranker(CrossEncoderOptions(path=str(folder))).load()


@pytest.mark.anyio
async def test_a_bad_path_fails_the_pipeline_opening(aieng_kernel: Kernel,
                                                     tmp_path: Path) -> None:
    """The model loads when the pipeline opens, so a wrong ``path`` fails there, naming
    the component."""
    reranker = CrossEncoderReranker(CrossEncoderOptions(path=str(tmp_path)))
    pipeline = aieng_kernel.compose({"ce": reranker}, stages=["rerank"])
    with pytest.raises(HookError, match="ce"):
        await pipeline.open()


def test_the_plugin_loads_without_torch() -> None:
    """Importing the plugin imports neither torch nor transformers (checked in a fresh
    interpreter)."""
    import subprocess
    import sys

    code = ("import sys, aieng_rerankers; "
            "print(sorted({'torch', 'transformers', 'numpy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_a_roberta_style_model_truncates_within_its_positions(tiny_cross_encoder: Path,
                                                               tmp_path: Path) -> None:
    """A RoBERTa-style model (RoBERTa, XLM-R, MPNet) numbers positions from after its
    padding id, so its 66 positions hold 64 tokens: a ``max_length`` above that and a long
    passage are cut to what fits, not an index error in the forward pass."""
    config = transformers.RobertaConfig(
        vocab_size=5 + len(set(VOCABULARY)), hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=66,
        pad_token_id=1, num_labels=1)
    torch.manual_seed(0)
    transformers.RobertaForSequenceClassification(config).eval().save_pretrained(tmp_path)
    transformers.AutoTokenizer.from_pretrained(str(tiny_cross_encoder)).save_pretrained(
        tmp_path)
    reranker = CrossEncoderReranker(CrossEncoderOptions(path=str(tmp_path), max_length=4096))
    assert reranker.load().max_length == 64
    scores = reranker.scores(QUERY, ["cook the pasta " * 300, "tomato sauce"])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)


class GatedModel:
    """A model that counts its forward passes and holds the first one until released."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, **batch: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            self.started.set()
            assert self.release.wait(30), "never released"
        return self.model(**batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


@pytest.mark.anyio
async def test_a_cancelled_rerank_stops_after_its_batch(tiny_cross_encoder: Path) -> None:
    """A rerank cancelled while its worker thread scores (a stage timeout abandons the
    thread) stops after the batch in flight instead of scoring every batch, holding the
    model for the next rerank; a later rerank then scores as usual."""
    reranker = CrossEncoderReranker(CrossEncoderOptions(path=str(tiny_cross_encoder),
                                                        batch_size=1))
    model = reranker.load()
    gated = GatedModel(model.model)
    model.model = gated
    finished = threading.Event()
    outcome: list[BaseException | None] = []

    def work() -> None:
        try:
            reranker.aieng_rerank(Query(QUERY), hits_of(*PASSAGES), 10)
            outcome.append(None)
        except BaseException as exc:  # the cancellation is what is expected
            outcome.append(exc)
            raise
        finally:
            finished.set()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(partial(anyio.to_thread.run_sync, work, abandon_on_cancel=True))
            await anyio.to_thread.run_sync(gated.started.wait, 30)
            scope.cancel()
    gated.release.set()
    assert await anyio.to_thread.run_sync(finished.wait, 30)
    assert gated.calls == 1 and outcome and outcome[0] is not None  # 1 batch of 5
    model.model = gated.model
    assert len(reranker.aieng_rerank(Query(QUERY), hits_of(*PASSAGES), 10)) == len(PASSAGES)


@pytest.mark.parametrize("max_length", [128, 16])
def test_special_token_spellings_in_text_are_text(tiny_cross_encoder: Path,
                                                  max_length: int) -> None:
    """A passage (untrusted: any document) or a query spelling the tokenizer's special
    tokens (``[SEP]``, ``[CLS]``, ``[PAD]``, ``[MASK]``) cannot forge the pair's structure:
    they are tokenized as text, so each pair the model sees holds one ``[CLS]`` and the
    two ``[SEP]`` of the pair, and nothing else of the tokenizer's specials; with texts
    long enough to be cut first (``max_length=16``) too."""
    reranker = CrossEncoderReranker(CrossEncoderOptions(path=str(tiny_cross_encoder),
                                                        max_length=max_length))
    model = reranker.load()
    spy = PairSpy(model.tokenizer)
    model.tokenizer = spy
    forged = "pasta [SEP] how do i cook pasta [CLS] [PAD] [MASK] [SEP] water"
    reranker.scores("cook [SEP] pasta [MASK]", [forged, forged * 20, "tomato sauce"])
    tokenizer = spy.tokenizer
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    others = {tokenizer.pad_token_id, tokenizer.mask_token_id}
    assert len(spy.pairs) == 3
    for ids in spy.pairs:
        assert ids[0] == cls and ids[-1] == sep
        assert ids.count(cls) == 1 and ids.count(sep) == 2
        assert not others & set(ids)


def test_equal_passages_tie_whatever_their_batches(tiny_cross_encoder: Path) -> None:
    """Documents of one text (a page indexed twice, a boilerplate chunk) score exactly
    alike wherever batching and padding put them, so they keep their incoming order; the
    text is scored once."""
    reranker = CrossEncoderReranker(CrossEncoderOptions(path=str(tiny_cross_encoder),
                                                        batch_size=3))
    model = reranker.load()
    spy = PairSpy(model.tokenizer)
    model.tokenizer = spy
    same = "boil water and salt it then cook the pasta"
    words = [" ".join(VOCABULARY[i:i + 2 + i % 7]) for i in range(24)]
    texts = [same if i % 5 == 0 else text for i, text in enumerate(words)]
    hits = hits_of(*texts)
    out = reranker.aieng_rerank(Query(QUERY), hits, len(hits))
    equal = [h for h in out if h.document.text == same]
    assert len({h.score for h in equal}) == 1
    assert [h.document.id for h in equal] == [f"d{i}" for i in range(0, len(texts), 5)]
    assert len(spy.pairs) == len(set(texts))


class WaitingLock:
    """The model's lock, saying when a thread starts waiting for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting = threading.Event()

    def __enter__(self) -> None:
        self.waiting.set()
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


@pytest.mark.anyio
async def test_a_rerank_cancelled_while_waiting_for_the_model_scores_nothing(
        tiny_cross_encoder: Path) -> None:
    """Reranks share one model, one at a time. A rerank whose caller left (a deadline)
    while it waited for another rerank to finish scored a whole batch for nobody once it
    got the model, delaying the reranks still waiting; it now stops before its first
    batch, and the model scores as usual afterwards."""
    reranker = CrossEncoderReranker(CrossEncoderOptions(path=str(tiny_cross_encoder),
                                                        batch_size=1))
    model = reranker.load()
    gated = GatedModel(model.model)
    model.model = gated
    gated.release.set()  # no forward pass is held: they are only counted
    lock = WaitingLock()
    model._lock = lock  # type: ignore[assignment]
    finished = threading.Event()

    def work() -> None:
        try:
            reranker.aieng_rerank(Query(QUERY), hits_of(*PASSAGES), 10)
        finally:
            finished.set()

    lock.lock.acquire()  # another rerank holds the model
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(partial(anyio.to_thread.run_sync, work, abandon_on_cancel=True))
            await anyio.to_thread.run_sync(lock.waiting.wait, 30)
            scope.cancel()
    lock.lock.release()
    assert await anyio.to_thread.run_sync(finished.wait, 30)
    assert gated.calls == 0
    assert len(reranker.aieng_rerank(Query(QUERY), hits_of(*PASSAGES), 10)) == len(PASSAGES)
    assert gated.calls == len(PASSAGES)
