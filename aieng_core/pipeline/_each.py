"""Calling a hook of each component concurrently, knowing which calls succeeded."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio

from .._errors import HookError
from ..dispatch import Dispatcher, StagePolicy, first_hook_error

__all__ = ["call_each"]


async def call_each(
    dispatcher: Dispatcher,
    hook: str,
    kwargs: Callable[[str], Mapping[str, Any]],
    names: Iterable[str],
    *,
    stage: str,
    policy: StagePolicy,
    done: set[str],
) -> list[HookError]:
    """Call ``hook`` of each named component concurrently (as ``Dispatcher.gather`` does)
    with ``kwargs(name)``, adding the name of each whose call succeeded to ``done``.

    :returns: the failures under ``fallback``, whose components are left out of ``done``.
    :raises HookError: the first failure under ``fail`` / ``skip`` (the calls still running
        are cancelled; those that finished are in ``done``).
    """
    failures: list[HookError] = []

    async def one(name: str) -> None:
        try:
            await dispatcher.first(hook, kwargs(name), stage=stage, policy=policy,
                                   only=[name])
        except HookError as exc:
            if policy.on_error != "fallback":
                raise
            failures.append(exc)
            return
        done.add(name)

    try:
        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(one, name)
    except BaseExceptionGroup as group:
        failure = first_hook_error(group)
        if failure is None:
            raise
        raise failure from None
    return failures
