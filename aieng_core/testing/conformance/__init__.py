"""Conformance suites: one per role, for any plugin to run against its components.

Subclass the suite of a component's role in a test file and give one fixture,
``component`` (the instance under test); the suite's tests then run against it through a
pipeline of the kit's isolated kernel::

    import pytest
    from aieng_core.testing.conformance import RetrieverSuite

    class TestMyIndex(RetrieverSuite):
        @pytest.fixture
        def component(self, tmp_path):
            return MyIndex(path=tmp_path)

Suites declare further fixtures with defaults that a subclass may override (for example
``RetrieverSuite.corpus``, ``ToolSuite.tool_examples``, ``QuantizerSuite.model_path``);
each suite's docstring lists its own (``MemorySuite`` and
``AgentPolicySuite`` also take ``companions``: the other components of their pipelines,
such as an embedder or a backend). The suites are named ``*Suite``, so pytest collects
them only through a ``Test*`` subclass. Each suite's ``check_*`` methods hold its checks,
for use in a plugin's own tests too.
"""

from ._backend import BackendSuite
from ._cache import CacheSuite
from ._fuser import FuserSuite
from ._guardrail import GuardrailSuite
from ._judge import JudgeSuite, ScoreRanges
from ._memory import DEFAULT_FACTS, MemorySuite
from ._policy import DEFAULT_TOOLS, AgentPolicySuite, default_agent_states
from ._quantizer import QuantizerSuite
from ._reranker import RerankerSuite
from ._retriever import DEFAULT_CORPUS, TRICKY_QUERIES, RetrieverSuite
from ._router import RouterSuite
from ._tool import ToolSuite

__all__ = [
    "DEFAULT_CORPUS",
    "DEFAULT_FACTS",
    "DEFAULT_TOOLS",
    "TRICKY_QUERIES",
    "AgentPolicySuite",
    "BackendSuite",
    "CacheSuite",
    "FuserSuite",
    "GuardrailSuite",
    "JudgeSuite",
    "MemorySuite",
    "QuantizerSuite",
    "RerankerSuite",
    "RetrieverSuite",
    "RouterSuite",
    "ScoreRanges",
    "ToolSuite",
    "default_agent_states",
]
