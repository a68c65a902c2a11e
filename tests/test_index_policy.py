"""Writes under ``on_error = "fallback"``: an index or delete call that every index failed
is an error, not a count of 0 (``aieng index`` exiting 0 having written nothing)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from aieng_core import HookError, Kernel
from aieng_core.cli import _commands, _rag, cli  # noqa: F401  (register the commands)
from aieng_core.testing import kernel_with
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Document, Hit, Query

pytestmark = pytest.mark.anyio

DOCS = [Document(id="a", text="alpha"), Document(id="b", text="beta")]


class Full:
    """An index whose every write fails (a full disk)."""

    @hookimpl
    def aieng_index(self, documents: Sequence[Document]) -> int:
        raise OSError("No space left on device")

    @hookimpl
    def aieng_delete(self, ids: Sequence[str]) -> int:
        raise OSError("No space left on device")

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        return []


class Keeps(Full):
    """An index that writes."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    @hookimpl
    def aieng_index(self, documents: Sequence[Document]) -> int:
        self.ids.update(d.id for d in documents)
        return len(documents)

    @hookimpl
    def aieng_delete(self, ids: Sequence[str]) -> int:
        gone = self.ids.intersection(ids)
        self.ids -= gone
        return len(gone)


@pytest.mark.parametrize("indexes", [1, 2])
async def test_a_write_no_index_took_fails_under_fallback(aieng_kernel: Kernel,
                                                          indexes: int) -> None:
    """Every index failed: index and delete raise the failure (naming hook and
    component) instead of reporting 0 written."""
    components = {f"full{n}": Full() for n in range(indexes)}
    pipeline = aieng_kernel.compose(components, stages=["retrieve"], on_error="fallback")
    with pytest.raises(HookError, match="No space left") as caught:
        await pipeline.index(DOCS)
    assert caught.value.hook == "aieng_index" and caught.value.plugin.startswith("full")
    with pytest.raises(HookError, match="No space left") as caught:
        await pipeline.delete(["a"])
    assert caught.value.hook == "aieng_delete"


async def test_one_index_that_took_the_write_is_enough_under_fallback(
        aieng_kernel: Kernel) -> None:
    """Fallback still drops a failed index's result when another index wrote."""
    pipeline = aieng_kernel.compose({"full": Full(), "keeps": Keeps()}, stages=["retrieve"],
                                    on_error="fallback")
    assert await pipeline.index(DOCS) == 2
    assert await pipeline.delete(["a", "b"]) == 2


def test_aieng_index_into_indexes_that_all_failed_exits_1(tmp_path: Path) -> None:
    """`aieng index` said "the indexes reported 0 written" and exited 0."""
    kernel = kernel_with({"full": Full})
    (tmp_path / "a.txt").write_text("alpha")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "p"\non_error = "fallback"\n'
                        '[components.docs]\nuse = "full"\n')
    result = CliRunner().invoke(cli, ["index", str(pipeline), str(tmp_path / "a.txt")],
                                obj={"kernel": kernel})
    assert result.exit_code == 1, result.output
    assert "aieng_index" in result.stderr and "No space left" in result.stderr
    assert "written" not in result.stderr


async def test_a_cancelled_index_stops_at_the_next_batch(aieng_kernel: Kernel) -> None:
    """Cancelling Pipeline.index stops it before the next batch, even when no index impl
    ever awaits (the built-in memory index): the cancellation used to wait until every
    batch was written."""
    import anyio

    class CancelsOnce(Keeps):
        scope: anyio.CancelScope | None = None

        @hookimpl
        def aieng_index(self, documents: Sequence[Document]) -> int:
            assert self.scope is not None
            self.scope.cancel()  # cancelled while the first batch is written
            return super().aieng_index(documents)

    index = CancelsOnce()
    pipeline = aieng_kernel.compose({"index": index}, stages=["retrieve"])
    await pipeline.open()
    with anyio.CancelScope() as index.scope:
        await pipeline.index(DOCS, batch_size=1)
    assert index.scope.cancelled_caught and index.ids == {"a"}
