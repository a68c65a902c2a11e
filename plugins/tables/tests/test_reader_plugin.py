"""aieng-tables registers its CSV / TSV readers with the kernel, for `aieng index`."""

from __future__ import annotations

from pathlib import Path

import aieng_tables
import pytest
from aieng_tables import TableError

from aieng_core import Kernel
from aieng_core.ingest import iter_documents


def test_csv_files_are_read_through_the_registered_reader(tmp_path: Path) -> None:
    """With the plugin registered, a folder's CSV becomes a schema document and row documents."""
    kernel = Kernel(env={}, entry_points=[]).load()
    assert kernel.registry.register(aieng_tables, name="tables").status == "loaded"
    assert {".csv", ".tsv", ".tab"} <= set(kernel.registry.readers)
    (tmp_path / "planes.csv").write_text("name,seats\nA320,180\nB737,160\n", encoding="utf-8")
    readers = {s: r.reader for s, r in kernel.registry.readers.items()}
    docs = list(iter_documents(tmp_path, readers=readers))
    assert len(docs) == 3
    assert docs[0].id.endswith("#schema") and "seats" in docs[0].text
    assert "name: A320" in docs[1].text and "seats: 180" in docs[1].text


def test_a_bad_file_in_a_folder_is_named_in_the_error(tmp_path: Path) -> None:
    """A stray quote in one of a folder's tables fails naming that file and the line, as
    the kernel's readers name theirs: ``aieng index`` over a folder says which file."""
    kernel = Kernel(env={}, entry_points=[]).load()
    assert kernel.registry.register(aieng_tables, name="tables").status == "loaded"
    readers = {s: r.reader for s, r in kernel.registry.readers.items()}
    (tmp_path / "good.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    bad = tmp_path / "stray.csv"
    bad.write_text('a,b\n1,2\n3,"oops\n4,5\n', encoding="utf-8")
    with pytest.raises(TableError) as caught:
        list(iter_documents(tmp_path, readers=readers))
    assert str(caught.value).startswith(f"{bad}, line 3: a quoted field is never closed")
