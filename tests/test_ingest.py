"""The kernel's markdown reader: sections cut at CommonMark ATX headings outside fences."""

from __future__ import annotations

from pathlib import Path

import structlog.testing

from aieng_core.ingest import read_markdown


def _sections(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    path = tmp_path / "doc.md"
    path.write_text(text, encoding="utf-8")
    return [(d.title, d.text) for d in read_markdown(path)]


def test_only_commonmark_atx_headings_cut_sections(tmp_path: Path) -> None:
    """A heading is 1-6 '#' after at most 3 spaces, then a space, a tab or the line's end;
    '#tag', seven '#' and a 4-space indent are text, and a closing '#' run is dropped."""
    text = ("# Intro\n#tag stays text\n####### seven stays text\n    # indented code\n"
            "   ## Indented heading ##\nbody\n#\tTabbed\ntabbed body\n#\nno title\n")
    assert _sections(tmp_path, text) == [
        ("Intro", "#tag stays text\n####### seven stays text\n    # indented code"),
        ("Indented heading", "body"),
        ("Tabbed", "tabbed body"),
        ("doc", "no title"),
    ]


def test_headings_inside_tilde_and_backtick_fences_do_not_cut(tmp_path: Path) -> None:
    """Lines starting with '#' inside a '~~~' or '```' fence stay in the section; a fence is
    closed only by the same character at least as many times, so '~~~' inside a '```' block
    does not close it."""
    text = ("# Setup\n~~~bash\n# a shell comment\n~~~\n````md\n# inside\n```\n~~~\n"
            "# still inside\n````\n# Next\nafter\n")
    assert _sections(tmp_path, text) == [
        ("Setup", ("~~~bash\n# a shell comment\n~~~\n````md\n# inside\n```\n~~~\n"
                   "# still inside\n````")),
        ("Next", "after"),
    ]


def test_an_unclosed_fence_runs_to_the_end(tmp_path: Path) -> None:
    """An unclosed fence keeps every later '#' line in its section, as CommonMark reads it."""
    assert _sections(tmp_path, "# Code\n~~~\n# comment\n") == [
        ("Code", "~~~\n# comment"),
    ]


def test_a_backtick_line_with_backticks_after_is_no_fence(tmp_path: Path) -> None:
    """'```a`b' is inline code, not a fence, so the heading after it still cuts."""
    assert _sections(tmp_path, "# One\n```a`b\n# Two\nx\n") == [
        ("One", "```a`b"), ("Two", "x"),
    ]


def test_a_byte_order_mark_is_not_text(tmp_path: Path) -> None:
    """A file saved with a UTF-8 byte order mark (Windows editors) reads as without it: the
    first heading still cuts, and the first corpus row still parses."""
    from aieng_core.ingest import read_beir_corpus, read_text

    markdown = tmp_path / "bom.md"
    markdown.write_bytes("\ufeff# Title\nbody\n".encode())
    assert [(d.title, d.text) for d in read_markdown(markdown)] == [("Title", "body")]
    text = tmp_path / "bom.txt"
    text.write_bytes("\ufeffplain".encode())
    assert read_text(text)[0].text == "plain"
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes('\ufeff{"_id": "1", "text": "a"}\r\n{"_id": "2", "text": "b"}\r\n'.encode())
    assert [(d.id, d.text) for d in read_beir_corpus(corpus)] == [("1", "a"), ("2", "b")]


def test_corpus_rows_end_at_newlines_only(tmp_path: Path) -> None:
    """JSON allows U+2028, U+2029 and U+0085 unescaped in a string (``json.dumps(...,
    ensure_ascii=False)`` writes them so): they are text of the row, not line ends."""
    import json

    from aieng_core.ingest import read_beir_corpus

    texts = ["one\u2028two", "three\u2029four\x85five"]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "text": t}, ensure_ascii=False) + "\n"
                              for i, t in enumerate(texts)), encoding="utf-8")
    assert [d.text for d in read_beir_corpus(corpus)] == texts
    markdown = tmp_path / "doc.md"
    markdown.write_text("# A\nx\u2028# not a heading\n", encoding="utf-8")
    assert [(d.title, d.text) for d in read_markdown(markdown)] == [("A", "x\u2028# not a heading")]


def test_a_null_title_or_text_is_empty_not_none(tmp_path: Path) -> None:
    """A corpus row with ``"title": null`` has no title, not the title 'None' (which BM25
    would index as a word); a non-string text is a bad row, named with its line."""
    import pytest

    from aieng_core.ingest import read_beir_corpus

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": 7, "title": null, "text": null}\n', encoding="utf-8")
    [doc] = read_beir_corpus(corpus)
    assert (doc.id, doc.title, doc.text) == ("7", "", "")
    corpus.write_text('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": {"a": 1}}\n',
                      encoding="utf-8")
    with pytest.raises(ValueError, match=r"corpus\.jsonl:2:"):
        read_beir_corpus(corpus)


def test_a_folder_walk_stays_in_the_folder(tmp_path: Path) -> None:
    """A link in the documents folder to a file outside it (``/etc/passwd``, a key) is
    not read; a link to a file inside it, a link loop and a FIFO (whose read would wait
    for ever) do not stop the walk."""
    import os

    from aieng_core.ingest import iter_files

    outside = tmp_path / "secret.txt"
    outside.write_text("the key", encoding="utf-8")
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("hello", encoding="utf-8")
    (docs / "secret.txt").symlink_to(outside)
    (docs / "passwd.txt").symlink_to("/etc/passwd")
    (docs / "inner.txt").symlink_to(docs / "a.txt")
    (docs / "sub" / "loop").symlink_to(docs)
    os.mkfifo(docs / "pipe.txt")
    with structlog.testing.capture_logs() as logs:
        read = {path.name: [d.text for d in found] for path, found in iter_files(docs)}
    assert read == {"a.txt": ["hello"], "inner.txt": ["hello"]}
    skipped = {Path(e["path"]).name: e["reason"] for e in logs if e["event"] == "ingest.skipped"}
    assert set(skipped) == {"secret.txt", "passwd.txt", "pipe.txt"}  # each said, not silent
    assert "FIFO" in skipped["pipe.txt"]


def test_a_file_name_that_is_not_utf8_is_skipped_in_a_folder(tmp_path: Path) -> None:
    """A file whose name is not UTF-8 (a Latin-1 archive) would give a document id no
    index accepts: a folder walk skips it and reads the rest; named, it is refused."""
    import os

    import pytest

    from aieng_core.ingest import iter_files, read_documents

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text("fine", encoding="utf-8")
    bad = os.path.join(os.fsencode(docs), b"caf\xe9.txt")
    with open(bad, "w", encoding="utf-8") as file:
        file.write("latin-1 name")
    read = {str(path): [d.text for d in found] for path, found in iter_files(docs)}
    assert read == {str(docs / "good.txt"): ["fine"]}
    with pytest.raises(ValueError, match="not valid UTF-8"):
        read_documents(Path(os.fsdecode(bad)))


def test_a_folder_walk_leaves_hidden_entries_and_binary_files_out(tmp_path: Path) -> None:
    """`aieng index p.toml .` in a project read .git's and .venv's files too (every
    package's LICENSE.txt), and one binary file under a text suffix stopped the whole
    walk: hidden folders are not entered, hidden files not read, a file that is not UTF-8
    text is skipped with a warning. Named by its path, each is still read (or refused)."""
    import pytest

    from aieng_core.ingest import iter_files, read_documents

    docs = tmp_path / "project"
    (docs / ".venv" / "lib").mkdir(parents=True)
    (docs / ".venv" / "lib" / "LICENSE.txt").write_text("MIT", encoding="utf-8")
    (docs / ".notes.md").write_text("# Private\n\nhidden", encoding="utf-8")
    (docs / "guide.md").write_text("# Guide\n\nread me", encoding="utf-8")
    (docs / "blob.txt").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with structlog.testing.capture_logs() as logs:
        read = {path.name: [d.text for d in found] for path, found in iter_files(docs)}
    assert read == {"guide.md": ["read me"]}
    skipped = [e for e in logs if e["event"] == "ingest.skipped"]
    assert [Path(e["path"]).name for e in skipped] == ["blob.txt"]
    assert "not UTF-8 text" in skipped[0]["reason"]
    assert [d.text for d in read_documents(docs / ".notes.md")] == ["hidden"]
    with pytest.raises(ValueError, match="not UTF-8 text"):
        read_documents(docs / "blob.txt")


def test_a_corpus_id_given_twice_names_both_lines(tmp_path: Path) -> None:
    """Two corpus rows with one ``_id`` would be indexed as one document (the second
    replacing the first, silently): the reader refuses them, naming both lines."""
    import pytest

    from aieng_core.ingest import read_beir_corpus

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "a"}\n{"_id": "2", "text": "b"}\n'
                      '{"_id": 1, "text": "c"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"corpus\.jsonl:3: .*duplicate _id '1' \(line 1\)"):
        read_beir_corpus(corpus)


def test_an_id_read_from_two_files_names_both(tmp_path: Path) -> None:
    """A BEIR collection's folder holds queries.jsonl beside corpus.jsonl, with ids ("1",
    "2", ...) that are the corpus's too: indexed, query 1's text replaced document 1's
    without a word. An id read from two files is refused, naming both; a file named twice
    (in its folder and by name) is read once."""
    import pytest

    from aieng_core.ingest import iter_documents, iter_files

    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text('{"_id": "1", "text": "doc"}\n{"_id": "2", "text": "d"}\n',
                                       encoding="utf-8")
    (beir / "queries.jsonl").write_text('{"_id": "2", "text": "query"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"queries\.jsonl: document id '2' was also read from "
                                         r".*corpus\.jsonl"):
        list(iter_documents(beir))
    (beir / "queries.jsonl").unlink()
    (beir / "a.md").write_text("# A\ntext\n", encoding="utf-8")
    files = [path.name for path, _ in iter_files(beir, beir / "a.md", f"{beir}/./corpus.jsonl")]
    assert files == ["a.md", "corpus.jsonl"]
