"""Running a judge's requests concurrently, failing with the first error itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio

__all__ = ["gather"]

T = TypeVar("T")


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def gather(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Await every call concurrently; their results in order.

    When calls fail, the first error is raised as itself (not wrapped in an exception
    group), so the kernel's error policy and ``pytest.raises`` see the backend's error.
    """
    results: list[T | None] = [None] * len(calls)

    async def one(index: int) -> None:
        results[index] = await calls[index]()

    try:
        async with anyio.create_task_group() as group:
            for index in range(len(calls)):
                group.start_soon(one, index)
    except BaseExceptionGroup as group:
        raise _first_leaf(group) from None
    return results  # type: ignore[return-value]
