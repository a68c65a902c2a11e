"""Tables as documents: one per row ("column: value" lines) and one describing the schema."""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
from aieng_hookspecs.types import Document

from ._delimited import TableError, read_records, sniff_delimiter
from ._markdown import markdown_tables
from ._types import column_type

__all__ = ["Format", "Table", "read_tables", "table_documents"]

Format = Literal["csv", "tsv", "markdown"]
FORMATS: tuple[str, ...] = ("csv", "tsv", "markdown")
#: The file suffixes whose format is known without looking at the text.
SUFFIXES: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".md": "markdown",
                            ".markdown": "markdown"}
_EXAMPLES = 3
_EXAMPLE_CHARS = 40

Source = str | bytes | os.PathLike[str]


@attrs.frozen
class Table:
    """A table as read: named columns and rows of text cells.

    :param name: the table's name (shown in titles and the schema).
    :param columns: the column names: the header's cells, trimmed, made unique (``a``,
        ``a_2``), ``column_N`` for a blank one.
    :param rows: the data rows, each with one cell per column (short rows padded with
        ``""``), then any cells a row has beyond the header (only that row has them: its
        document names them ``column_N``); rows whose cells are all blank are left out.
    :param ragged_rows: how many rows had more or fewer cells than the header.
    :param source: the file it was read from, or ``""``.
    """

    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    ragged_rows: int = 0
    source: str = ""

    def types(self) -> dict[str, str]:
        """Each column's inferred type (see :func:`aieng_tables.column_type`)."""
        return {column: column_type(row[index] for row in self.rows)
                for index, column in enumerate(self.columns)}


def read_tables(source: Source, *, name: str | None = None, format: Format | None = None,
                delimiter: str | None = None, encoding: str = "utf-8") -> list[Table]:
    """The tables of a CSV / TSV file or text (one table) or of markdown (each pipe table).

    :param source: a path (``pathlib.Path`` or any ``os.PathLike``), the bytes of a file,
        or the text itself. A ``str`` without line breaks naming an existing file is read
        as that file.
    :param name: the table's name; by default the file's stem. Required for text and
        bytes. Markdown holding several tables names them ``"NAME (table 1)"``, ...
    :param format: ``csv``, ``tsv`` or ``markdown``; by default from the file's suffix,
        else markdown when the text holds a pipe table, else CSV.
    :param delimiter: the CSV delimiter; by default sniffed from the header (the first
        non-blank record) among ``,`` ``;`` tab and ``|``.
    :param encoding: the encoding of a file or bytes (a leading BOM is dropped; with
        UTF-8, a UTF-16 or UTF-32 BOM reads the file in that encoding).
    :raises TableError: (a ``ValueError``) for text that is not in ``encoding``, or a
        quoted field that is never closed, saying where (the file, and the line).
    """
    text, path = _load(source, encoding)
    label = str(path) if path is not None else ""
    if name is None:
        if path is None:
            if isinstance(source, str) and "\n" not in source and "\r" not in source \
                    and Path(source).suffix.lower() in SUFFIXES:  # a path with a typo?
                raise ValueError(f"no file {source!r} exists (a str naming no file is the "
                                 "table's text, and then needs name=)")
            raise ValueError("name is required when the table is given as text or bytes")
        name = path.stem
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if not name.strip():
        raise ValueError("name must not be blank")
    chosen: str | None = format
    if chosen is None:
        known = SUFFIXES.get(path.suffix.lower()) if path is not None else None
        chosen = known or ("markdown" if markdown_tables(text) else "csv")
    if chosen not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {chosen!r}")
    if chosen == "markdown":
        found = markdown_tables(text)
        names = [name] if len(found) == 1 else [f"{name} (table {n})"
                                                 for n in range(1, len(found) + 1)]
        return [_table(rows[0], rows[1:], table_name, label)
                for rows, table_name in zip(found, names, strict=True)]
    if chosen == "tsv":
        records = read_records(text, "\t" if delimiter is None else delimiter, quoting=False)
    else:
        # "" is a mistake to report (read_records does), not a request to sniff.
        records = read_records(text, sniff_delimiter(text) if delimiter is None else delimiter)
    kept = (record for record in records if any(cell.strip() for cell in record))
    try:
        header = next(kept, None)
        return [] if header is None else [_table(header, list(kept), name, label)]
    except TableError as exc:  # "line N: ...": say which file, as the kernel's readers do
        if not label:
            raise
        raise TableError(f"{label}, {exc}") from None


def table_documents(source: Source, *, name: str | None = None, id_prefix: str | None = None,
                    format: Format | None = None, delimiter: str | None = None,
                    encoding: str = "utf-8") -> list[Document]:
    """The documents of a table file or text: for each table, a schema document and then
    one document per row.

    A row document's text is one ``column: value`` line per non-blank cell (a value's
    further lines indented by two spaces); its id is ``PREFIX#row-N`` (``N`` counts the
    data rows from 1), its title ``NAME, row N``, its metadata ``table``, ``kind``
    (``"table-row"``), ``row``, ``columns`` and, for a file, ``source``. The schema
    document (id ``PREFIX#schema``, kind ``"table-schema"``) describes the table: its rows
    and columns, each column's inferred type, blank cells and example values; its
    metadata holds ``columns``, ``types``, ``rows`` and ``ragged_rows``. An empty source
    gives no document.

    :param id_prefix: what ids start with; by default the file's path (as the kernel's
        readers name documents), or ``name`` for text. Markdown holding several tables
        adds ``#table-N`` for each.
    :param name, format, delimiter, encoding: as for :func:`read_tables`.
    :raises TableError: as :func:`read_tables`.
    """
    tables = read_tables(source, name=name, format=format, delimiter=delimiter,
                         encoding=encoding)
    documents: list[Document] = []
    for number, table in enumerate(tables, start=1):
        prefix = id_prefix or table.source or name or table.name
        if len(tables) > 1:
            prefix = f"{prefix}#table-{number}"
        documents.extend(_documents(table, prefix))
    return documents


def _load(source: Source, encoding: str) -> tuple[str, Path | None]:
    if isinstance(source, str):
        if "\n" not in source and "\r" not in source and source and _is_file(source):
            source = Path(source)
        else:
            return source.removeprefix("\ufeff"), None
    if isinstance(source, bytes):
        data, path, label = source, None, "the bytes"
    elif isinstance(source, os.PathLike):
        path = Path(source)
        data, label = path.read_bytes(), str(path)
    else:
        raise TypeError(f"a table source is a path, bytes or text, not {type(source).__name__}")
    try:
        text = data.decode(_by_mark(data, encoding))
    except UnicodeDecodeError as exc:
        # The line as an editor counts it: the line breaks before the byte, quoted or not.
        before = data[:exc.start].decode(encoding, errors="replace")
        line = len(_LINE_BREAK.findall(before)) + 1
        raise TableError(f"{label} {'are' if path is None else 'is'} not {encoding} text "
                         f"(line {line}, byte {exc.start} cannot be decoded): "
                         "pass encoding= the file's encoding (for example 'cp1252'), or, "
                         "for `aieng index` (which reads UTF-8), convert the file first "
                         "(iconv -f cp1252 -t utf-8)") from None
    return text.removeprefix("\ufeff"), path


_LINE_BREAK = re.compile(r"\r\n?|\n")
# Byte order marks saying the encoding (UTF-32's before UTF-16's: FF FE starts both).
_MARKS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
          (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _by_mark(data: bytes, encoding: str) -> str:
    """``encoding``, or UTF-16 / UTF-32 when it is UTF-8 (the default) and ``data`` starts
    with their byte order mark (as Excel's "Unicode text" and Windows tools write): such a
    file is no UTF-8, and the mark says what it is."""
    if codecs.lookup(encoding).name != "utf-8":
        return encoding
    return next((name for mark, name in _MARKS if data.startswith(mark)), encoding)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except OSError:  # a name too long for the file system (ENAMETOOLONG) is no file
        return False


def _table(header: Sequence[str], body: Iterable[Sequence[str]], name: str,
           source: str) -> Table:
    rows = [row for row in body if any(cell.strip() for cell in row)]
    width = len(header)
    # Short rows are padded to the header; a long row keeps its extra cells to itself (as
    # csv.DictReader's restkey does): padding every row to the widest one made one stray
    # row of 4,000 cells cost every other row 4,000 cells, and every document 4,000 names.
    return Table(
        name=name, columns=_names(header, width), source=source,
        rows=tuple(tuple(row) + ("",) * (width - len(row)) for row in rows),
        ragged_rows=sum(1 for row in rows if len(row) != width))


def _names(header: Sequence[str], width: int) -> tuple[str, ...]:
    names: list[str] = []
    taken: set[str] = set()
    # The next suffix to try per base: the ones before it are taken, and stay taken. (A
    # list searched from ``_2`` for each name was cubic in a header of equal names.)
    copies: dict[str, int] = {}
    for index in range(width):
        base = " ".join(header[index].split()) if index < len(header) else ""
        base = base or f"column_{index + 1}"
        name, copy = base, copies.get(base, 2)
        if name in taken:
            name = f"{base}_{copy}"
            while name in taken:
                copy += 1
                name = f"{base}_{copy}"
            copies[base] = copy + 1
        names.append(name)
        taken.add(name)
    return tuple(names)


def _documents(table: Table, prefix: str) -> list[Document]:
    common: dict[str, Any] = {"table": table.name, "columns": list(table.columns)}
    if table.source:
        common["source"] = table.source
    types = table.types()
    documents = [Document(
        id=f"{prefix}#schema", title=f"{table.name} (table schema)",
        text=_schema_text(table, types),
        metadata={**common, "kind": "table-schema", "types": types, "rows": len(table.rows),
                  "ragged_rows": table.ragged_rows})]
    # The names of cells beyond the header (``column_N``, unique against the header's).
    names = _names(table.columns, max([len(table.columns), *map(len, table.rows)]))
    for number, row in enumerate(table.rows, start=1):
        lines = [f"{column}: {_value(cell)}" for column, cell in zip(names, row)
                 if cell.strip()]
        documents.append(Document(
            id=f"{prefix}#row-{number}", title=f"{table.name}, row {number}",
            text="\n".join(lines), metadata={**common, "kind": "table-row", "row": number}))
    return documents


def _value(cell: str) -> str:
    return "\n  ".join(line.strip() for line in cell.strip().splitlines())


def _schema_text(table: Table, types: dict[str, str]) -> str:
    rows = len(table.rows)
    width = len(table.columns)
    lines = [f"Table {table.name}: {rows} row{'s' * (rows != 1)}, {width} "
             + f"column{'s' * (width != 1)}."]
    if table.ragged_rows:
        beyond = any(len(row) > width for row in table.rows)
        lines.append(f"{table.ragged_rows} row(s) had more or fewer cells than the header"
                     + ("; cells beyond it are kept in their rows as column_N." if beyond
                        else "."))
    lines.append("Columns:")
    for index, column in enumerate(table.columns):
        # One pass over the cells, copying none but the examples shown (a list of the
        # stripped cells and a dict of every distinct one were the column twice more).
        blank = 0
        examples: list[str] = []
        for row in table.rows:
            cell = row[index]
            if not cell or cell.isspace():
                blank += 1
            elif len(examples) < _EXAMPLES:
                example = " ".join(cell.split())
                if example not in examples:
                    examples.append(example)
        quote = '"' if types[column] == "text" else ""
        shown = ", ".join(f"{quote}{_clip(example)}{quote}" for example in examples)
        lines.append(f"- {column}: {types[column]}"
                     + (f", {blank} blank" if blank else "")
                     + (f"; e.g. {shown}" if shown else ""))
    return "\n".join(lines)


def _clip(value: str) -> str:
    return value if len(value) <= _EXAMPLE_CHARS else value[: _EXAMPLE_CHARS - 1] + "\u2026"
