"""Counting with a local Hugging Face tokenizer: lazy loading, exact budgets, clear errors.

The tokenizer is a tiny word-level one built here with the ``tokenizers`` package, so
nothing is downloaded and no model is needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from aieng_context import ContextBuilder, ContextOptions, load_tokenizer
from aieng_hookspecs.types import Query
from context_helpers import ask, context_block, make_hits

from aieng_core import HookError, Kernel

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture
def tokenizer_dir(tmp_path: Path) -> Path:
    """A model folder holding a word-level tokenizer.json that splits words and runs of
    punctuation, and that is saved with truncation to 5 tokens (which counting undoes)."""
    vocab = {"[UNK]": 0, "alpha": 1, "beta": 2}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.enable_truncation(max_length=5)
    folder = tmp_path / "model"
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def test_counts_with_the_tokenizer(tokenizer_dir: Path) -> None:
    """A folder or its tokenizer.json gives the tokenizer's exact count, never truncated."""
    for path in (tokenizer_dir, tokenizer_dir / "tokenizer.json"):
        count = load_tokenizer(str(path))
        assert count("alpha beta, gamma!!") == 5  # alpha beta , gamma !!
        assert count("alpha " * 40) == 40


def test_loaded_lazily_and_budget_exact(tokenizer_dir: Path) -> None:
    """Building the component reads nothing; the first build loads the tokenizer, and the
    context stays under the budget by the tokenizer's count."""
    builder = ContextBuilder(ContextOptions(tokenizer_path=str(tokenizer_dir),
                                            max_context_tokens=60, min_passage_tokens=5))
    assert builder._count is None  # nothing loaded yet
    built = builder.build(Query("q"), make_hits("alpha " * 30, "beta " * 30, "gamma"), ask())
    count = load_tokenizer(str(tokenizer_dir))
    assert count(context_block(built.prompt)) == \
        built.metadata["context_build"]["context_tokens"] <= 60
    assert [p["cut"] for p in built.metadata["context"]] == [False, True]
    assert built.metadata["context_build"]["tokenizer"] == str(tokenizer_dir)


def test_missing_path_says_what_to_do(tmp_path: Path) -> None:
    """A path that does not exist fails with a message saying what to point to."""
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(str(tmp_path / "nowhere"))


def test_folder_without_tokenizer_json(tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder without tokenizer.json, with transformers unavailable, fails clearly."""
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(FileNotFoundError, match="holds no tokenizer.json"):
        load_tokenizer(str(tmp_path))


def test_not_a_tokenizer_file(tmp_path: Path) -> None:
    """A file that is no tokenizer fails with a ValueError naming it."""
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="not a Hugging Face tokenizer file"):
        load_tokenizer(str(bad))


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_pipeline_counts_in_a_worker_thread(aieng_kernel: Kernel,
                                                  tokenizer_dir: Path) -> None:
    """In a pipeline the tokenizer loads when the pipeline opens and the build runs
    through the async hook; a bad path fails the opening, naming the component."""
    builder = ContextBuilder(ContextOptions(tokenizer_path=str(tokenizer_dir)))
    pipeline = aieng_kernel.compose({"ctx": builder}, stages=["context"])
    async with pipeline:
        assert builder._count is not None
        result = await pipeline.run("alpha?")
    assert result.request.metadata["question"] == "alpha?"
    broken = aieng_kernel.compose(
        {"ctx": ContextBuilder(ContextOptions(tokenizer_path="/nonexistent/model"))},
        stages=["context"], name="broken")
    with pytest.raises(HookError, match="ctx") as caught:
        async with broken:
            pass
    assert "tokenizer_path" in str(caught.value) or "tokenizer_path" in repr(
        caught.value.__cause__)


def test_counts_text_holding_surrogates(tokenizer_dir: Path) -> None:
    """Text decoded with ``surrogatepass`` or ``surrogateescape`` (a surrogate pair, a lone
    surrogate) is counted, as the character it stands for or as one unknown character,
    instead of failing the build with the tokenizer's "TextInputSequence must be str"."""
    count = load_tokenizer(str(tokenizer_dir))
    assert count("alpha \ud83d\ude00 beta") == count("alpha \U0001f600 beta") == 3
    assert count("alpha \udcff beta") == count("alpha \ufffd beta") == 3
    builder = ContextBuilder(ContextOptions(tokenizer_path=str(tokenizer_dir),
                                            max_context_tokens=40, min_passage_tokens=1))
    built = builder.build(Query("q"), make_hits("alpha \udcff " * 30), ask())
    assert built.metadata["context"][0]["cut"]
    assert count(context_block(built.prompt)) <= 40
