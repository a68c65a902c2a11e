"""aieng's testing kit: fixtures, strategies and conformance suites for plugins.

The fixtures come through the pytest plugin (entry point ``pytest11``), so any project with
aieng installed can use ``aieng_kernel``, ``register_plugin``, ``hook_recorder`` and
``captured_events``. The building blocks are importable for use outside pytest.
"""

from ._kit import EventCapture, HookRecorder, isolated_kernel, kernel_with, registered, settle
from .conformance._resources import open_files
from .doubles import FixedRouter, HashEmbedder, ManualClock, PromptCache, ScriptedBackend
from .machine import SmallDisk, can_mount_tmpfs, run_limited, small_disk
from .processes import (
    can_unshare_mounts,
    hang_guard,
    race_processes,
    read_only,
    run_on_read_only_mount,
    sqlite_layout,
    umask,
)
from .steady import Growth, ameasure_growth, measure_growth

__all__ = [
    "EventCapture",
    "FixedRouter",
    "Growth",
    "HashEmbedder",
    "HookRecorder",
    "ManualClock",
    "PromptCache",
    "ScriptedBackend",
    "SmallDisk",
    "ameasure_growth",
    "can_mount_tmpfs",
    "can_unshare_mounts",
    "hang_guard",
    "isolated_kernel",
    "kernel_with",
    "measure_growth",
    "open_files",
    "race_processes",
    "read_only",
    "registered",
    "run_limited",
    "run_on_read_only_mount",
    "settle",
    "small_disk",
    "sqlite_layout",
    "umask",
]
