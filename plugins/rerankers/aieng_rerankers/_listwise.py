"""``llm-listwise``: the pipeline's backend ranks numbered passages, window by window."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Completion, Hit, Query, Request

from ._hits import distinct, keep, passage_text, ranked
from ._options import ListwiseOptions
from ._ranking import complete, parse_ranking, render_messages, windows

__all__ = ["Generate", "ListwiseReranker"]

log = structlog.get_logger(__name__)

#: A generation function given to the reranker directly (tests, notebooks):
#: ``request -> Completion``, plain or ``async``; an ``aieng_generate`` impl fits.
Generate = Callable[[Request], Any]

_EXCERPT = 200


class ListwiseReranker:
    """Asks the pipeline's backend (``context.generate``) to order numbered passages by
    relevance to the query, RankGPT style.

    A list longer than ``window`` is ranked by a window sliding from the bottom of the list
    to the top by ``window - overlap``, so the best passages bubble up to the first window.
    The answer is parsed forgivingly (``[2] > [1]``, ``Passage 2``, ``2, 1``, a numbered
    list): ids out of range and repeats are ignored, and passages the answer leaves out
    keep their incoming order after the ones it names. An answer naming no passage at all
    leaves its window in the incoming order and logs a ``listwise.unparsable`` warning. A
    backend error is raised (the stage's error policy decides what follows).

    Scores are ``1 / rank`` of the final order (the model gives no scores); the hits keep
    their ``source``. It keeps at most ``k`` hits (the stage's ``k``, lowered by the option
    ``k``).

    :param options: the typed options (defaults when ``None``).
    :param generate: generate with this function instead of the pipeline:
        ``request -> Completion``, plain or ``async`` (an ``aieng_generate`` impl fits).
    """

    def __init__(self, options: ListwiseOptions | None = None, *,
                 generate: Generate | None = None) -> None:
        self.options = options if options is not None else ListwiseOptions()
        self._generate_with = generate
        self._context: PipelineContext | None = None

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Keep the pipeline's context, to generate through it."""
        self._context = context

    async def _generate(self, request: Request) -> Completion:
        if self._generate_with is not None:
            completion = self._generate_with(request)
            if inspect.isawaitable(completion):
                completion = await completion
            if not isinstance(completion, Completion):
                raise LookupError(f"the generate function answered {completion!r}, "
                                  "not a Completion")
            return completion
        if self._context is None:
            raise RuntimeError(
                "this reranker has no backend: it generates through its pipeline, which "
                "opens it first (Pipeline.open, run or index), or through the generate= it "
                "was built with")
        return await self._context.generate(request)

    def request(self, query: Query, hits: Sequence[Hit]) -> Request:
        """The request asking to rank ``hits`` (numbered from 1) for ``query``."""
        options = self.options
        messages = render_messages(query.text, [passage_text(hit.document) for hit in hits],
                                   max_chars=options.max_passage_chars)
        return Request(messages=messages, model=options.model,
                       temperature=options.temperature, max_tokens=options.max_tokens)

    async def rank_window(self, query: Query, hits: Sequence[Hit]) -> list[Hit]:
        """``hits`` in the order one answer of the backend gives them."""
        if len(hits) <= 1:
            return list(hits)
        completion = await self._generate(self.request(query, hits))
        found = parse_ranking(completion.text, len(hits))
        if found is None:
            log.warning("listwise.unparsable", passages=len(hits),
                        answer=completion.text[:_EXCERPT],
                        finish_reason=completion.finish_reason)
            return list(hits)
        if len(found) < len(hits):
            log.debug("listwise.partial", passages=len(hits), named=len(found))
        return [hits[i] for i in complete(found, len(hits))]

    @hookimpl
    async def aieng_rerank(self, query: Query, hits: Sequence[Hit], k: int) -> list[Hit]:
        """The hits in the order the backend ranks them, at most ``k``, scored ``1/rank``."""
        order = distinct(hits)
        limit = keep(k, self.options.k)
        if not order or limit < 1:
            return []
        step = self.options.window - self.options.overlap
        for start, end in windows(len(order), self.options.window, step):
            order[start:end] = await self.rank_window(query, order[start:end])
        return ranked((hit, 1.0 / rank) for rank, hit in enumerate(order[:limit], start=1))
