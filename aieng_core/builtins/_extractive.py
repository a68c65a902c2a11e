"""``extractive``: a deterministic, offline backend that answers by quoting its context.

It is no language model: it picks the context sentences sharing the most words with the
question and cites them. It makes pipelines runnable with no model installed, and gives
tests an exact, reproducible backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import attrs

from aieng_hookspecs import hookimpl, neutralize_citations
from aieng_hookspecs.types import Completion, Delta, Request, Usage

from ._text import sentences, tokenize

__all__ = ["ExtractiveBackend", "ExtractiveOptions"]


@attrs.frozen
class ExtractiveOptions:
    """Options of the ``extractive`` backend.

    :param max_sentences: the most sentences quoted in an answer.
    """

    max_sentences: int = attrs.field(default=2, validator=attrs.validators.ge(1))


class ExtractiveBackend:
    """Answers with the best-matching context sentences, each cited as ``[n]``."""

    model = "extractive"
    #: the same request always gets the same answer (the conformance suite checks it).
    deterministic = True

    def __init__(self, options: ExtractiveOptions) -> None:
        self.options = options

    def _answer(self, request: Request) -> str:
        question = str(request.metadata.get("question") or request.prompt)
        passages: list[dict[str, Any]] = list(request.metadata.get("context") or [])
        if not passages:
            return "I found nothing in the context to answer that."
        wanted = set(tokenize(question))
        scored = []
        for order, passage in enumerate(passages):
            for position, sentence in enumerate(sentences(str(passage.get("text", "")))):
                overlap = len(wanted.intersection(tokenize(sentence)))
                if overlap:
                    number = passage.get("n", order + 1)
                    scored.append((-overlap, order, position, sentence, number))
        if not scored:
            return "I found nothing in the context to answer that."
        best = sorted(scored)[: self.options.max_sentences]
        best.sort(key=lambda item: (item[1], item[2]))  # keep the passages' own order
        # A passage's own "[2]" quoted as it is would credit the sentence to passage 2.
        return " ".join(f"{neutralize_citations(sentence)} [{n}]"
                        for _, _, _, sentence, n in best)

    def _usage(self, request: Request, text: str) -> Usage:
        prompt = sum(len(m.content.split()) for m in request.messages)
        return Usage(prompt_tokens=prompt, completion_tokens=len(text.split()))

    @hookimpl
    def aieng_generate(self, request: Request) -> Completion | None:
        if request.model not in (None, self.model):
            return None
        text = self._answer(request)
        words = text.split()
        finish = "stop"
        if len(words) > request.max_tokens:
            text, finish = " ".join(words[: request.max_tokens]), "length"
        return Completion(text=text, finish_reason=finish,  # type: ignore[arg-type]
                          usage=self._usage(request, text), model=self.model)

    @hookimpl
    def aieng_stream(self, request: Request) -> AsyncIterator[Delta] | None:
        if request.model not in (None, self.model):
            return None
        return self._stream(request)

    async def _stream(self, request: Request) -> AsyncIterator[Delta]:
        all_words = self._answer(request).split()
        words = all_words[: request.max_tokens]
        for index, word in enumerate(words):
            await anyio.lowlevel.checkpoint()
            yield Delta(text=word if index == 0 else f" {word}", index=index)
        finish = "length" if len(all_words) > request.max_tokens else "stop"
        yield Delta(text="", index=len(words), finish_reason=finish,  # type: ignore[arg-type]
                    usage=self._usage(request, " ".join(words)), model=self.model)
