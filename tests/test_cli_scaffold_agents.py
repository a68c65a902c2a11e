"""``aieng plugin new --role memory`` and ``--role policy``: the generated components pass
their suites' checks as generated, in this process (``test_cli_scaffold`` also runs the
generated packages' own tests, in a subprocess)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from aieng_core.cli._scaffold import ROLES, render
from aieng_core.kernel import Kernel
from aieng_core.testing.conformance import (
    DEFAULT_FACTS,
    AgentPolicySuite,
    MemorySuite,
    default_agent_states,
)
from aieng_core.testing.doubles import ScriptedBackend

pytestmark = pytest.mark.anyio


def _load(role: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """Write the package of ``role`` into ``folder`` and import its module."""
    name = f"gen-{role}"
    for relative, text in render(name, role).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    module_name = f"aieng_gen_{role}"
    monkeypatch.syspath_prepend(str(folder))
    try:
        yield importlib.import_module(module_name)
    finally:
        sys.modules.pop(module_name, None)


@pytest.fixture
def memory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The generated memory package's module."""
    yield from _load("memory", tmp_path, monkeypatch)


@pytest.fixture
def policy_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The generated policy package's module."""
    yield from _load("policy", tmp_path, monkeypatch)


def test_both_roles_are_offered() -> None:
    """The two roles name their suites; their tests subclass them."""
    assert (ROLES["memory"].suite, ROLES["policy"].suite) == ("MemorySuite", "AgentPolicySuite")
    for role, suite in (("memory", "MemorySuite"), ("policy", "AgentPolicySuite")):
        files = render("x", role)
        assert f"class TestXConformance({suite}):" in files["tests/test_x.py"]
        assert f"X{ROLES[role].suffix}" in files["aieng_x/__init__.py"]


async def test_the_generated_memory_recalls_what_it_stored(
        aieng_kernel: Kernel, memory_module: ModuleType) -> None:
    """The generated memory passes the suite's recall, ranking, duplicate and concurrency
    checks as generated."""
    suite = MemorySuite()
    memory = memory_module.GenMemoryMemory(memory_module.GenMemoryOptions())
    pipeline = suite.compose(aieng_kernel, memory)
    suite.test_hookimpls_validate(memory)
    await suite.test_an_empty_memory_recalls_nothing(pipeline, DEFAULT_FACTS)
    await suite.test_recalls_what_was_stored(pipeline, DEFAULT_FACTS, "long")
    await suite.test_the_best_match_comes_first(pipeline, "short")
    await suite.test_storing_a_text_twice(pipeline, "long")
    await suite.test_concurrent_stores_lose_nothing(pipeline, "long")


async def test_the_generated_policy_decides_valid_actions(
        aieng_kernel: Kernel, policy_module: ModuleType) -> None:
    """The generated policy passes the suite's action, no-tools, last-step and determinism
    checks (it declares ``deterministic = True``), and runs in an agent."""
    suite = AgentPolicySuite()
    policy = policy_module.GenPolicyPolicy(policy_module.GenPolicyOptions())
    assert policy.deterministic is True
    states = default_agent_states()
    companions = {"llm": ScriptedBackend(lambda request: "done")}
    pipeline = suite.compose(aieng_kernel, policy, others=companions)
    suite.test_hookimpls_validate(policy)
    await suite.test_steps_the_states(pipeline, states)
    await suite.test_no_tools_no_tool_calls(pipeline, states)
    await suite.test_the_last_step_is_handled(pipeline, states)
    await suite.test_deterministic_policies_repeat(aieng_kernel, policy, pipeline, companions,
                                                   states, None, 0)
    decided = [await suite.step(pipeline, state) for state in states]
    assert any(a is not None and a.kind == "tool_calls" for a in decided), (
        "the generated policy never calls its tool: the suite checks none of its calls")
    await suite.test_decides_in_an_agent_run(aieng_kernel, policy, companions)
