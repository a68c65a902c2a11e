"""Ctrl-C while `aieng index` reads its files stops it there, with status 130."""

from __future__ import annotations

import signal
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from aieng_core import Kernel
from aieng_core.cli import _commands, _rag, cli  # noqa: F401  (register the commands)

PIPELINE = '[pipeline]\nname = "t"\n[components.docs]\nuse = "memory"\n'


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """SIGINT as at a terminal (a background job's tests inherit it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_raises")
def test_ctrl_c_while_reading_files_stops_the_reading(tmp_path: Path) -> None:
    """The files were read inside the event loop, where asyncio's runner turns Ctrl-C into
    a cancellation seen at the next await: a huge corpus (seconds to parse) was read to
    its end, and every later file too, before the command stopped. They are read before
    the loop starts now, so Ctrl-C stops the reading where it is."""
    from aieng_hookspecs import ReaderRegistry, hookimpl
    from aieng_hookspecs.types import Document

    read: list[str] = []

    def read_interrupting(path: Path) -> list[Document]:
        read.append(path.name)
        if path.name == "b.stop":
            signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C while it reads
            read.append("b.stop read on")
        return [Document(id=str(path), text="text")]

    plugin = types.ModuleType("stop_reader")

    @hookimpl
    def aieng_register_readers(registry: ReaderRegistry) -> None:
        registry.add(".stop", read_interrupting)

    plugin.aieng_register_readers = aieng_register_readers  # type: ignore[attr-defined]
    kernel = Kernel(env={"AIENG_PLUGINS": "builtin"}, loop_block_threshold=None).load()
    kernel.registry.register(plugin, name="stop_reader")
    for name in ("a.stop", "b.stop", "c.stop"):
        (tmp_path / name).write_text("text")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(PIPELINE)
    result = CliRunner().invoke(cli, ["index", str(pipeline), str(tmp_path)],
                                obj={"kernel": kernel})
    assert result.exit_code == 130, result.output
    assert "Aborted!" in result.stderr
    assert read == ["a.stop", "b.stop"]


@pytest.mark.usefixtures("sigint_raises")
def test_ctrl_c_while_writing_says_how_far_the_index_got(tmp_path: Path) -> None:
    """Ctrl-C while the batches are written stops before the next batch (an index whose
    impls never await wrote every batch first), with status 130 and a line saying how many
    documents the indexes took (they stay indexed) and that indexing the same paths again
    completes it; it said only "Aborted!"."""
    from aieng_hookspecs import hookimpl
    from aieng_hookspecs.types import Document

    from aieng_core.testing import kernel_with

    batches: list[int] = []

    class Interrupted:
        @hookimpl
        def aieng_index(self, documents: list[Document]) -> int:
            batches.append(len(documents))
            if len(batches) == 2:
                signal.raise_signal(signal.SIGINT)  # Ctrl-C while the second batch is written
            return len(documents)

    kernel = kernel_with({"interrupted": Interrupted})
    for n in range(5):
        (tmp_path / f"{n}.txt").write_text("text")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "t"\n[components.docs]\nuse = "interrupted"\n')
    result = CliRunner().invoke(cli, ["index", str(pipeline), str(tmp_path),
                                      "--batch-size", "2"], obj={"kernel": kernel})
    assert result.exit_code == 130, result.output
    assert batches == [2, 2]
    assert "interrupted: at least 4 of 5 documents written" in result.stderr
    assert "Aborted!" in result.stderr
