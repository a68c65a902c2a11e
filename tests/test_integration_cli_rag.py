"""``aieng index`` then ``aieng ask --json`` on a hybrid pipeline built in a temporary
folder (tantivy BM25 and the vector index on disk, their runs fused by ``convex``, the
``prompt`` builder and the offline ``extractive`` backend), as a user drives them from a
shell: indexing again changes nothing, a file that lost sections loses them in both
indexes, and every answer cites only passages that are indexed now.

The command line runs in-process (click's runner) on a kernel that also holds the kit's
``HashEmbedder`` (registered as ``hash-embed``), so no model is loaded.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import anyio
from aieng_hookspecs import ComponentRegistry, hookimpl
from aieng_hookspecs.types import Query
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from aieng_core import Kernel
from aieng_core.cli import _commands, _rag, cli  # noqa: F401  (register the commands)
from aieng_core.testing import HashEmbedder

PLUGINS = "builtin,bm25,vectors,fusion"
CITATION = re.compile(r"\[(\d+)\]")

HYBRID = """
[pipeline]
name = "hybrid"

[stage.retrieve]
k = 100

[components.lexical]
use = "bm25"
path = "{root}/bm25"

[components.dense]
use = "vectors"
path = "{root}/vectors"

[components.embed]
use = "hash-embed"

[components.fuse]
use = "convex"

[components.prompt]
use = "prompt"

[components.llm]
use = "extractive"
"""


class Doubles:
    """Registers the kit's hashing embedder as ``hash-embed``."""

    @hookimpl
    def aieng_register_components(self, registry: ComponentRegistry) -> None:
        registry.add("hash-embed", lambda: HashEmbedder(64))


def kernel() -> Kernel:
    """A kernel with the plugins the pipeline names and the doubles."""
    running = Kernel(env={"AIENG_PLUGINS": PLUGINS}, default_embedder=None,
                     loop_block_threshold=None).load()
    running.registry.register(Doubles(), name="doubles")
    return running


def aieng(*args: str) -> tuple[str, str]:
    """Run ``aieng ARGS`` in-process on a fresh kernel; its stdout and stderr (exit 0)."""
    result = CliRunner().invoke(cli, list(args), obj={"kernel": kernel()},
                                env={"AIENG_PLUGINS": PLUGINS})
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result.stdout, result.stderr


def stored(pipeline: Path, words: str) -> dict[str, dict[str, str]]:
    """What each index holds (id: text), found by searching ``words`` (every word of the
    corpus: bm25 finds each section; the vector index returns its top 100, all of them)."""

    async def go() -> dict[str, dict[str, str]]:
        async with kernel() as running, running.load_pipeline(pipeline) as built:
            result = await built.run(Query(text=words), )
        return {name: {hit.document.id: hit.document.text for hit in hits}
                for name, hits in result.runs.items()}

    return anyio.run(go)


# -- a corpus of markdown files ----------------------------------------------------------------

WORDS = ["fusion", "rank", "cache", "graph", "délta", "東京", "서울에서", "naïve", "vector",
         "quokka", "Ünïcödé", "lexical", "tantivy"]
#: A section: its title and its body, a few words (a unique marker word is added to each).
SECTION = st.tuples(st.sampled_from(["Intro", "Fusion", "東京", "Café ☕", "Notes"]),
                    st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join))
#: A file: its sections (at least one).
FILE = st.lists(SECTION, min_size=1, max_size=4)


def markdown(sections: list[tuple[str, str]], file: int) -> str:
    """A markdown file of ``sections``, each ending with a marker word of its own
    (``mark<file>x<section>``), so a search can tell every section's text apart."""
    return "".join(f"# {title}\n\n{body} mark{file}x{n}\n\n"
                   for n, (title, body) in enumerate(sections))


def write(docs: Path, files: list[list[tuple[str, str]]]) -> dict[str, str]:
    """Write ``files`` as ``docs/f<i>.md``; the ids the indexes should hold, with a marker
    word each (a markdown file's section ``n`` is ``<path>#<n>``)."""
    expected = {}
    for file, sections in enumerate(files):
        (docs / f"f{file}.md").write_text(markdown(sections, file), encoding="utf-8")
        for n in range(len(sections)):
            expected[f"{docs / f'f{file}.md'}#{n}"] = f"mark{file}x{n}"
    return expected


def check_answer(data: dict[str, Any], indexed: set[str]) -> None:
    """``ask --json``: hits ranked 1..n, distinct, all indexed now; every citation is one
    of them, and every ``[n]`` in the answer is a listed citation."""
    hits = [hit["id"] for hit in data["hits"]]
    assert [hit["rank"] for hit in data["hits"]] == list(range(1, len(hits) + 1))
    assert len(hits) == len(set(hits)) and set(hits) <= indexed, (hits, indexed)
    cited = {citation["n"]: citation["id"] for citation in data["citations"]}
    assert set(cited.values()) <= set(hits)
    assert {int(n) for n in CITATION.findall(data["answer"])} <= set(cited)
    assert data["status"] == "ok"


@settings(max_examples=3, deadline=None)
@given(files=st.lists(FILE, min_size=1, max_size=3), data=st.data())
def test_index_again_ask_and_lose_sections(files: list[list[tuple[str, str]]],
                                           data: st.DataObject) -> None:
    """Index a folder, index it again unchanged (the indexes hold exactly the same sections,
    and ask gives the same answer), then cut sections off the files and index again: both
    indexes hold exactly the sections the files have now, each with its new text, and the
    answer cites only those."""
    with tempfile.TemporaryDirectory(prefix="aieng-cli-") as name:
        root = Path(name)
        docs = root / "docs"
        docs.mkdir()
        pipeline = root / "hybrid.toml"
        pipeline.write_text(HYBRID.format(root=root.as_posix()))
        expected = write(docs, files)
        words = " ".join([*WORDS, *expected.values()])
        question = f"what does {data.draw(st.sampled_from(WORDS))} rank"

        _, err = aieng("index", str(pipeline), str(docs))
        assert f"read {len(expected)} documents" in err
        first = stored(pipeline, words)
        assert {name: set(held) for name, held in first.items()} == {
            "lexical": set(expected), "dense": set(expected)}
        answer = json.loads(aieng("ask", str(pipeline), question, "--json")[0])
        check_answer(answer, set(expected))

        aieng("index", str(pipeline), str(docs))
        assert stored(pipeline, words) == first
        again = json.loads(aieng("ask", str(pipeline), question, "--json")[0])
        assert (again["answer"], again["hits"]) == (answer["answer"], answer["hits"])

        kept = [sections[:data.draw(st.integers(0, len(sections)))] for sections in files]
        now = write(docs, kept)
        _, err = aieng("index", str(pipeline), str(docs))
        gone = len(expected) - len(now)
        assert (f"{gone} deleted" in err) == (gone > 0), err
        after = stored(pipeline, words)
        for name, held in after.items():
            assert set(held) == set(now), name
            for key, text in held.items():  # the section's text, not a stale one
                assert text.endswith(now[key]), (name, key, text)
        check_answer(json.loads(aieng("ask", str(pipeline), question, "--json")[0]),
                     set(now))
