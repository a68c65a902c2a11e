"""The kernel's exception types: one family, each naming where a failure came from; and
how concurrent impls' failures surface as one of them."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import anyio

__all__ = [
    "AiengError",
    "ConfigError",
    "DuplicateComponentError",
    "HookError",
    "PluginLoadError",
    "UnknownComponentError",
    "concurrently",
    "first_hook_error",
    "reduce_error",
]


def _rebuilt(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]
             ) -> BaseException:
    """An error as :func:`reduce_error` pickled it: its ``args`` and attributes set back,
    its ``__init__`` not called (it may take keyword-only arguments)."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


def _portable(value: Any) -> Any:
    """An attribute as it can cross to another process: an exception that does not pickle
    (a plugin's, holding a connection or taking keyword-only arguments) as a
    ``RuntimeError`` with its type's name and its text."""
    if not isinstance(value, BaseException):
        return value
    try:
        pickle.loads(pickle.dumps(value))
    except Exception:  # noqa: BLE001 - whatever pickling raises, the text still travels
        return RuntimeError(f"{type(value).__qualname__}: {value}")
    return value


def reduce_error(error: BaseException) -> tuple[Any, ...]:
    """``__reduce__`` of an error whose ``__init__`` does not take its ``args`` back: the
    default pickling calls ``cls(*args)``, which fails for keyword-only parameters
    (``HookError``) or rebuilds a different text (``ConfigError``). A host sends errors
    to and from worker processes (``multiprocessing``, ``concurrent.futures``)."""
    state = {key: _portable(value) for key, value in vars(error).items()}
    return _rebuilt, (type(error), error.args, state)


class AiengError(Exception):
    """Base of every error the kernel raises; every one pickles, attributes included."""

    def __reduce__(self) -> tuple[Any, ...]:
        return reduce_error(self)


class HookError(AiengError):
    """A hook impl failed (raised, timed out, or returned a value of the wrong type).

    :param hook: the hook's name (``aieng_retrieve``).
    :param plugin: the component or plugin whose impl failed.
    :param distribution: the installed distribution that provides it, with its version.
    :param stage: the pipeline stage that called it (empty outside a stage).
    :param cause: the original exception (also chained as ``__cause__``).
    :param hint: what the user can do about it.
    :param final: whether the stage's ``skip`` policy may not pass over it: set on a stream
        that failed after the caller saw some of its text (which cannot be taken back).
    """

    def __init__(
        self,
        *,
        hook: str,
        plugin: str,
        distribution: str = "",
        stage: str = "",
        cause: BaseException | None = None,
        hint: str = "",
        message: str = "",
        final: bool = False,
    ) -> None:
        self.hook = hook
        self.final = final
        self.plugin = plugin
        self.distribution = distribution
        self.stage = stage
        self.cause = cause
        self.hint = hint
        where = f"stage {stage!r}, " if stage else ""
        dist = f" ({distribution})" if distribution else ""
        what = message or (f"{type(cause).__name__}: {cause}" if cause else "failed")
        text = f"{where}hook {hook} of {plugin!r}{dist}: {what}"
        if hint:
            text += f"\n  hint: {hint}"
        super().__init__(text)


class ConfigError(AiengError):
    """A pipeline file or dict is invalid.

    :param source: the file (or ``<dict>``) being loaded.
    :param key: the dotted key path of the bad value (``components.search.k``).
    :param problem: what is wrong.
    :param expected: what was expected (a type or a description).
    :param choices: the valid choices, when there is a closed set.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str = "<dict>",
        key: str = "",
        expected: str = "",
        choices: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        self.expected = expected
        self.choices = tuple(choices)
        text = f"{source}: {key}: {problem}" if key else f"{source}: {problem}"
        if expected:
            text += f"; expected {expected}"
        if self.choices:
            text += f"; valid choices: {', '.join(self.choices)}"
        super().__init__(text)


class PluginLoadError(AiengError):
    """A plugin failed to import or register; the kernel disables it and goes on."""


class DuplicateComponentError(PluginLoadError):
    """Two plugins registered the same component name."""


class UnknownComponentError(AiengError, KeyError):
    """No loaded plugin offers a component of that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


async def concurrently(calls: Iterable[Callable[[], Coroutine[Any, Any, object]]]) -> None:
    """Run ``calls`` at once in a task group: the first :class:`HookError` among their
    failures is raised as itself, not as an exception group (others: the group)."""
    try:
        async with anyio.create_task_group() as tg:
            for call in calls:
                tg.start_soon(call)
    except BaseExceptionGroup as group:
        failure = first_hook_error(group)
        if failure is None:
            raise
        raise failure from None


def first_hook_error(group: BaseExceptionGroup[Any]) -> HookError | None:
    """The first :class:`HookError` inside a task group's exception group, if any: the
    concurrent impls of one hook fail as one HookError, not as a group."""
    errors = group.subgroup(HookError)
    if errors is None:
        return None
    first: BaseException = errors
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first if isinstance(first, HookError) else None
