"""The kernel and the contract when the data grows: what one call asks of the indexes
stays bounded, and the text rewriters are one pass over long runs."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence

import pytest
from aieng_hookspecs import _secrets, _untrusted, hookimpl
from aieng_hookspecs.types import Chunk, Document
from hypothesis import given
from hypothesis import strategies as st

from aieng_core import Kernel
from aieng_core.builtins import MemoryOptions, MemoryRetriever
from aieng_core.pipeline._indexing import delete_runs

pytestmark = pytest.mark.anyio


class Pairs:
    """Chunker double: chunks of two words."""

    @hookimpl
    def aieng_chunk_document(self, document: Document) -> list[Chunk]:
        words = document.text.split()
        return [Chunk(id=f"{document.id}:{n}", document_id=document.id,
                      text=" ".join(words[i:i + 2]))
                for n, i in enumerate(range(0, len(words), 2))]


class SizedDeletes:
    """The memory retriever, recording how many ids each ``aieng_delete`` call asks for."""

    def __init__(self) -> None:
        self.store = MemoryRetriever(MemoryOptions())
        self.asked: list[int] = []

    @hookimpl
    def aieng_index(self, documents: Sequence[Document]) -> int:
        return self.store.aieng_index(documents)

    @hookimpl
    def aieng_delete(self, ids: Sequence[str]) -> int:
        self.asked.append(len(ids))
        return self.store.aieng_delete(ids)


async def _delete_all(kernel: Kernel, documents: int) -> SizedDeletes:
    store = SizedDeletes()
    pipeline = kernel.compose({"chunks": Pairs(), "docs": store})
    long = " ".join(f"w{i}" for i in range(200))  # 100 chunks
    await pipeline.index([Document("long", long),
                          *(Document(f"d{i}", "a b") for i in range(documents))],
                         batch_size=4096)
    store.asked.clear()
    assert await pipeline.delete(["long", *(f"d{i}" for i in range(documents))]) \
        == 100 + documents
    assert not store.store._docs
    return store


async def test_deleting_many_documents_asks_a_bounded_number_of_ids_per_document(
        aieng_kernel: Kernel) -> None:
    """Deleting documents by id follows each one's chunks (``d#0``, ``d#1``, ...). One long
    document among thousands kept every document's run going, at windows of up to 256 ids
    each: a call asked for documents x 256 ids (a million for 4,096 documents, 25 million
    for 100,000). Now the group of runs is split once most of them have ended: the ids
    asked grow by a few dozen per document, and no call asks for more than 2^18."""
    small = await _delete_all(aieng_kernel, 2048)
    large = await _delete_all(aieng_kernel, 4096)
    # The first two calls (the ids, every first chunk) grow with the documents, as they must.
    assert large.asked[:2] == [4097, 4098] and small.asked[:2] == [2049, 2050]
    assert max(large.asked) <= (1 << 18) + 1
    assert (sum(large.asked) - sum(small.asked)) / 2048 < 60  # it was ~240


class _Ids:
    """An index double holding bare ids in a set, recording each delete call's size."""

    def __init__(self, ids: set[str]) -> None:
        self.ids = ids
        self.asked: list[int] = []

    async def delete(self, ids: Sequence[str]) -> int:
        self.asked.append(len(ids))
        found = self.ids.intersection(ids)
        self.ids -= found
        return len(found)


@given(runs=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 300)), max_size=150),
       keep=st.sets(st.integers(0, 149), max_size=5))
async def test_delete_runs_deletes_each_run_to_its_end_and_nothing_else(
        runs: list[tuple[int, int]], keep: set[int]) -> None:
    """Whatever the mix of run lengths (groups split or not), each stem loses exactly its
    ids from its start on, ids before the start and other names stay, a kept id stays."""
    held = {f"s{n}#{i}" for n, (_, length) in enumerate(runs) for i in range(length)}
    held |= {"s0", "other#0"}
    kept = {f"s{n}#{runs[n][0]}" for n in keep if n < len(runs)}
    index = _Ids(set(held))
    total = await delete_runs(index.delete, {f"s{n}#": start for n, (start, _) in
                                             enumerate(runs)}, keep=kept)
    expected = {f"s{n}#{i}" for n, (start, length) in enumerate(runs)
                if f"s{n}#{start}" not in kept for i in range(start, length)}
    assert index.ids == held - expected and total == len(expected)


async def test_runs_that_all_go_on_are_asked_for_in_calls_of_bounded_size() -> None:
    """2,000 documents of 300 chunks each: a window of 256 ids per document would be
    512,000 ids in one call; the group is split so that none asks for more than 2^18."""
    index = _Ids({f"d{n}#{i}" for n in range(2000) for i in range(300)})
    assert await delete_runs(index.delete, {f"d{n}#": 0 for n in range(2000)}) == 600_000
    assert not index.ids and max(index.asked) <= (1 << 18) + 1


# The patterns as they were before they were made possessive: the reference the rewritten
# ones must agree with (they backtracked quadratically on a long run with no match).
_OLD_SPACE = r"[^\S\n\r\v\f\x1c-\x1e\x85\u2028\u2029]*"
_OLD_CITATION = re.compile(
    rf"[\[\uff3b\u3010]({_OLD_SPACE}\^?{_OLD_SPACE}\d+{_OLD_SPACE})[\]\uff3d\u3011]")
_OLD_PARTS = re.compile(r"(?P<head>[^:]*://)(?:(?P<user>[^/?#@:]*)(?P<colon>:?)[^/?#@]*@)?"
                        r"(?P<rest>[^?#]*)(?P<query>\?[^#]*)?(?P<fragment>#.*)?", re.DOTALL)


@given(st.text(alphabet="[]［］【】^ \t\n12٣a", max_size=40))
def test_citation_pattern_matches_what_it_matched_before(text: str) -> None:
    assert [m.span(1) for m in _untrusted._CITATION.finditer(text)] == \
        [m.span(1) for m in _OLD_CITATION.finditer(text)]


@given(st.text(alphabet="ab:/?#@%. ", max_size=40))
def test_url_parts_pattern_matches_what_it_matched_before(text: str) -> None:
    url = f"https://{text}"
    new, old = _secrets._PARTS.match(url), _OLD_PARTS.match(url)
    assert new is not None and old is not None and new.groupdict() == old.groupdict()


def test_long_runs_are_one_pass_for_the_prompt_and_log_rewriters() -> None:
    """A bracket before 200,000 spaces (a PDF's layout) took the citation neutraliser
    minutes (every split of the spaces between two optional runs was tried), as did a
    200,000-character URL with no ``@`` for the URL masker of logs and errors. Run in a
    child process: finishing within a minute is the check (it took ~7 min and ~2 min)."""
    script = ("from aieng_hookspecs import neutralize_citations\n"
              "from aieng_hookspecs._secrets import masked_url\n"
              "text = '[' + ' ' * 200_000 + 'x'\n"
              "assert neutralize_citations(text) == text\n"
              "url = 'http://' + 'a' * 200_000\n"
              "assert masked_url(url) == url\n")
    done = subprocess.run([sys.executable, "-c", script], timeout=60, check=False,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
