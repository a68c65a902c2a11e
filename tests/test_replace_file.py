"""``aieng_hookspecs.replace_file``: a file replaced whole or not at all (eval's reports and
lockfile, the chat history's rewrite)."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from aieng_hookspecs import replace_file


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
