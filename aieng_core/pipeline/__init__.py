"""Pipelines: TOML configuration, the request lifecycle stages, runs and their results."""

from ._config import INSTANCE, STAGE_HOOKS, STAGES, ComponentConfig, PipelineConfig, StageConfig
from ._indexing import Indexed
from ._pipeline import Pipeline
from ._result import RunResult, StageRecord, event_to_json, finite_json, to_jsonable
from ._run_stream import RunStream

__all__ = [
    "INSTANCE",
    "STAGES",
    "STAGE_HOOKS",
    "ComponentConfig",
    "Indexed",
    "Pipeline",
    "PipelineConfig",
    "RunResult",
    "RunStream",
    "StageConfig",
    "StageRecord",
    "event_to_json",
    "finite_json",
    "to_jsonable",
]
