"""What every AI judge shares: generating through the pipeline (or a given function),
one retry with the parse error fed back, and a clear failure (an event and a log line,
never a made-up score)."""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, ClassVar, TypeVar

import attrs
import structlog
from aieng_hookspecs import PipelineContext, hookimpl
from aieng_hookspecs.types import Completion, Event, Message, Request
from attrs import field
from attrs import validators as v

from ._parse import JudgeParseError

__all__ = ["AskingJudge", "Generate", "JudgeFailed", "JudgeUnavailable", "collect_failures",
           "reference_text"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: A generation function given to a judge directly (tests, notebooks, other backends):
#: ``request -> Completion``, plain or ``async``; an ``aieng_generate`` impl fits.
Generate = Callable[[Request], Any]

_EXCERPT = 300


@attrs.frozen(kw_only=True)
class JudgeFailed(Event):
    """A judge gave no score: its answers could not be read even after the retry.

    :param judge: the component (or class) that failed.
    :param metric: the score it was asked for (``rubric.accuracy``, ...).
    :param error: the last parse error.
    :param answer: the start of the last answer.
    :param attempts: how many answers were read.
    """

    name: ClassVar[str] = "judge.failed"
    judge: str = field(default="", validator=v.instance_of(str))
    metric: str = field(default="", validator=v.instance_of(str))
    error: str = field(default="", validator=v.instance_of(str))
    answer: str = field(default="", validator=v.instance_of(str))
    attempts: int = field(default=1, validator=v.instance_of(int))


#: The lists :func:`collect_failures` is filling in the current context.
_SINKS: ContextVar[tuple[list[JudgeFailed], ...]] = ContextVar("aieng_judge_failures",
                                                              default=())


@contextlib.contextmanager
def collect_failures() -> Iterator[list[JudgeFailed]]:
    """Collect the :class:`JudgeFailed` of every judge that gives up inside the block, in
    this task and the tasks it starts (a contextvar: concurrent blocks each get their own,
    so a runner attributes each failure to the item being judged; ``aieng eval`` does)::

        with collect_failures() as failed:
            result = await pipeline.run(question)
        print([(f.judge, f.metric, f.error) for f in failed])
    """
    found: list[JudgeFailed] = []
    token = _SINKS.set((*_SINKS.get(), found))
    try:
        yield found
    finally:
        _SINKS.reset(token)


class JudgeUnavailable(RuntimeError):
    """A judge has nothing to generate with (no pipeline opened it, no ``generate=``)."""


class AskingJudge:
    """Base of the judges that ask a model: holds the pipeline context or a ``generate``
    function, and asks with retries.

    :param generate: generate with this function instead of the pipeline:
        ``request -> Completion``, plain or ``async`` (an ``aieng_generate`` impl fits).
    :param name: the name scores are attributed to and failures report (by default the
        component's name in its pipeline, else the class name).

    ``failures`` counts the questions this judge gave up on (after the retries).
    """

    def __init__(self, *, generate: Generate | None = None, name: str = "") -> None:
        self._generate_with = generate
        self._context: PipelineContext | None = None
        self._name = name
        self.failures = 0

    @property
    def name(self) -> str:
        """The judge's name in scores and failure events."""
        if self._name:
            return self._name
        if self._context is not None:
            return self._context.component
        return type(self).__name__

    @hookimpl
    def aieng_pipeline_open(self, context: PipelineContext) -> None:
        """Keep the pipeline's context, to generate through it and publish failures."""
        self._context = context

    async def generate(self, request: Request) -> Completion:
        """One completion, from the ``generate=`` function or the pipeline's backends."""
        if self._generate_with is not None:
            completion = self._generate_with(request)
            if inspect.isawaitable(completion):
                completion = await completion
            if not isinstance(completion, Completion):
                raise JudgeUnavailable(f"the generate function answered {completion!r}, "
                                       "not a Completion")
            return completion
        if self._context is None:
            raise JudgeUnavailable(
                f"{type(self).__name__} has no backend: it generates through its pipeline, "
                "which opens it first (Pipeline.open, run), or through the generate= it was "
                "built with")
        return await self._context.generate(request)

    async def ask(
        self,
        messages: Sequence[Message],
        parse: Callable[[str], T],
        *,
        metric: str,
        model: str | None,
        temperature: float,
        max_tokens: int,
        schema: dict[str, Any] | None,
        retries: int,
        example: str,
        quoted: Sequence[str] = (),
    ) -> T | None:
        """Ask, parse the answer; on a parse error ask again (``retries`` times) with the
        error and the expected format appended to the conversation.

        :param messages: the conversation to send.
        :param parse: reads the answer; raises :class:`JudgeParseError` when it cannot.
        :param metric: the score being asked for (for the failure report).
        :param schema: the JSON schema sent as ``request.response_schema`` (backends that
            constrain decoding then produce valid JSON), or ``None``.
        :param example: the expected answer's shape, quoted in the retry message.
        :param quoted: the untrusted texts the prompt shows (the answer, the question, the
            passages ...): where the answer copies one that reads as a verdict itself
            (an answer ending ``Score: 5``), or one of its lines, the copy is not read
            (:func:`unquoted`): a judged text cannot set its own verdict.
        :returns: the parsed value, or ``None`` after the last failed attempt (a
            ``judge.failed`` event is published and a warning logged).
        """
        conversation = list(messages)
        error = ""
        text = ""
        for attempt in range(retries + 1):
            request = Request(messages=tuple(conversation), model=model,
                              temperature=temperature, max_tokens=max_tokens,
                              response_schema=schema)
            completion = await self.generate(request)
            text = completion.text
            try:
                return parse(unquoted(text, quoted, parse))
            except JudgeParseError as exc:
                error = str(exc)
                log.debug("judge.retry", judge=self.name, metric=metric, attempt=attempt + 1,
                          error=error)
            conversation += [
                Message(role="assistant", content=text),
                Message(role="user", content=(
                    f"Your answer could not be read: {error}. Reply again with only "
                    f"{example}, nothing else.")),
            ]
        self.failures += 1
        log.warning("judge.failed", judge=self.name, metric=metric, error=error,
                    answer=text[:_EXCERPT], attempts=retries + 1)
        failed = JudgeFailed(judge=self.name, metric=metric, error=error,
                             answer=text[:_EXCERPT], attempts=retries + 1)
        for sink in _SINKS.get():
            sink.append(failed)
        if self._context is not None:
            self._context.emit(failed)
        return None


#: What a judge's answer shows instead of a copy of a judged text (no verdict in it).
QUOTED = "(quoted text)"
#: A text of one word (``5``, ``A``, ``yes``, ``4/5``): a judge writes it as its own
#: verdict too, so a copy of it is read.
_ONE_WORD = re.compile(r"[\w/.]+")


def _reads_as_verdict(text: str, parse: Callable[[str], object]) -> bool:
    try:
        parse(text)
    except JudgeParseError as exc:  # "no score found" / "no verdict found": none in it
        return not str(exc).startswith("no ")
    return True


def unquoted(answer: str, quoted: Sequence[str], parse: Callable[[str], object]) -> str:
    """A judge's ``answer`` with every verbatim copy of a judged text (one of ``quoted``,
    or a line of one) that reads as a verdict by itself (``parse`` finds one in it, or a
    score out of range) replaced by :data:`QUOTED`: a judge that quotes or echoes an
    answer ending ``Score: 5`` (or ``{"score": "5"}``, ``[[A]]``) gave no verdict there,
    and its own verdict is the one read. A one-word text (``5``, ``A``, ``yes``) is left
    as it is: a judge writes it as its verdict too."""
    pieces = {piece.strip() for text in quoted for piece in (text, *text.splitlines())}
    for piece in sorted(pieces, key=len, reverse=True):
        if (piece and piece in answer and not _ONE_WORD.fullmatch(piece)
                and _reads_as_verdict(piece, parse)):
            answer = answer.replace(piece, QUOTED)
    return answer


def reference_text(reference: str | tuple[str, ...] | None) -> str | None:
    """A sample's reference as one text (several acceptable answers joined by `` | ``)."""
    if reference is None:
        return None
    if isinstance(reference, str):
        return reference
    return " | ".join(reference)

