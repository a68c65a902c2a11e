"""``context``: the context builder component."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import anyio.to_thread
import attrs
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Hit, Message, Query, Request
from anyio.from_thread import check_cancelled

from ._budget import Passage, select
from ._fence import fence, one_line
from ._options import ContextOptions
from ._templates import TEMPLATES, render_user
from ._tokens import TokenCounter, approximate_tokens, load_tokenizer

__all__ = ["ContextBuilder"]

_SEPARATOR = "\n\n"
#: With the approximate counter, a build whose passages and messages hold at most this many
#: characters runs inline on the event loop (microseconds); a larger one, or any build with
#: a real tokenizer, in a worker thread.
INLINE_LIMIT = 16_384


class ContextBuilder:
    """Renders the request the model sees: a templated prompt whose context holds the hits
    as numbered, fenced passages of untrusted data, under a token budget.

    The passages and the question also go into ``request.metadata``: ``"context"`` is the
    list of ``{"n", "id", "title", "text", "rank", "cut"}`` in the order the prompt shows
    them (``n`` is the citation number ``[n]``, ``text`` the exact prefix of the document's
    text shown), ``"question"`` the user's question, and ``"context_build"`` what was
    dropped, cut and counted.

    :param options: the typed options.
    :param count_tokens: a token counter to use instead of ``options.tokenizer_path`` or
        the approximation (for code that already holds its model's tokenizer).
    """

    def __init__(self, options: ContextOptions | None = None, *,
                 count_tokens: TokenCounter | None = None) -> None:
        self.options = options if options is not None else ContextOptions()
        self.template = TEMPLATES[self.options.template]
        self._count = count_tokens
        self._counter_name = "custom" if count_tokens is not None else (
            self.options.tokenizer_path or "approximate")
        if count_tokens is None and self.options.tokenizer_path is None:
            self._count = approximate_tokens
        self._inline = self._count is approximate_tokens
        self._load_lock = threading.Lock()

    @property
    def count_tokens(self) -> TokenCounter:
        """The token counter; a ``tokenizer_path`` tokenizer is loaded on first use."""
        if self._count is None:
            with self._load_lock:
                if self._count is None:
                    assert self.options.tokenizer_path is not None
                    self._count = load_tokenizer(self.options.tokenizer_path)
        return self._count

    @hookimpl
    async def aieng_pipeline_open(self) -> None:
        """Load the tokenizer of ``tokenizer_path`` (in a worker thread), so a bad path
        fails when the pipeline opens rather than on its first question."""
        if self._count is None:
            await anyio.to_thread.run_sync(lambda: self.count_tokens)

    @hookimpl
    async def aieng_context_build(self, query: Query, hits: Sequence[Hit],
                                  request: Request) -> Request:
        """Render the request; a real tokenizer, or a long input, counts in a worker thread.

        The caller's deadline (a host's ``fail_after``, the stage's timeout) ends a build in
        its worker thread at the next text it counts: the thread has ended when the
        cancellation reaches the caller (it used to count every passage and turn first).
        """
        if self._inline and _size(query, hits, request) <= INLINE_LIMIT:
            return self.build(query, hits, request)
        return await anyio.to_thread.run_sync(self._build_cancellable, query, hits, request)

    def _build_cancellable(self, query: Query, hits: Sequence[Hit],
                           request: Request) -> Request:
        """:meth:`build` in a worker thread, stopping before any count once the task
        waiting for the thread is cancelled."""
        count = self.count_tokens

        def counted(text: str) -> int:
            check_cancelled()  # raises the caller's cancellation, if any, in this thread
            return count(text)

        return self._build(query, hits, request, counted)

    def build(self, query: Query, hits: Sequence[Hit], request: Request) -> Request:
        """The request with the rendered messages and the context metadata (blocking when a
        real tokenizer counts: in async code, call the hook or use a worker thread).

        :raises ValueError: when ``max_prompt_tokens`` is set and the prompt without any
            passage or earlier turn is already over it.
        """
        return self._build(query, hits, request, self.count_tokens)

    def _build(self, query: Query, hits: Sequence[Hit], request: Request,
               count: TokenCounter) -> Request:
        options = self.options
        # A document retrieved twice (two retrievers without a reranker) is shown once, at
        # its best rank: two numbers for one source would split its citations.
        best: dict[str, Hit] = {}
        for hit in hits:
            best.setdefault(hit.document.id, hit)
        # A hit with nothing to show (an empty chunk) would be an empty passage taking a
        # citation number and room: it is left out, and reported.
        empty = [doc_id for doc_id, hit in best.items() if _blank(hit)]
        hits = [hit for hit in best.values() if not _blank(hit)]
        history, after, question = _split(query, request)

        def block_of(passages: Sequence[Passage]) -> str:
            return _SEPARATOR.join(
                fence(n, p.text, title=p.hit.document.title, cut=p.cut)
                for n, p in enumerate(self._display(passages), start=1))

        def total(messages: Sequence[Message]) -> int:
            return sum(count(m.content) for m in messages)

        def frame(block: str) -> tuple[Message, ...]:  # the messages but the earlier turns
            return self._messages(block, (), after, question, request)

        room = options.max_context_tokens
        limit = options.max_prompt_tokens
        dropped_turns = 0
        if limit is None:
            history_tokens = total(history)
        else:
            bare = total(frame(""))  # no passage, no earlier turn
            if bare > limit:
                raise ValueError(self._too_long(bare, limit, after))
            framed = total(frame(" "))  # with the context section's note
            # The oldest turns go first: until the prompt without passages fits, and until
            # the passages have what they need of their share of the room (what they take
            # of it, so the turns get all the passages leave).
            allowed = limit - bare
            share = min(options.max_context_tokens,
                        int((1 - options.history_share) * (limit - framed)))
            if hits and share > 0:
                wanted = select(hits, count=count, room=share, separator=_SEPARATOR,
                                min_passage_tokens=options.min_passage_tokens)
                if wanted:
                    allowed = min(allowed, limit - framed - count(block_of(wanted)))
            earlier = len(history)
            history, history_tokens = _latest(history, count, allowed)
            dropped_turns = earlier - len(history)
            room = min(room, limit - framed - history_tokens)
        # The selection adds up the counts of the parts; a tokenizer may count the joined
        # whole a little differently. Check what is rendered, and select again with the
        # room cut by the excess until it fits, so the budget holds by the counter's own
        # count of what is sent. With no passage it fits, so this ends.
        attempt = 0
        while True:
            chosen = select(hits, count=count, room=room, separator=_SEPARATOR,
                            min_passage_tokens=options.min_passage_tokens)
            block = block_of(chosen)
            rendered = frame(block)
            tokens = count(block) if chosen else 0
            prompt = total(rendered) + history_tokens
            excess = max(tokens - options.max_context_tokens,
                         0 if limit is None else prompt - limit)
            if excess <= 0:
                break
            room -= excess << min(attempt, 16)  # converge fast if the counts keep disagreeing
            attempt += 1
        place = len(rendered) - 1 - len(after)  # the rendered question's place
        messages = (*rendered[:place], *history, *rendered[place:])
        shown = self._display(chosen)
        passages = [{"n": n, "id": p.hit.document.id, "title": p.hit.document.title,
                     "text": p.text, "rank": p.hit.rank, "cut": p.cut}
                    for n, p in enumerate(shown, start=1)]
        report: dict[str, Any] = {
            "template": options.template,
            "order": options.order,
            "tokenizer": self._counter_name,
            "context_tokens": tokens,
            "prompt_tokens": prompt,
            "max_context_tokens": options.max_context_tokens,
            "max_prompt_tokens": limit,
            "history_share": options.history_share,
            "cut": [p.hit.document.id for p in chosen if p.cut],
            # The passages kept are always the best ones: a prefix of the hits.
            "dropped": [hit.document.id for hit in hits[len(chosen):]],
            "empty": empty,
            "dropped_turns": dropped_turns,
            "history_tokens": history_tokens,
        }
        metadata = {**request.metadata, "context": passages, "question": question,
                    "context_build": report}
        return attrs.evolve(request, messages=messages, metadata=metadata)

    def _too_long(self, tokens: int, limit: int, after: Sequence[Message]) -> str:
        """Why the prompt without passages or earlier turns is over ``limit``: what to
        shorten, naming the turns after the question (an agent's steps), which are kept."""
        parts = "the system message, task, examples or question"
        said = ""
        if after:
            steps = sum(self.count_tokens(m.content) for m in after)
            parts = "the system message, task, examples, question or the turns after it"
            said = f", {len(after)} turns after the question taking {steps} of them"
        return (f"the prompt without any passage or earlier turn is {tokens} tokens{said}, "
                f"over max_prompt_tokens = {limit}: shorten {parts}, or raise "
                "max_prompt_tokens")

    def _display(self, passages: Sequence[Passage]) -> list[Passage]:
        if self.options.order == "rank":
            return list(passages)
        # Best at both ends: ranks 1, 3, 5, ... from the start, ranks 2, 4, ... from the end.
        return [*passages[0::2], *reversed(passages[1::2])]

    def _messages(self, block: str, history: Sequence[Message], after: Sequence[Message],
                  question: str, request: Request) -> tuple[Message, ...]:
        options, template = self.options, self.template
        user = render_user(
            template, context=block, examples=options.examples,
            task=template.task if options.task is None else options.task,
            question=question,
            output_format=(template.output_format if options.output_format is None
                           else options.output_format),
            response_schema=request.response_schema)
        system = template.system if options.system is None else options.system
        head = (Message("system", system),) if system else ()
        return (*head, *history, Message("user", user), *after)


def _size(query: Query, hits: Sequence[Hit], request: Request) -> int:
    """The characters a build may count: the query's, the hits' and the messages'."""
    return (len(query.text) + sum(len(h.document.text) + len(h.document.title) for h in hits)
            + sum(len(m.content) for m in request.messages))


def _blank(hit: Hit) -> bool:
    """Whether a hit has nothing to show: a blank text and a blank title."""
    text = hit.document.text  # isspace() reads it; strip() would copy a megabyte text
    return (not text or text.isspace()) and not one_line(hit.document.title)


def _latest(history: Sequence[Message], count: TokenCounter,
            allowed: int) -> tuple[list[Message], int]:
    """The latest turns of ``history`` whose counts add up to at most ``allowed`` tokens,
    with no tool result whose call is left out, and their count. Only the turns kept and
    the one before them are counted: a chat of thousands of turns costs what the prompt
    holds (a prompt's count is the sum of its messages' counts)."""
    counts: list[int] = []  # the kept turns' counts, newest first
    tokens = 0
    while len(counts) < len(history):
        turn = count(history[len(history) - 1 - len(counts)].content)
        if tokens + turn > allowed:
            break
        counts.append(turn)
        tokens += turn
    start = len(history) - len(counts)
    if start:  # a turn is left out: so are the results of its tool calls
        while counts and history[start].role == "tool":
            tokens -= counts.pop()
            start += 1
    return list(history[start:]), tokens


def _split(query: Query, request: Request) -> tuple[list[Message], list[Message], str]:
    """The turns before the last user message, those after it, and the question: the last
    user message's text (the query's text when there is none). System messages are
    dropped: the template's replaces them."""
    messages = request.messages
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        return [m for m in messages if m.role != "system"], [], query.text
    before = [m for m in messages[:last] if m.role != "system"]
    after = [m for m in messages[last + 1:] if m.role != "system"]
    return before, after, messages[last].content
