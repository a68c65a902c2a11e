"""A whole hybrid pipeline from a config: bm25 + vectors fused by each fuser, reranked by
MMR, rendered by the context builder; indexed, deleted, re-indexed, reopened from disk in
a new kernel, run concurrently, cancelled and closed mid-run. Skipped where a sibling
plugin is not installed."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aieng_fusion
import anyio
import pytest
from aieng_hookspecs import ComponentRegistry, hookimpl
from aieng_hookspecs.types import Document

from aieng_core import Kernel
from aieng_core.testing import isolated_kernel

aieng_bm25 = pytest.importorskip("aieng_bm25")
aieng_vectors = pytest.importorskip("aieng_vectors")
aieng_rerankers = pytest.importorskip("aieng_rerankers")
aieng_context = pytest.importorskip("aieng_context")

pytestmark = pytest.mark.anyio

_WORD = re.compile(r"\w+")
_TOPICS = ["boundary layer flow", "supersonic shock wave", "heat transfer plate",
           "wing lift drag", "turbulent jet mixing", "buckling of cylinders"]
CORPUS = [Document(f"d{i:02d}", f"{_TOPICS[i % 6]} {_TOPICS[(i * 5) % 6]} case {i}",
                   title=_TOPICS[i % 6].split()[0], metadata={"group": i % 3})
          for i in range(36)]
QUERIES = ["boundary layer", "shock wave on a wing", "heat transfer in a turbulent jet",
           "buckling", "lift and drag of cylinders", "case 7", "nothing matches zzz"]


class HashingEmbedder:
    """A bag-of-words embedder: each lower-cased word adds ±1 to one hashed dimension."""

    @hookimpl
    def aieng_embed(self, texts: Sequence[str], model: str | None) -> list[list[float]]:
        vectors = []
        for text in texts:
            values = [0.0] * 32
            for word in _WORD.findall(text.lower()):
                code = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(),
                                      "little")
                values[code % 32] += 1.0 if (code >> 40) & 1 else -1.0
            vectors.append(values)
        return vectors


class HashEmbedPlugin:
    """Offers the ``hash-embed`` component."""

    @hookimpl
    def aieng_register_components(self, registry: ComponentRegistry) -> None:
        registry.add("hash-embed", HashingEmbedder)


def config(folder: Path, fuser: str, *, flip: bool = False) -> dict[str, Any]:
    components: dict[str, Any] = {
        "lexical": {"use": "bm25", "path": str(folder / "bm25"), "scorer": "impacts"},
        "dense": {"use": "vectors", "path": str(folder / "vectors")},
        "embedder": {"use": "hash-embed"},
        "fuse": {"use": fuser},
        "diverse": {"use": "mmr", "relevance": "score", "lambda_": 0.7},
        "context": {"use": "context", "max_context_tokens": 120},
    }
    if flip:  # the retrievers listed the other way round: the runs come in another order
        components = dict(reversed(list(components.items())))
    return {"pipeline": {"name": "hybrid", "stages": ["retrieve", "rerank", "context"]},
            "stage": {"retrieve": {"k": 10}, "rerank": {"k": 4}}, "components": components}


def register_all(kernel: Kernel) -> None:
    for module in (aieng_bm25, aieng_vectors, aieng_fusion, aieng_rerankers, aieng_context):
        kernel.registry.register(module, name=module.__name__)
    kernel.registry.register(HashEmbedPlugin(), name="hash-embed")


Outcome = tuple[tuple[str, ...], tuple[str, ...], dict[str, tuple[str, ...]], tuple[str, ...]]


async def outcome(pipeline: Any, text: str) -> Outcome:
    """What a run shows: fused ids, reranked ids, each run's ids, the cited ids."""
    result = await pipeline.run(text)
    assert result.status == "ok", result.stages
    cited = tuple(p["id"] for p in result.request.metadata["context"])
    return (tuple(h.document.id for h in result.retrieved),
            tuple(h.document.id for h in result.hits),
            {name: tuple(h.document.id for h in run) for name, run in result.runs.items()},
            cited)


def all_ids(found: Outcome) -> set[str]:
    return {*found[0], *found[1], *(i for run in found[2].values() for i in run), *found[3]}


@pytest.mark.parametrize("fuser", ["convex", "dbsf"])
async def test_deleted_ids_never_return_and_a_reopen_ranks_the_same(
    tmp_path: Path, fuser: str
) -> None:
    """Index, delete a third, re-index part of it: no retriever, fuser, reranker or
    context passage shows a deleted id, and the same pipeline reopened from its folders in
    a new kernel (its components listed in the other order) gives the same outcome for
    every query."""
    deleted = [doc.id for doc in CORPUS[::3]]
    back = CORPUS[3:12]
    gone = set(deleted) - {doc.id for doc in back}
    async with isolated_kernel() as kernel:
        register_all(kernel)
        async with kernel.pipeline(config(tmp_path, fuser)) as pipeline:
            assert await pipeline.index(CORPUS) == len(CORPUS)
            assert await pipeline.delete(deleted) == len(deleted)
            await pipeline.index(back)
            before = [await outcome(pipeline, text) for text in QUERIES]
    async with isolated_kernel() as kernel:
        register_all(kernel)
        async with kernel.pipeline(config(tmp_path, fuser, flip=True)) as pipeline:
            after = [await outcome(pipeline, text) for text in QUERIES]
    assert any(found[0] for found in before)
    for found in before + after:
        assert not all_ids(found) & gone
    assert [f[:2] + f[3:] for f in before] == [f[:2] + f[3:] for f in after]
    assert [f[2] for f in before] == [f[2] for f in after]


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_concurrent_cancelled_and_closed_runs(tmp_path: Path) -> None:
    """Many runs at once on one pipeline give what the same runs give one at a time;
    runs cancelled at any point leave it answering as before; closing it while runs are
    in flight waits for them, and a run after the close is refused."""
    async with isolated_kernel() as kernel:
        register_all(kernel)
        pipeline = kernel.pipeline(config(tmp_path, "convex"))
        await pipeline.index(CORPUS)
        alone = [await outcome(pipeline, text) for text in QUERIES]
        together: list[Outcome | None] = [None] * (3 * len(QUERIES))

        async def one(index: int) -> None:
            together[index] = await outcome(pipeline, QUERIES[index % len(QUERIES)])

        async with anyio.create_task_group() as group:
            for index in range(len(together)):
                group.start_soon(one, index)
        assert together == alone * 3
        for checkpoints in (0, 1, 3, 10, 30):
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as group:
                    for index in range(len(QUERIES)):
                        group.start_soon(one, index)
                    for _ in range(checkpoints):
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()
        assert [await outcome(pipeline, text) for text in QUERIES] == alone
        finished: list[Outcome] = []

        async def keep(index: int) -> None:
            finished.append(await outcome(pipeline, QUERIES[index]))

        async with anyio.create_task_group() as group:
            for index in range(len(QUERIES)):
                group.start_soon(keep, index)
            # Every run started (and waiting, or done) before the close: trio, unlike
            # asyncio, may resume this task before the tasks just started after one
            # checkpoint, and a run that has not begun when the pipeline closes is refused.
            await anyio.wait_all_tasks_blocked()
            await pipeline.aclose()
        assert sorted(finished) == sorted(alone)
        with pytest.raises(RuntimeError, match="closed"):
            await pipeline.run("boundary layer")
