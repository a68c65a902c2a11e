"""The plugin module: registration, and pipelines built from configuration."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import aieng_agents
import pytest
from aieng_agents import CalculatorTool, ClockTool, ReActPolicy, SQLiteMemory
from aieng_hookspecs.types import MemoryItem, Query, ToolCall

from aieng_core import ConfigError, Kernel
from aieng_core.registry import PluginInfo

Register = Callable[..., AbstractContextManager[PluginInfo]]


@pytest.mark.anyio
async def test_the_plugin_registers_its_components(aieng_kernel: Kernel,
                                                   register_plugin: Register) -> None:
    """Registered through its module, the plugin loads and offers its four components."""
    with register_plugin(aieng_agents, "agents") as info:
        assert info.status == "loaded", info.error
        assert sorted(info.components) == ["calculator", "clock", "long-memory", "react", "search"]
        components = aieng_kernel.registry.components
        assert components["calculator"].factory is CalculatorTool
        assert components["clock"].factory is ClockTool
        assert components["long-memory"].factory is SQLiteMemory
        assert components["react"].factory is ReActPolicy


@pytest.mark.anyio
async def test_a_configured_pipeline_builds_them_with_their_options(
        aieng_kernel: Kernel, register_plugin: Register, tmp_path: Path) -> None:
    """A pipeline's tables set the typed options; a wrong option fails the load."""
    path = str(tmp_path / "memory.sqlite")
    config = {"pipeline": {"name": "agent"}, "components": {
        "calc": {"use": "calculator", "max_digits": 20},
        "clock": {"use": "clock", "timezone": "Asia/Tokyo"},
        "memory": {"use": "long-memory", "path": path, "namespace": "u1"},
        "policy": {"use": "react", "retries": 2}}}
    with register_plugin(aieng_agents, "agents"):
        async with aieng_kernel.pipeline(config) as pipeline:
            found = await pipeline.dispatcher.first(
                "aieng_call_tool", {"call": ToolCall(id="1", name="calculate",
                                                     arguments={"expression": "10**30"})},
                stage="tools")
            assert found is not None and found[0].is_error
            await pipeline.dispatcher.gather(
                "aieng_memory_store", {"items": [MemoryItem(text="likes tea", kind="long")]},
                stage="memory")
            recalled = await pipeline.dispatcher.gather(
                "aieng_memory_recall", {"query": Query(text="tea", filters={"namespace": "u1"}),
                                        "k": 3}, stage="memory")
            assert [item.text for items, _ in recalled for item in items] == ["likes tea"]
        bad = {"pipeline": {"name": "bad"},
               "components": {"clock": {"use": "clock", "timezone": "Nowhere/Town"}}}
        with pytest.raises(ConfigError, match="unknown time zone"):
            aieng_kernel.pipeline(bad)
