"""``aieng_hookspecs.replace_file``: a file replaced whole or not at all (eval's reports and
lockfile, the chat history's rewrite)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from aieng_hookspecs import replace_file

from aieng_core.testing import umask


def test_text_and_bytes_replace_the_file_and_leave_no_scratch(tmp_path: Path) -> None:
    path = tmp_path / "report.md"
    path.write_text("old", encoding="utf-8")
    replace_file(path, "new é \udcff", errors="backslashreplace")
    assert path.read_text(encoding="utf-8") == "new é \\udcff"
    replace_file(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_a_write_cut_short_keeps_the_old_file(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk half-way through the write: the old file stays whole, the scratch goes,
    and the error is the write's own."""
    path = tmp_path / "lock.json"
    path.write_text('{"whole": true}', encoding="utf-8")
    original = Path.write_text

    def half(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        original(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", half)
    with pytest.raises(OSError) as caught:
        replace_file(path, '{"whole": false, "longer": "than before"}')
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_text(encoding="utf-8") == '{"whole": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["lock.json"]


posix_modes = pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")


@posix_modes
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664])
def test_the_new_file_keeps_the_old_ones_permissions(tmp_path: Path, mode: int) -> None:
    """A private file (a chat history) stays private when it is rewritten, and a shared one
    stays shared: the permissions are the old file's, not the umask's."""
    path = tmp_path / "history.jsonl"
    path.write_text("old\n", encoding="utf-8")
    path.chmod(mode)
    replace_file(path, "new\n")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert path.read_text(encoding="utf-8") == "new\n"


@posix_modes
def test_the_scratch_is_never_readable_by_more_than_the_old_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the data is written, the scratch file already has the old file's permissions:
    the text is never readable by others, even for a moment."""
    path = tmp_path / "history.jsonl"
    path.write_text("old\n", encoding="utf-8")
    path.chmod(0o600)
    original = Path.write_text
    seen: list[int] = []

    def write_text(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        written = original(self, data, *args, **kwargs)
        seen.append(stat.S_IMODE(self.stat().st_mode))
        return written

    monkeypatch.setattr(Path, "write_text", write_text)
    replace_file(path, "secret\n")
    assert seen == [0o600]


@posix_modes
def test_a_new_file_takes_the_mode_given_or_the_umasks(tmp_path: Path) -> None:
    with umask(0o022):
        replace_file(tmp_path / "private", "x", mode=0o600)
        replace_file(tmp_path / "plain", "x")
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o644
