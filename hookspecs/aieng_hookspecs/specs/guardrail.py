"""Role ``guardrail``: check input before the model and output after it."""

from __future__ import annotations

from .._markers import CallMode, role_spec
from ..types import Completion, GuardVerdict, Request

__all__ = ["aieng_guard_input", "aieng_guard_output"]


@role_spec(CallMode.CHAIN, role="guardrail", chain_arg="request")
def aieng_guard_input(request: Request) -> GuardVerdict | None:
    """Check a request before anything else sees it.

    :called: by the ``guard_input`` stage, first in a run.
    :mode: chain: guards run in order; after a ``redact`` the next guard receives the request
        whose last user message is the verdict's text (or whose messages are the verdict's
        ``messages``, when it redacted more of the conversation: tool results, earlier
        turns); a ``block`` stops the run.
    :none: "allow unchanged".
    :async: may be ``async def``.
    :param request: the request as the user sent it (or as the previous guard left it).
    :returns: a verdict whose ``text`` is the last user message after the guard.

    .. versionadded:: 0.1.0
    """


@role_spec(CallMode.CHAIN, role="guardrail", chain_arg="completion")
def aieng_guard_output(request: Request, completion: Completion) -> GuardVerdict | None:
    """Check a completion before it is returned.

    :called: by the ``guard_output`` stage, after generation.
    :mode: chain: guards run in order; after a ``redact`` the next guard receives the
        completion with the verdict's text (and the verdict's ``tool_calls``, when it
        changed the calls' arguments); a ``block`` replaces the answer and stops the run.
    :none: "allow unchanged".
    :async: may be ``async def``.
    :param request: the request that was sent to the model.
    :param completion: the completion (or as the previous guard left it).
    :returns: a verdict whose ``text`` is the completion text after the guard.

    .. versionadded:: 0.1.0
    """
