"""An agent's memory: recalled before each step, stored after it (``aieng_memory_*``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aieng_hookspecs.types import MemoryItem, Message, Query

from ..dispatch import expect
from ._result import AgentStep

if TYPE_CHECKING:
    from ..dispatch import Dispatcher, StagePolicy

__all__ = ["recall", "store"]

_ITEMS = expect((list, tuple), items=MemoryItem)


async def recall(dispatcher: Dispatcher, policy: StagePolicy, messages: Sequence[Message],
                 task: str, k: int) -> tuple[MemoryItem, ...]:
    """Every memory's ``k`` items about the latest user turn, best score first, the same
    text once (at its best score), at most ``k`` in all."""
    if not dispatcher.impls("aieng_memory_recall"):
        return ()
    text = next((m.content for m in reversed(messages) if m.role == "user"), task)
    found = await dispatcher.gather("aieng_memory_recall", {"query": Query(text=text), "k": k},
                                    stage="memory", policy=policy, check=_ITEMS)
    items = sorted((item for listed, _ in found for item in listed),
                   key=lambda item: -item.score)  # stable: ties keep the memories' order
    unique: dict[str, MemoryItem] = {}
    for item in items:  # the same text from two memories once, at its best score
        unique.setdefault(item.text, item)
    return tuple(unique.values())[:k]


async def store(dispatcher: Dispatcher, policy: StagePolicy, step: AgentStep, run_id: str,
                task: str, answer: str | None) -> None:
    """A step's observations as ``short`` items; the run's accepted ``answer`` (``None``:
    none yet), with its task, as one ``long`` item."""
    if not dispatcher.impls("aieng_memory_store"):
        return
    meta: dict[str, Any] = {"agent_run_id": run_id, "step": step.index}
    items = [MemoryItem(result.content, kind="short",
                        metadata={**meta, "tool": call.name, "arguments": dict(call.arguments)})
             for call, result in zip(step.action.tool_calls, step.results)
             if not result.is_error]
    if answer is not None:
        items.append(MemoryItem(f"{task}\n{answer}", kind="long",
                                metadata={**meta, "task": task, "answer": answer}))
    if items:
        await dispatcher.gather("aieng_memory_store", {"items": tuple(items)},
                                stage="memory", policy=policy)
