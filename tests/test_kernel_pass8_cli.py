"""`aieng run` started without standard output or input (a cron job, a daemon, `>&-`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PIPELINE = '[pipeline]\nname = "t"\n[components.llm]\nuse = "extractive"\n'


def _closed(fd: int) -> list[str]:
    """A command line that runs the rest of it with file descriptor ``fd`` closed, as a
    shell's ``>&-`` (1) or ``<&-`` (0) starts it: Python sets that stream to ``None``."""
    return [sys.executable, "-c",
            f"import os, sys; os.close({fd}); os.execv(sys.argv[1], sys.argv[1:])"]


def _aieng(fd: int, *args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("aieng"))
    env = {**os.environ, "AIENG_PLUGINS": "builtin", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*_closed(fd), exe, *args], stderr=subprocess.PIPE,
                          stdout=subprocess.DEVNULL if fd == 0 else None, text=True, env=env,
                          timeout=120, check=False)


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(PIPELINE, encoding="utf-8")
    return path


@pytest.mark.parametrize("flags", [[], ["--stream"], ["--json"]], ids=["plain", "stream",
                                                                        "json"])
def test_a_run_without_standard_output_runs_and_succeeds(pipeline: Path,
                                                         flags: list[str]) -> None:
    """With standard output closed the run still runs (its events, its side effects) and
    exits 0, as `aieng plugins` does; it failed with "AttributeError: 'NoneType' object
    has no attribute 'isatty'" deciding whether to stream."""
    done = _aieng(1, "run", str(pipeline), "hello", *flags)
    assert done.returncode == 0, done.stderr
    assert "Error" not in done.stderr


def test_ask_without_standard_output_runs_and_succeeds(pipeline: Path) -> None:
    """`aieng ask` with standard output closed: the same "'NoneType' object has no
    attribute 'isatty'" crash as `aieng run` had."""
    done = _aieng(1, "ask", str(pipeline), "hello")
    assert done.returncode == 0, done.stderr
    assert "Error" not in done.stderr


def test_text_from_a_closed_standard_input_is_a_usage_error(pipeline: Path) -> None:
    """`aieng run PIPELINE -` with standard input closed is a usage error naming it, not an
    AttributeError on ``None``."""
    done = _aieng(0, "run", str(pipeline), "-")
    assert done.returncode == 2, done.stderr
    assert "standard input is closed" in done.stderr and "AttributeError" not in done.stderr


def test_a_streamed_piece_without_standard_output_goes_nowhere(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The presentation layer's streamed pieces are dropped when there is no standard
    output (``sys.stdout`` is ``None``), as click's ``echo`` drops what it is given."""
    from aieng_core.cli import _present

    monkeypatch.setattr(sys, "stdout", None)
    _present.stream_piece("a piece")  # no AttributeError
