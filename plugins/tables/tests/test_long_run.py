"""The long run: an indexing worker reading tables for weeks keeps nothing per file, and
holds no descriptor, whether the file reads or fails.

Shown by the bytes and descriptors the kit's ``measure_growth`` finds retained, never by
timings."""

from __future__ import annotations

from pathlib import Path

import pytest
from aieng_tables import TableError, table_documents

from aieng_core.testing.steady import measure_growth


def test_reading_tables_good_and_bad_keeps_nothing(tmp_path: Path) -> None:
    """Tables read again and again, rewritten now and then: a CSV, a TSV, markdown, a file
    with an unclosed quote and one that is not UTF-8 (both refused): no descriptor stays
    open and nothing is kept per read."""
    good, tsv, markdown = tmp_path / "a.csv", tmp_path / "b.tsv", tmp_path / "c.md"
    quote, latin = tmp_path / "quote.csv", tmp_path / "latin.csv"

    quote.write_text('a,b\n"1,2\n', encoding="utf-8")
    latin.write_bytes("a,b\n1,caf\xe9\n".encode("latin-1"))

    def read(i: int) -> None:
        if i % 10 == 0:  # new files now and then: no reader keeps anything by path
            good.write_text(f"name,seats\nA{i},{i}\nB{i},{i + 1}\n", encoding="utf-8")
            tsv.write_text(f"x\ty\n{i}\t{i * 2}\n", encoding="utf-8")
            markdown.write_text(f"| k | v |\n|---|---|\n| {i} | v{i} |\n", encoding="utf-8")
        assert len(table_documents(good)) == 3
        assert len(table_documents(tsv)) == 2 and len(table_documents(markdown)) == 2
        for path in (quote, latin):
            with pytest.raises(TableError):
                table_documents(path)

    growth = measure_growth(read, warmup=100, calls=600)
    assert growth.held == (), growth.report()
    # A table or a document kept is 500 B and more; the regex engine's and the allocator's
    # own reserves are some 20 kB in all.
    assert growth.per_call < 64, growth.report()
