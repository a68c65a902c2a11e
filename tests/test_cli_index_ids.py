"""`aieng index`: a file's documents get the same ids however its path was typed, so that
indexing the same files again replaces them instead of adding copies (bm25 on disk)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aieng_core.cli import _commands, _rag, cli  # noqa: F401  (register the commands)
from aieng_core.ingest import iter_files, read_documents

BM25Index = pytest.importorskip("aieng_bm25._index").BM25Index
BM25Options = pytest.importorskip("aieng_bm25._options").BM25Options

PIPELINE = '[pipeline]\nname = "t"\nstages = ["retrieve"]\n' \
           '[components.lex]\nuse = "bm25"\npath = "idx"\n'


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"AIENG_PLUGINS": "builtin,bm25"})
    return result.exit_code, result.stderr


def _ids(path: Path) -> list[str]:
    index = BM25Index(BM25Options(path=str(path)))
    try:
        return sorted(hit.document.id for hit in index.search("text", k=100))
    finally:
        index.close()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding p.toml (bm25 on disk in ./idx), docs/a.md (two
    sections), docs/sub/c.txt and a link ``linked`` to the docs folder."""
    root = tmp_path / "proj"
    (root / "docs" / "sub").mkdir(parents=True)
    (root / "docs" / "a.md").write_text("# A\n\nalpha text\n\n# B\n\nbeta text\n")
    (root / "docs" / "sub" / "c.txt").write_text("gamma text\n")
    (root / "linked").symlink_to("docs", target_is_directory=True)
    (root / "p.toml").write_text(PIPELINE)
    monkeypatch.chdir(root)
    return root


EXPECTED = ["docs/a.md#0", "docs/a.md#1", "docs/sub/c.txt"]


@pytest.mark.parametrize("spelling", [
    "./docs", "docs/", "{root}/docs", "{root}/docs/", "linked", "docs/../docs",
    "docs/sub/../../docs", "{root}/linked/sub/..",
])
def test_a_folder_typed_another_way_replaces_its_documents(project: Path,
                                                           spelling: str) -> None:
    """Absolute, linked and '..' spellings named the documents by the path as typed, so
    indexing the folder again added a copy of every document (6, 9, ... in the index)."""
    code, err = invoke("index", "p.toml", "docs")
    assert code == 0, err
    code, err = invoke("index", "p.toml", spelling.format(root=project))
    assert code == 0, err
    assert _ids(project / "idx") == EXPECTED


@pytest.mark.parametrize("spelling", [
    "docs/a.md", "./docs/a.md", "{root}/docs/a.md", "linked/a.md", "docs/sub/../a.md",
])
def test_a_file_gets_the_ids_its_folder_walk_gives(project: Path, spelling: str) -> None:
    """A file named by its path gets the ids the folder walk gives it, so a section it no
    longer has is deleted whatever the spelling."""
    code, err = invoke("index", "p.toml", "docs")
    assert code == 0, err
    (project / "docs" / "a.md").write_text("# A\n\nalpha text, shorter\n")
    code, err = invoke("index", "p.toml", spelling.format(root=project))
    assert code == 0, err
    assert "1 deleted" in err
    assert _ids(project / "idx") == ["docs/a.md#0", "docs/sub/c.txt"]


def test_ids_outside_the_working_directory_are_absolute(project: Path) -> None:
    """A file outside the working directory is named by its absolute path (links and '..'
    resolved in its folder), typed relative or not; the same file given twice is read
    once."""
    outside = project.parent / "notes"
    outside.mkdir()
    (outside / "n.md").write_text("# N\n\nnote text\n")
    real = outside.resolve()
    for spelling in ("../notes", str(outside), "docs/../../notes"):
        files = list(iter_files(spelling))
        assert [str(file) for file, _ in files] == [str(real / "n.md")]
        assert [d.id for _, found in files for d in found] == [f"{real / 'n.md'}#0"]
    assert len(list(iter_files("../notes/n.md", str(outside)))) == 1
    assert [d.id for d in read_documents(Path("../notes/n.md"))] == [f"{real / 'n.md'}#0"]


def test_a_linked_file_keeps_its_own_name(project: Path) -> None:
    """A link to a file in the folder is a file of its own, named by its path, whether the
    walk meets it or it is named: its folder is resolved, its name kept."""
    os.symlink("a.md", project / "docs" / "latest.md")
    walked = {str(file) for file, _ in iter_files("linked")}
    assert walked == {"docs/a.md", "docs/latest.md", "docs/sub/c.txt"}
    assert [d.id for d in read_documents(Path("linked/latest.md"))] == [
        "docs/latest.md#0", "docs/latest.md#1"]


def test_the_working_directory_itself(project: Path) -> None:
    """'.' and the working directory's absolute path name files relative to it."""
    os.remove(project / "p.toml")
    for spelling in (".", str(project), "./"):
        files = [str(file) for file, _ in iter_files(spelling)]
        assert files == ["docs/a.md", "docs/sub/c.txt"]


_HOPS = st.sampled_from(["", "./", "sub/../", "../docs/", "../linked/", "/"])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.sampled_from(["", "./", "{root}/", "{root}/./", "docs/../"]),
       folder=st.sampled_from(["docs", "linked"]), hops=st.lists(_HOPS, max_size=3),
       walk=st.booleans())
def test_every_spelling_of_a_file_names_it_alike(project: Path, start: str, folder: str,
                                                 hops: list[str], walk: bool) -> None:
    """Whatever mix of '.', '..', '//', links and absolute prefix leads to docs/sub/c.txt,
    named or in its folder's walk, its document is 'docs/sub/c.txt'."""
    spelling = start.format(root=project) + folder + "/" + "".join(hops) + "sub"
    found = iter_files(spelling) if walk else iter_files(spelling + "/c.txt")
    assert [d.id for _, documents in found for d in documents] == ["docs/sub/c.txt"]
