"""Running an impl's coroutine step by step: the dispatcher's deadline and the watchdog's
view of which impl holds the loop (a coroutine waiting in an ``await`` holds nothing)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any

__all__ = ["DeadlinePassed", "Resumed", "Steps"]


class DeadlinePassed(Exception):
    """The kernel's own deadline for an impl call passed (an impl's TimeoutError is not)."""


class Steps:
    """Marks a suspended impl's coroutine in flight (the watchdog's ``active``) only while
    one of its steps runs, and records each step in ``recent``."""

    __slots__ = ("_active", "_label", "_recent", "_token")

    def __init__(self, active: dict[int, tuple[str, float]],
                 recent: deque[tuple[str, float, float]], token: int, label: str) -> None:
        self._active = active
        self._recent = recent
        self._token = token
        self._label = label

    def begin(self) -> float:
        began = time.perf_counter()
        self._active[self._token] = (self._label, began)
        return began

    def end(self, began: float) -> None:
        del self._active[self._token]
        self._recent.append((self._label, began, time.perf_counter()))


class Resumed:
    """Awaits the rest of a coroutine whose first step already ran (PEP 380's expansion
    of ``yield from``, starting from the value that first step yielded)."""

    __slots__ = ("_coro", "_steps", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any,
                 steps: Steps | None = None) -> None:
        self._coro = coro
        self._yielded = yielded
        self._steps = steps

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded, steps = self._coro, self._yielded, self._steps
        while True:
            step: Callable[[Any], Any]
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and the like go into the coroutine
                step, arg = coro.throw, exc
            else:
                step, arg = coro.send, sent
            began = steps.begin() if steps is not None else 0.0
            try:
                yielded = step(arg)
            except StopIteration as done:
                return done.value
            finally:
                if steps is not None:
                    steps.end(began)
