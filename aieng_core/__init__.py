"""aieng's kernel: registry, dispatcher, event bus, pipelines and the CLI.

Everything hangs off a :class:`Kernel`; nothing happens at import time::

    import anyio
    from aieng_core import Kernel

    async def main() -> None:
        async with Kernel() as kernel:
            pipeline = kernel.load_pipeline("examples/pipelines/docs-qa.toml")
            result = await pipeline.run("How do I write a plugin?")
            print(result.answer)

    anyio.run(main)
"""

from ._errors import (
    AiengError,
    ConfigError,
    DuplicateComponentError,
    HookError,
    PluginLoadError,
    UnknownComponentError,
)
from .bus import EventBus, SubscriberStats, Subscription
from .dispatch import Dispatcher, ImplCall, StagePolicy
from .fusion import reciprocal_rank_fusion
from .kernel import Kernel
from .pipeline import STAGES, Pipeline, PipelineConfig, RunResult, RunStream, StageRecord
from .registry import ComponentInfo, PluginInfo, Registry

__all__ = [
    "STAGES",
    "AiengError",
    "ComponentInfo",
    "ConfigError",
    "Dispatcher",
    "DuplicateComponentError",
    "EventBus",
    "HookError",
    "ImplCall",
    "Kernel",
    "Pipeline",
    "PipelineConfig",
    "PluginInfo",
    "PluginLoadError",
    "Registry",
    "RunResult",
    "RunStream",
    "StagePolicy",
    "StageRecord",
    "SubscriberStats",
    "Subscription",
    "UnknownComponentError",
    "__version__",
    "reciprocal_rank_fusion",
]

__version__ = "0.1.0"
