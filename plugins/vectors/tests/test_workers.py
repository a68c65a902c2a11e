"""Several serving workers on one ``vectors`` folder: components opened with
``read_only = true`` share it (in one process or several), a writer and a reader never
open it together, writes to a read-only index are refused before anything is embedded."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import aieng_vectors
import pytest
from _vectors_folders import DOCS, contents, index_at, written
from aieng_hookspecs.types import Document, Query
from aieng_vectors import VectorsOptions

from aieng_core import ConfigError, HookError, Kernel
from aieng_core.registry import PluginInfo
from aieng_core.testing import race_processes, read_only

Register = Callable[..., AbstractContextManager[PluginInfo]]

TESTS = Path(__file__).resolve().parent


# -- in one process -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_unwritable_folder_refuses_a_write_before_embedding(
        hashing_embedder: Any, tmp_path: Path) -> None:
    """A folder this process cannot write opens read-only; ``aieng_index`` on it embedded
    its whole batch (the model's work, for nothing) before the store refused it."""
    folder = await written(hashing_embedder, tmp_path / "idx")
    with read_only(folder) as view:
        index = index_at(hashing_embedder, view)
        assert len(index) == 3
        hashing_embedder.calls.clear()
        with pytest.raises(OSError, match="read-only"):
            await index.aieng_index([Document("new", "never embedded")])
        assert hashing_embedder.calls == []
        await index.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("closed", [True, False], ids=["snapshot", "journal"])
async def test_read_only_option_serves_searches_refuses_writes_writes_nothing(
        hashing_embedder: Any, tmp_path: Path, closed: bool) -> None:
    """``read_only = true`` on a writable folder: searches, ``get`` and ``len`` work (a
    journal is applied in memory, not folded into a snapshot), every write is refused
    before anything is embedded, with an ``OSError`` naming the folder and the option,
    and closing leaves every file as it was."""
    folder = await written(hashing_embedder, tmp_path / "idx", closed=closed)
    before = contents(folder)
    index = index_at(hashing_embedder, folder, read_only=True)
    assert len(index) == 3 and await index.get("two") == DOCS[1]
    hits = await index.aieng_retrieve(Query("third batch"), 1)
    assert [hit.document.id for hit in hits] == ["three"]
    hashing_embedder.calls.clear()
    writes = [lambda: index.aieng_index([Document("new", "text")]),
              lambda: index.aieng_delete(["one"]), lambda: index.upsert([]),
              lambda: index.delete(["two"])]
    for write in writes:
        with pytest.raises(OSError, match=r"opened read-only \(its read_only option\)") as caught:
            await write()
        assert caught.value.filename == str(folder)
    assert hashing_embedder.calls == []
    await index.flush()  # finishes nothing on disk
    assert len(index) == 3
    await index.aclose()
    assert contents(folder) == before


@pytest.mark.anyio
async def test_read_only_components_share_a_folder_and_exclude_a_writer(
        hashing_embedder: Any, tmp_path: Path) -> None:
    """Any number of read-only components open one folder at once; a writer is refused
    while one of them holds it (saying that read-only ones do, and what to do), and a
    read-only one while a writer holds it (likewise); each works once the other closed."""
    folder = await written(hashing_embedder, tmp_path / "idx")
    readers = [index_at(hashing_embedder, folder, read_only=True) for _ in range(3)]
    assert [len(reader) for reader in readers] == [3, 3, 3]
    writer = index_at(hashing_embedder, folder)
    with pytest.raises(RuntimeError, match=r"open read-only in another component or process.*"
                       r"stop the read-only ones") as caught:
        await writer.get("one")
    assert str(folder) in str(caught.value)
    for reader in readers:
        await reader.aclose()
    await writer.aieng_index([Document("four", "fourth batch")])
    late = index_at(hashing_embedder, folder, read_only=True)
    with pytest.raises(RuntimeError, match=r"open for writing in another component or process"
                       r".*open again") as caught:
        len(late)
    assert str(folder) in str(caught.value)
    await writer.aclose()
    assert len(late) == 4
    await late.aclose()


@pytest.mark.anyio
async def test_a_reader_keeps_what_it_opened_and_a_reopen_sees_a_newer_generation(
        hashing_embedder: Any, tmp_path: Path) -> None:
    """A read-only component reads the folder once, when it opens: a reopen (a new
    component, a restarted worker) sees what a writer added since, in a newer snapshot."""
    folder = await written(hashing_embedder, tmp_path / "idx")
    first = index_at(hashing_embedder, folder, read_only=True)
    assert len(first) == 3
    await first.aclose()
    generation = json.loads((folder / "index.json").read_text())["generation"]
    writer = index_at(hashing_embedder, folder)
    await writer.aieng_index([Document("four", "fourth batch")])
    await writer.aieng_delete(["one"])
    await writer.aclose()
    assert json.loads((folder / "index.json").read_text())["generation"] > generation
    assert len(first) == 3  # a closed component: what it held when it closed
    again = index_at(hashing_embedder, folder, read_only=True)
    assert len(again) == 3 and "one" not in again and "four" in again
    hits = await again.aieng_retrieve(Query("fourth batch"), 1)
    assert [hit.document.id for hit in hits] == ["four"]
    await again.aclose()


@pytest.mark.anyio
async def test_a_folder_copied_without_its_lock_still_keeps_a_writer_out(
        hashing_embedder: Any, tmp_path: Path) -> None:
    """A writable folder holding an index but no ``LOCK`` (copied without it): a
    read-only component makes an empty one and holds it, so a writer is refused."""
    folder = await written(hashing_embedder, tmp_path / "idx")
    (folder / "LOCK").unlink()
    reader = index_at(hashing_embedder, folder, read_only=True)
    assert len(reader) == 3 and (folder / "LOCK").read_bytes() == b""
    writer = index_at(hashing_embedder, folder)
    with pytest.raises(RuntimeError, match="open read-only in another"):
        len(writer)
    await reader.aclose()
    assert len(writer) == 3
    await writer.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("state", ["missing", "empty", "a file"])
async def test_read_only_without_an_index_is_an_error_and_creates_nothing(
        hashing_embedder: Any, tmp_path: Path, state: str) -> None:
    """A read-only component on a path that holds no index (a wrong path, workers started
    before the index was built) fails naming the folder, and creates nothing there: it
    served an empty index before (an unwritable one failed with a raw OSError)."""
    path = tmp_path / "idx"
    if state == "empty":
        path.mkdir()
    elif state == "a file":
        path.write_text("not a folder")
    index = index_at(hashing_embedder, path, read_only=True)
    error = ValueError if state == "a file" else FileNotFoundError
    with pytest.raises(error, match=re.escape(str(path))):
        await index.aieng_retrieve(Query("first"), 1)
    await index.aclose()
    assert path.exists() == (state != "missing")
    assert not path.is_dir() or list(path.iterdir()) == []


# -- the option, from Python and from TOML ------------------------------------------------


def test_read_only_must_be_a_bool_and_needs_a_path() -> None:
    """``read_only`` is ``True`` or ``False`` (a string such as ``"false"`` would read as
    true), and an index in memory cannot be read-only (it would always be empty)."""
    assert VectorsOptions().read_only is False
    for wrong in ("false", "yes", 1, 0, None):
        with pytest.raises(TypeError, match=r"read_only must be true or false"):
            VectorsOptions(path="idx", read_only=wrong)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="read_only = true needs a path"):
        VectorsOptions(read_only=True)


def pipeline_config(path: Path, **dense: Any) -> dict[str, Any]:
    return {
        "pipeline": {"name": "worker", "stages": ["retrieve"]},
        "stage": {"retrieve": {"k": 2}},
        "components": {"dense": {"use": "vectors", "path": str(path), **dense},
                       "embedder": {"use": "hash-embed"}},
    }


@pytest.mark.anyio
async def test_read_only_in_a_pipeline_file(
        aieng_kernel: Kernel, register_plugin: Register, hash_embed_plugin: Any,
        tmp_path: Path) -> None:
    """``read_only = true`` in a pipeline's TOML: the pipeline searches the folder an
    indexing pipeline built, and its ``index`` is refused; a value that is no boolean is
    a configuration error naming the component and the option."""
    folder = tmp_path / "vectors"
    with register_plugin(aieng_vectors, "vectors"), \
            register_plugin(hash_embed_plugin, "hash-embed"):
        builder = aieng_kernel.pipeline(pipeline_config(folder))
        toml = tmp_path / "worker.toml"
        toml.write_text(f'[pipeline]\nname = "worker"\nstages = ["retrieve"]\n\n'
                        f'[components.dense]\nuse = "vectors"\npath = {json.dumps(str(folder))}'
                        '\nread_only = true\n\n[components.embedder]\nuse = "hash-embed"\n',
                        encoding="utf-8")
        worker = aieng_kernel.load_pipeline(toml)
        for wrong in ("true", 1):
            with pytest.raises(ConfigError, match=r"components\.dense\.read_only: expected "
                               r"bool"):
                aieng_kernel.pipeline(pipeline_config(folder, read_only=wrong))
        in_memory = pipeline_config(folder, read_only=True)
        in_memory["components"]["dense"]["path"] = ""
        with pytest.raises(ConfigError, match=r"components\.dense.*needs a path"):
            aieng_kernel.pipeline(in_memory)
    async with builder:
        assert await builder.index(DOCS) == 3
    async with worker:
        result = await worker.run("second batch")
        assert [hit.document.id for hit in result.retrieved][:1] == ["two"]
        with pytest.raises(HookError, match="aieng_index.*OSError.*read_only option") as caught:
            await worker.index([Document("four", "fourth batch")])
        assert str(folder) in str(caught.value)


# -- in several processes (serving workers) -----------------------------------------------

#: Open the index at argv[3] read-only (argv[4] "1") or for writing, embedding as the
#: tests' HashingEmbedder does (copied: importing conftest would import pytest, slowly);
#: ``here`` and the argv layout are race_processes's.
_OPEN = """
import hashlib, re
import anyio
from aieng_hookspecs.types import Query
from aieng_vectors import VectorIndex, VectorsOptions

def embed(texts, model):
    vectors = []
    for text in texts:
        values = [0.0] * 64
        for word in re.findall(r"\\w+", text.lower()):
            code = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(),
                                  "little")
            values[code % 64] += 1.0 if (code >> 40) & 1 else -1.0
        vectors.append(values)
    return vectors

index = VectorIndex(VectorsOptions(path=sys.argv[3], read_only=sys.argv[4] == "1"),
                    embedder=embed)
"""

_SEARCH_TOGETHER = _OPEN + """
async def main():
    hits = await index.aieng_retrieve(Query("second batch"), 1)
    (here / f"open-{sys.argv[2]}").touch()
    deadline = time.monotonic() + 60
    while len(list(here.glob("open-*"))) < 2:  # both hold the folder at once
        assert time.monotonic() < deadline, "the other reader never opened"
        time.sleep(0.005)
    print(json.dumps([len(index), [hit.document.id for hit in hits]]))
    await index.aclose()
anyio.run(main)
"""

_HOLD = _OPEN + """
async def main():
    assert len(index) >= 3
    (here / "held").touch()
    deadline = time.monotonic() + 60
    while not (here / "release").exists():
        assert time.monotonic() < deadline, "never released"
        time.sleep(0.005)
    await index.aclose()
anyio.run(main)
"""


def _environment() -> dict[str, str]:
    """This one, with the plugin's folder (this checkout) first on the path."""
    path = os.pathsep.join(p for p in (str(TESTS.parent),
                                       os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


@contextmanager
def held_by_another_process(here: Path, folder: Path, *, read_only: bool) -> Iterator[None]:
    """``folder`` opened (read-only or for writing) by another process for the block."""
    here.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import json, sys, time\nfrom pathlib import Path\n"
         "here = Path(sys.argv[1])\n" + _HOLD, str(here), "0", str(folder),
         "1" if read_only else "0"],
        stderr=subprocess.PIPE, text=True, env=_environment())
    try:
        deadline = time.monotonic() + 60
        while not (here / "held").exists():
            assert holder.poll() is None, holder.communicate()[1]
            assert time.monotonic() < deadline, "the other process never opened the folder"
            time.sleep(0.01)
        yield
        (here / "release").touch()
        _, err = holder.communicate(timeout=60)
        assert holder.returncode == 0, err
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()


@pytest.mark.anyio
async def test_two_read_only_processes_search_one_folder_at_once(
        hashing_embedder: Any, tmp_path: Path) -> None:
    """Two processes (serving workers) open one folder read-only and search it, both
    holding it at the same time; the folder is left as it was."""
    folder = await written(hashing_embedder, tmp_path / "idx", closed=False)
    before = contents(folder)
    here = tmp_path / "race"
    here.mkdir()
    outs = race_processes(_SEARCH_TOGETHER, here, str(folder), "1", env=_environment())
    assert [json.loads(out) for out in outs] == [[3, ["two"]], [3, ["two"]]]
    assert contents(folder) == before


@pytest.mark.anyio
async def test_a_writer_and_a_reader_exclude_each_other_across_processes(
        hashing_embedder: Any, tmp_path: Path) -> None:
    """A writer is refused while another process holds the folder read-only, and a
    read-only component while another process writes it, each saying which kind holds
    it; once the other process closed, it opens."""
    folder = await written(hashing_embedder, tmp_path / "idx")
    at = re.escape(str(folder))
    writer = index_at(hashing_embedder, folder)
    with held_by_another_process(tmp_path / "reader", folder, read_only=True), \
            pytest.raises(RuntimeError, match=f"at {at} is open read-only in another"):
        await writer.aieng_index([Document("four", "fourth batch")])
    await writer.aieng_index([Document("four", "fourth batch")])
    await writer.aclose()
    reader = index_at(hashing_embedder, folder, read_only=True)
    with held_by_another_process(tmp_path / "writer", folder, read_only=False), \
            pytest.raises(RuntimeError, match=f"at {at} is open for writing in another"):
        len(reader)
    assert len(reader) == 4
    await reader.aclose()
