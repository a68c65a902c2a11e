"""The marker pair of the project ``aieng`` and the call-mode annotation of a spec."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TypeVar

import pluggy

__all__ = ["PROJECT", "CallMode", "blocking", "hookimpl", "hookspec", "role_spec"]

PROJECT = "aieng"

#: Marks a hook specification of the project ``aieng``.
hookspec = pluggy.HookspecMarker(PROJECT)
#: Marks a hook implementation (a component method or a plugin-module function).
hookimpl = pluggy.HookimplMarker(PROJECT)

_F = TypeVar("_F", bound=Callable[..., object])


class CallMode(enum.Enum):
    """How the kernel's dispatcher calls the implementations of a hook.

    pluggy's own call loop never runs role hooks: its ``firstresult`` would take an
    un-awaited coroutine for a result. The dispatcher awaits impls in pluggy's order
    (tryfirst, then LIFO registration order, then trylast) with the declared mode.
    """

    #: Awaited one after another until one returns a value that is not ``None``.
    FIRST = "first"
    #: All run concurrently; the results that are not ``None`` are collected in impl order.
    GATHER = "gather"
    #: Run in order; each receives the previous impl's output in its chained argument.
    CHAIN = "chain"
    #: Synchronous, called once when a plugin loads (registration hooks).
    REGISTER = "register"
    #: Delivered by the event bus to each subscriber through its own bounded stream.
    NOTIFY = "notify"


def role_spec(mode: CallMode, *, role: str, chain_arg: str | None = None) -> Callable[[_F], _F]:
    """Declare a hook specification of a role with its call mode.

    :param mode: the call mode the dispatcher uses for this hook.
    :param role: the role the hook belongs to (``"backend"``, ``"retriever"``, ...).
    :param chain_arg: for :attr:`CallMode.CHAIN`, the argument that carries the previous
        impl's output to the next impl.
    """
    if (mode is CallMode.CHAIN) != (chain_arg is not None):
        raise ValueError("chain_arg is required for CHAIN hooks and only for them")

    def mark(function: _F) -> _F:
        function.aieng_call_mode = mode  # type: ignore[attr-defined]
        function.aieng_role = role  # type: ignore[attr-defined]
        function.aieng_chain_arg = chain_arg  # type: ignore[attr-defined]
        return hookspec(function)

    return mark


def blocking(function: _F) -> _F:
    """Mark a synchronous hook impl as blocking: the dispatcher runs it in a worker thread.

    A plain (non-async) impl is otherwise called inline on the event loop, which is right
    for cheap pure-Python work (fusion, templating) and wrong for I/O or model inference.

    A deadline that passes (the stage's timeout, a host's ``anyio.fail_after``) stops the
    caller waiting, but no thread can be stopped from outside: the thread runs on, holding
    its place among the kernel's ``worker_threads``, and closing the pipeline waits for it.
    An impl that works in steps (batches, tokens) calls :func:`stop_if_cancelled` (this
    package's) between them: the caller's cancellation is raised there, and the thread
    ends within one step.
    """
    function.aieng_blocking = True  # type: ignore[attr-defined]
    return function
