"""The kernel's markdown reader: sections cut at CommonMark ATX headings outside fences."""

from __future__ import annotations

from pathlib import Path

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
