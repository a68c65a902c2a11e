"""The ``long-memory`` and ``react`` components pass the kit's memory and policy suites."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from aieng_agents import MemoryOptions, ReActPolicy, SearchTool, SQLiteMemory
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Document, Hit, Query, Request

from aieng_core import Kernel, Pipeline
from aieng_core.testing import ScriptedBackend
from aieng_core.testing.conformance import AgentPolicySuite, MemorySuite, ToolSuite


class TestLongMemoryInProcess(MemorySuite):
    """``long-memory`` without a file, recalling by word overlap (no embedder)."""

    @pytest.fixture
    def component(self) -> SQLiteMemory:
        """An empty in-process memory."""
        return SQLiteMemory(MemoryOptions(embeddings=False))


class TestLongMemoryFile(MemorySuite):
    """``long-memory`` on a SQLite file in WAL mode: its file is closed with the pipeline."""

    @pytest.fixture
    def component(self, tmp_path: Path) -> SQLiteMemory:
        """An empty memory in a new file."""
        return SQLiteMemory(MemoryOptions(path=str(tmp_path / "memory.sqlite")))


class TestLongMemoryEmbedding(MemorySuite):
    """``long-memory`` ranking by the embeddings of a pipeline's embedder."""

    @pytest.fixture
    def component(self) -> SQLiteMemory:
        """An empty in-process memory that embeds."""
        return SQLiteMemory(MemoryOptions())

    @pytest.fixture
    def companions(self) -> Mapping[str, object]:
        """An embedder double whose words never share a dimension (a hashed one's do, now
        and then, and a collision with the suite's marker word ties unrelated items)."""
        return {"embed": WordEmbedder()}


class WordEmbedder:
    """An embedding double: a bag of lower-cased words, each word its own dimension in the
    order this instance first met it (up to 8,192 distinct words), L2-normalized. Unlike
    ``HashEmbedder`` two texts sharing no word always have cosine 0."""

    dimensions = 8192

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for word in text.lower().split():
            at = self.index.setdefault(word, len(self.index))
            if at >= self.dimensions:
                raise RuntimeError(f"WordEmbedder holds {self.dimensions} words at most")
            vector[at] += 1.0
        norm = sum(x * x for x in vector) ** 0.5
        return [x / norm for x in vector] if norm else vector

    @hookimpl
    def aieng_embed(self, texts: list[str], model: str | None) -> list[list[float]]:
        return [self.vector(text) for text in texts]


_TOOLS = re.compile(r"one of \[([^\]]*)\]")


def confused_model(request: Request) -> str:
    """A ReAct model that always acts: on the first tool its prompt lists, else (a prompt
    with no tools) on a tool it was never offered; its reply depends on the request only."""
    listed = _TOOLS.search(request.messages[0].content)
    name = listed.group(1).split(", ")[0] if listed else "calculate"
    return f"Thought: I use a tool.\nAction: {name}\nAction Input: {json.dumps({'x': 1})}"


class TestReActConformance(AgentPolicySuite):
    """``react`` with a backend that answers in the format, and one that never does."""

    @pytest.fixture
    def component(self) -> ReActPolicy:
        """The policy with its default options (greedy: temperature 0)."""
        return ReActPolicy()

    @pytest.fixture
    def companions(self) -> Mapping[str, object]:
        """A model acting on the tools it is offered, and on one it is not when offered
        none."""
        return {"llm": ScriptedBackend(confused_model)}

    @pytest.fixture
    def policy_factory(self) -> Callable[[int], object]:
        """Fresh policies: greedy, they decide alike with one backend (no seed to take)."""
        return lambda seed: ReActPolicy()


class TestReActFreeText(AgentPolicySuite):
    """``react`` with the suite's default backend, which ignores the format: its replies
    become answers after the retry."""

    @pytest.fixture
    def component(self) -> ReActPolicy:
        """The policy with its default options."""
        return ReActPolicy()


class OnePassage:
    """A retriever double: one passage whatever the query."""

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        return [Hit(Document("p1", "Plugins register components."), score=1.0)]


class TestSearchTool(ToolSuite):
    """``search`` over a retriever double (its behaviour over a real index is in
    tests/test_agent_rag.py)."""

    @pytest.fixture
    def component(self) -> SearchTool:
        """The tool with its defaults."""
        return SearchTool()

    @pytest.fixture
    async def conformance_pipeline(self, aieng_kernel: Kernel, component: object
                                   ) -> Pipeline:
        """The tool and a retriever to search."""
        return self.compose(aieng_kernel, component, others={"docs": OnePassage()})

    @pytest.fixture
    def tool_examples(self) -> dict[str, dict[str, object]]:
        return {"search": {"query": "how do plugins register components?"}}


class TestLongMemoryFileOnTrio(TestLongMemoryFile):
    """The file-backed memory's suite again under trio (a host's ``anyio.run(main,
    backend="trio")``): its worker threads are trio's, its file closed all the same."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "trio"


class TestSearchToolOnTrio(TestSearchTool):
    """The ``search`` tool's suite again under trio."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "trio"
