"""``aieng_hookspecs.scratch_path`` and ``remove_abandoned``: the scratch names aieng-onnx,
aieng-tensorrt and aieng-transformers write under before renaming into place, and the
removal of those that killed processes left behind (tested here: the contract package
has no test folder of its own)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _scratch import OLD, leave
from aieng_hookspecs import remove_abandoned, scratch_path


@pytest.fixture(scope="module")
def gone() -> int:
    """The id of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_scratch_names_are_fresh_hidden_and_carry_the_pid(tmp_path: Path) -> None:
    """``.<prefix>-<pid>-<12 hex><suffix>`` in the folder, another each call, nothing
    created; a prefix may hold dashes and dots (a model folder's name)."""
    first = scratch_path(tmp_path, "tiny.Q4-0bcb088b", ".tmp")
    assert first.parent == tmp_path
    assert re.fullmatch(rf"\.tiny\.Q4-0bcb088b-{os.getpid()}-[0-9a-f]{{12}}\.tmp", first.name)
    assert scratch_path(tmp_path, "tiny.Q4-0bcb088b", ".tmp") != first
    assert not first.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("prefix", "suffix"), [("", ""), ("a/b", ""), ("export", "/x")])
def test_names_that_are_no_names_are_refused(tmp_path: Path, prefix: str,
                                             suffix: str) -> None:
    """An empty prefix, or a path separator in the prefix or suffix, is an error (it
    would write, or remove, outside the folder's own scratch names)."""
    with pytest.raises(ValueError, match="prefix"):
        scratch_path(tmp_path, prefix, suffix)
    with pytest.raises(ValueError, match="prefix"):
        remove_abandoned(tmp_path, prefix, suffix)


def test_only_dead_and_stale_scratch_of_the_name_is_removed(tmp_path: Path,
                                                             gone: int) -> None:
    """Files and folders of a process that is gone, unchanged for the delay, are removed
    and returned; a live process's, a fresh one (a writer in another PID namespace looks
    dead from here), a folder with a file changed recently, and names of another prefix,
    suffix or shape are left alone."""
    dead_file = leave(tmp_path / f".int8-{gone}-0123456789ab.onnx")
    dead_folder = leave(tmp_path / f".int8-{gone}-0123456789ac.onnx", folder=True)
    kept = [
        leave(tmp_path / f".int8-{gone}-0123456789ad.onnx", age=None),
        leave(tmp_path / f".int8-{os.getpid()}-0123456789ae.onnx"),
        leave(tmp_path / f".int8-{gone}-0123456789af"),  # no suffix
        leave(tmp_path / f".int8-{gone}-0123456789a0.onnx.bak"),
        leave(tmp_path / f".int8-x-{gone}-0123456789a1.onnx"),  # prefix int8-x
        leave(tmp_path / f".q4-{gone}-0123456789a2.onnx"),
        leave(tmp_path / f".int8-{gone}-0123456789A3.onnx"),  # not scratch_path's hex
        leave(tmp_path / f".int8-{gone}-0123.onnx"),
        leave(tmp_path / ".int8-notes.onnx"),
        leave(tmp_path / f"int8-{gone}-0123456789a4.onnx"),  # not hidden
    ]
    touched = leave(tmp_path / f".int8-{gone}-0123456789a5.onnx", folder=True)
    (touched / "model.onnx").write_bytes(b"still written")  # changed now, folder old
    removed = remove_abandoned(tmp_path, "int8", ".onnx")
    assert sorted(removed) == sorted([dead_file, dead_folder])
    assert not dead_file.exists() and not dead_folder.exists()
    assert all(path.exists() for path in [*kept, touched])


def test_the_delay_is_the_callers(tmp_path: Path, gone: int) -> None:
    """``older_than`` sets how long a dead process's scratch must be unchanged."""
    scratch = leave(tmp_path / f".export-{gone}-0123456789ab", folder=True,
                    age=time.time() - 60)
    assert remove_abandoned(tmp_path, "export") == []
    assert remove_abandoned(tmp_path, "export", older_than=30.0) == [scratch]
    assert not scratch.exists()


def test_a_link_is_removed_not_what_it_points_to(tmp_path: Path, gone: int) -> None:
    """A scratch name that is a symbolic link (to a folder) loses the link only."""
    elsewhere = leave(tmp_path / "elsewhere", folder=True)
    link = tmp_path / "cache" / f".export-{gone}-0123456789ab"
    link.parent.mkdir()
    link.symlink_to(elsewhere, target_is_directory=True)
    os.utime(link, (OLD, OLD), follow_symlinks=False)
    assert remove_abandoned(link.parent, "export") == [link]
    assert not link.is_symlink() and (elsewhere / "model.onnx").is_file()


def test_a_prefix_is_no_pattern_and_no_folder_is_nothing(tmp_path: Path,
                                                        gone: int) -> None:
    """Glob characters in a prefix (a model folder named ``m[1]``) match themselves; a
    folder that does not exist (yet) holds nothing to remove."""
    scratch = leave(tmp_path / f".m[1]-{gone}-0123456789ab.tmp", folder=True)
    other = leave(tmp_path / f".m1-{gone}-0123456789ab.tmp", folder=True)
    assert remove_abandoned(tmp_path, "m[1]", ".tmp") == [scratch]
    assert other.exists()
    assert remove_abandoned(tmp_path / "missing", "m[1]", ".tmp") == []


def test_a_scratch_path_is_found_by_remove_abandoned(tmp_path: Path) -> None:
    """The names :func:`scratch_path` makes are the ones :func:`remove_abandoned` reads:
    one of this (live) process is left alone, and once its pid is a dead one's it goes."""
    mine = leave(scratch_path(tmp_path, "stale"), folder=True)
    assert remove_abandoned(tmp_path, "stale") == []
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    dead = mine.with_name(mine.name.replace(f"-{os.getpid()}-", f"-{process.pid}-"))
    mine.rename(dead)
    assert remove_abandoned(tmp_path, "stale") == [dead]
