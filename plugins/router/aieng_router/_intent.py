"""``intent-router``: route by the intent of the nearest labelled examples (kNN over
embeddings)."""

from __future__ import annotations

import inspect
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Event, Request, Route

from ._breaker import Clock
from ._health import Health
from ._options import IntentOptions

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float64]

__all__ = ["Embedder", "IntentClassifier", "IntentRouter", "knn_vote", "read_examples"]

log = structlog.get_logger(__name__)

#: An embedding function given directly (tests, notebooks): ``(texts, model) -> vectors``,
#: plain or ``async``; an ``aieng_embed`` impl fits.
Embedder = Callable[[Sequence[str], "str | None"], Any]


def read_examples(path: str | Path) -> dict[str, list[str]]:
    """Labelled examples from a JSONL file of ``{"text": ..., "label": ...}`` lines
    (blank lines are skipped).

    :raises ValueError: naming the file and line of a malformed entry.
    :raises FileNotFoundError: when the file is missing.
    """
    examples: dict[str, list[str]] = {}
    # utf-8-sig: a byte-order mark (Windows editors write one) is not part of line 1.
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc.msg}") from None
            if (not isinstance(entry, dict) or not isinstance(entry.get("text"), str)
                    or not isinstance(entry.get("label"), str) or not entry["label"]):
                raise ValueError(f'{path}:{number}: expected {{"text": str, "label": str}}, '
                                 f"got {line.strip()[:80]!r}")
            examples.setdefault(entry["label"], []).append(entry["text"])
    return examples


def _unit_rows(vectors: Sequence[Sequence[float]], count: int, *,
               strict: bool = False) -> Matrix:
    """The vectors as unit rows (NaN and infinities as 0; with ``strict`` they are a
    ``ValueError`` instead: examples that silently never match are a broken embedder)."""
    import numpy as np

    if len(vectors) != count:
        raise ValueError(f"the embedder returned {len(vectors)} vectors for {count} texts")
    try:
        matrix = np.asarray(vectors, dtype=np.float64).reshape(count, -1)
    except ValueError as exc:
        raise ValueError(f"the embedder returned vectors of different sizes: {exc}") from None
    if strict and not np.isfinite(matrix).all():
        bad = int((~np.isfinite(matrix)).any(axis=1).sum())
        raise ValueError(f"the embedder returned NaN or infinite values for {bad} of "
                         f"{count} examples: check the embedding model (and its dtype)")
    matrix = np.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    result: Matrix = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0.0)
    return result


def knn_vote(similarities: Sequence[float], labels: Sequence[str], k: int
             ) -> list[tuple[str, float, float]]:
    """Rank labels by the summed similarity of their examples among the ``k`` nearest.

    :returns: ``(label, vote, best similarity)`` for every label among the neighbours,
        best first (ties: the higher best similarity, then the label's first appearance).
    """
    order = sorted(range(len(similarities)), key=lambda i: (-similarities[i], i))[:k]
    votes: dict[str, list[float]] = {}
    for index in order:
        entry = votes.setdefault(labels[index], [0.0, -2.0])
        entry[0] += similarities[index]
        entry[1] = max(entry[1], similarities[index])
    ranked = sorted(votes.items(), key=lambda item: (-item[1][0], -item[1][1]))
    return [(label, vote, best) for label, (vote, best) in ranked]


class IntentClassifier:
    """Labelled example embeddings and the kNN vote over them.

    :param labels: the label of each example row.
    :param matrix: the examples' embeddings as unit rows.
    :param k: neighbours that vote.
    """

    def __init__(self, labels: Sequence[str], matrix: Matrix, k: int) -> None:
        import numpy as np

        self.labels = list(labels)
        self.matrix = matrix
        self.k = k
        # each label's position among the distinct labels (first appearance), per row: the
        # best similarity of every label in one numpy pass
        codes: dict[str, int] = {}
        self._codes = np.array([codes.setdefault(label, len(codes)) for label in self.labels],
                               dtype=np.intp)
        self._names = list(codes)

    def rank(self, vector: Sequence[float]) -> list[tuple[str, float, float]]:
        """Every label ranked for one query embedding: those among the ``k`` nearest by
        :func:`knn_vote`, then the others (vote 0) by their best similarity.

        The neighbours are picked in numpy (a partition, linear in the examples), so only
        the ``k`` nearest (and rows tied with the k-th) reach the Python vote."""
        import numpy as np

        query = _unit_rows([vector], 1)[0]
        if query.shape[0] != self.matrix.shape[1]:
            raise ValueError(f"the query embedding has {query.shape[0]} dimensions, the "
                             f"examples {self.matrix.shape[1]}")
        similarities = self.matrix @ query
        count = similarities.shape[0]
        if count > self.k:
            kth = np.partition(similarities, count - self.k)[count - self.k]
            # every row tied with the k-th, in row order: knn_vote breaks ties by position
            near = np.flatnonzero(similarities >= kth)
        else:
            near = np.arange(count)
        ranked = knn_vote(similarities[near].tolist(), [self.labels[i] for i in near],
                          self.k)
        # Labels with no neighbour among the k follow, by their best similarity, so that
        # every intent's backend can serve as a fallback.
        seen = {label for label, _, _ in ranked}
        best = np.full(len(self._names), -2.0)
        np.maximum.at(best, self._codes, similarities)
        rest = sorted(((label, value) for label, value in zip(self._names, best.tolist())
                       if label not in seen), key=lambda item: -item[1])
        return ranked + [(label, 0.0, value) for label, value in rest]


class IntentRouter:
    """Routes a request to the backend of its intent: the label whose examples, among the
    ``k`` nearest to the last user message by cosine similarity, have the largest summed
    similarity.

    The examples are embedded once, when the pipeline opens (through ``context.embed``:
    the pipeline's embedding backend, else the kernel's default ``minilm``), or on the
    first route when the router was built with an ``embedder``. Each route embeds the
    request's last user message. When the winning label's best similarity is below
    ``min_similarity`` the router routes to ``default`` (no opinion without one).
    Fallbacks are the backends of the next-ranked labels, then ``default``, then the
    ``fallbacks`` option; backends whose circuit is open are left out.

    :param options: the typed options.
    :param embedder: embed with this function instead of the pipeline.
    :param clock: the circuit breakers' time source.
    """

    def __init__(self, options: IntentOptions, *, embedder: Embedder | None = None,
                 clock: Clock = time.monotonic) -> None:
        self.options = options
        # Kept in a tuple: pluggy scans attributes for impl markers, and an injected
        # ``aieng_embed`` impl would be taken for one of this component's hooks.
        self._embedder: tuple[Embedder, ...] = () if embedder is None else (embedder,)
        self.health = Health("intent-router", options.breaker, clock=clock)
        self.classifier: IntentClassifier | None = None
        self._context: PipelineContext | None = None
        self._lock = anyio.Lock()

    async def _embed(self, texts: Sequence[str]) -> Sequence[Sequence[float]]:
        if self._embedder:
            vectors = self._embedder[0](list(texts), self.options.model)
            if inspect.isawaitable(vectors):
                vectors = await vectors
            return vectors  # type: ignore[no-any-return]
        if self._context is None:
            raise RuntimeError("the intent-router embeds through its pipeline, which opens it "
                               "first (Pipeline.open or run), or through the embedder= it was "
                               "built with")
        return await self._context.embed(list(texts), self.options.model)

    async def _embed_examples(self, texts: Sequence[str]) -> Matrix:
        """The examples as unit rows, embedded ``embed_batch`` texts per call (a server
        caps the texts of one request, and each call has the embed stage's timeout), each
        batch turned into a numpy block at once (no list of every vector's floats)."""
        import numpy as np

        size = self.options.embed_batch
        blocks: list[Matrix] = []
        for start in range(0, len(texts), size):
            batch = texts[start:start + size]
            block = _unit_rows(await self._embed(batch), len(batch), strict=True)
            if blocks and block.shape[1] != blocks[0].shape[1]:
                raise ValueError(f"the embedder returned vectors of different sizes: "
                                 f"{blocks[0].shape[1]} and {block.shape[1]} dimensions")
            blocks.append(block)
        matrix: Matrix = np.vstack(blocks)
        return matrix

    async def prepare(self) -> IntentClassifier:
        """Read the examples file (if any) and embed the examples, once."""
        async with self._lock:
            if self.classifier is not None:
                return self.classifier
            examples: dict[str, list[str]] = {k: list(v) for k, v in
                                              self.options.examples.items()}
            if self.options.examples_file is not None:
                extra = await anyio.to_thread.run_sync(read_examples,
                                                       self.options.examples_file)
                unknown = sorted(set(extra) - set(self.options.routes))
                if unknown:
                    raise ValueError(f"{self.options.examples_file}: label {unknown[0]!r} has "
                                     f"no entry in routes ({', '.join(self.options.routes)})")
                for label, texts in extra.items():
                    examples.setdefault(label, []).extend(texts)
            empty = sorted(label for label in self.options.routes if not examples.get(label))
            if empty:
                raise ValueError(f"route {empty[0]!r} has no examples")
            labels = [label for label, texts in examples.items() for _ in texts]
            texts = [text for group in examples.values() for text in group]
            matrix = await self._embed_examples(texts)
            self.classifier = IntentClassifier(labels, matrix, self.options.k)
            log.info("router.intent_examples", labels=len(examples), examples=len(texts))
            return self.classifier

    @hookimpl
    async def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Check the backends the options name against the pipeline's, keep the context
        (to embed and emit through) and embed the examples."""
        options = self.options
        self.health.check_named(
            [*((f"routes.{label}", name) for label, name in options.routes.items()),
             *((("default", options.default),) if options.default is not None else ()),
             *(("fallbacks", name) for name in options.fallbacks)], context)
        self._context = context
        self.health.router = context.component
        self.health.context = context
        await self.prepare()

    @hookimpl
    def aieng_on_event(self, event: Event) -> None:
        """Learn backend health from ``backend.call`` and ``error`` events."""
        self.health.observe(event)

    async def rank(self, text: str) -> list[tuple[str, float, float]]:
        """The intent labels ranked for one text (see :func:`knn_vote`)."""
        classifier = await self.prepare()
        vector = (await self._embed([text]))[0]
        if not all(math.isfinite(x) for x in vector):
            # Not "no intent": a broken embedder, said each time rather than hidden.
            log.warning("router.intent_embedding_not_finite", router=self.health.router,
                        hint="the embedder returned NaN or infinite values for the "
                             "request: it is routed to default; check the embedding model")
            return []
        return classifier.rank(vector)

    @hookimpl
    async def aieng_route(self, request: Request, candidates: Sequence[str]) -> Route | None:
        """The backend of the request's intent, the next intents' backends as fallbacks."""
        if not candidates:
            return None
        self.health.fail_fast(candidates)
        options = self.options
        ranked = await self.rank(request.prompt)
        routes: Mapping[str, str] = options.routes
        if not ranked or ranked[0][2] < options.min_similarity:
            best = ranked[0][2] if ranked else None
            if options.default is None:
                return None
            reason = f"intent: none above {options.min_similarity:g}" if ranked else \
                "intent: the request's embedding is not finite"
            return self.health.route((options.default, *options.fallbacks), candidates,
                                     reason=reason, score=best)
        label, _, best = ranked[0]
        order = [routes[name] for name, _, _ in ranked]
        if options.default is not None:
            order.append(options.default)
        order.extend(options.fallbacks)
        return self.health.route(order, candidates, reason=f"intent:{label}", score=best)
