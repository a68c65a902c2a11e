"""Where an expander generates: an injected function, else its pipeline's backends."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from aieng_hookspecs import PipelineContext
from aieng_hookspecs.types import Completion, Request

__all__ = ["Backend", "Generate"]

#: A generation function given to an expander directly (tests, notebooks):
#: ``request -> Completion``, plain or ``async``; an ``aieng_generate`` impl fits.
Generate = Callable[[Request], Any]


class Backend:
    """Generates with ``generate`` when given, else through ``context.generate`` (the
    pipeline's backends; each call is published as a ``backend.call`` event).

    :param generate: the injected generation function, or ``None``.
    """

    def __init__(self, generate: Generate | None) -> None:
        self.generate_with = generate
        self.context: PipelineContext | None = None

    async def generate(self, request: Request) -> Completion:
        """The completion of ``request``.

        :raises RuntimeError: when there is no function and the pipeline never opened.
        :raises LookupError: when the function answers something else than a Completion.
        """
        if self.generate_with is not None:
            completion = self.generate_with(request)
            if inspect.isawaitable(completion):
                completion = await completion
            if not isinstance(completion, Completion):
                raise LookupError(f"the generate function answered {completion!r}, "
                                  "not a Completion")
            return completion
        if self.context is None:
            raise RuntimeError(
                "this expander has no backend: it generates through its pipeline, which "
                "opens it first (Pipeline.open, run or index), or through the generate= it "
                "was built with")
        return await self.context.generate(request)
