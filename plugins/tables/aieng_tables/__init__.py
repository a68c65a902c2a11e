"""aieng-tables: CSV, TSV and markdown tables as row documents with a schema document.

:func:`table_documents` turns a table file (or its text) into documents a retriever can
index: one per row, as ``column: value`` lines, and one describing the table's columns,
their inferred types and its size. It reads with the standard library only, and has no
limit on a field's size.
"""

from __future__ import annotations

from pathlib import Path

from aieng_hookspecs import ReaderRegistry, hookimpl
from aieng_hookspecs.types import Document

from ._delimited import TableError, read_records, sniff_delimiter
from ._documents import SUFFIXES, Format, Table, read_tables, table_documents
from ._markdown import markdown_tables
from ._types import COLUMN_TYPES, cell_type, column_type

__all__ = [
    "COLUMN_TYPES",
    "SUFFIXES",
    "Format",
    "Table",
    "TableError",
    "aieng_register_readers",
    "cell_type",
    "column_type",
    "markdown_tables",
    "read_records",
    "read_tables",
    "sniff_delimiter",
    "table_documents",
]

__version__ = "0.1.0"


def _read_table(path: Path) -> list[Document]:
    return table_documents(path)


@hookimpl
def aieng_register_readers(registry: ReaderRegistry) -> None:
    """Read CSV and TSV files (``aieng index``): a schema document and one per row."""
    for suffix in (".csv", ".tsv", ".tab"):
        registry.add(suffix, _read_table,
                     description="a table: one document per row plus a schema document")
