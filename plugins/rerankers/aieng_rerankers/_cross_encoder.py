"""``cross-encoder``: rerank with a local sequence-classification model over (query, passage)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog
from aieng_hookspecs import blocking, hookimpl
from aieng_hookspecs.types import Hit, Query

from ._hits import distinct, keep, passage_text, sort_by_score
from ._options import CrossEncoderOptions

if TYPE_CHECKING:
    from ._cross_model import CrossEncoderModel

__all__ = ["CrossEncoderReranker"]

log = structlog.get_logger(__name__)


class CrossEncoderReranker:
    """Re-scores each hit with a cross-encoder reading the query and the passage together,
    re-sorts (ties keep the incoming order) and keeps the best ``k``.

    The model is a Hugging Face sequence-classification folder on disk (option ``path``;
    nothing is downloaded), loaded when the pipeline opens or on first use; torch and
    transformers are imported then, not when the plugin loads. Pairs are scored in batches
    of ``batch_size``. Every hook impl is ``@blocking``: the kernel runs it in a worker
    thread. The hits keep their ``source``.

    :param options: the typed options; ``path`` is required.
    """

    def __init__(self, options: CrossEncoderOptions) -> None:
        self.options = options
        self._model: CrossEncoderModel | None = None
        self._loading = threading.Lock()

    def load(self) -> CrossEncoderModel:
        """Load the model now; blocking, idempotent and thread-safe.

        :raises ModelNotFound: when ``path`` is not a model folder.
        :raises ValueError: when the model has more than two labels.
        """
        with self._loading:
            if self._model is None:
                from ._cross_model import CrossEncoderModel

                started = time.perf_counter()
                options = self.options
                self._model = CrossEncoderModel(
                    options.path, device=options.device, batch_size=options.batch_size,
                    max_length=options.max_length, sigmoid=options.activation == "sigmoid")
                log.info("model.loaded", component="cross-encoder", path=options.path,
                         seconds=round(time.perf_counter() - started, 3))
            return self._model

    def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        """The relevance of each passage to the query (blocking; loads the model)."""
        return self.load().score(query, passages)

    @hookimpl
    @blocking
    def aieng_pipeline_open(self) -> None:
        """Load the model, so a bad ``path`` fails the pipeline's opening."""
        self.load()

    @hookimpl
    @blocking
    def aieng_rerank(self, query: Query, hits: Sequence[Hit], k: int) -> list[Hit]:
        """The best ``k`` hits by the cross-encoder's score, scored by it."""
        candidates = distinct(hits)
        limit = keep(k, self.options.k)
        if not candidates or limit < 1:
            return []
        scores = self.scores(query.text, [passage_text(hit.document) for hit in candidates])
        return sort_by_score(candidates, scores, limit)

    def close(self) -> None:
        """Drop the model (its memory is freed once nothing else holds it)."""
        with self._loading:
            self._model = None
