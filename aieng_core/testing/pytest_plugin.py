"""The kit's pytest plugin (entry point ``pytest11``): fixtures for aieng tests.

Fixtures (async ones need the test to run under anyio: ``@pytest.mark.anyio``):

- ``aieng_kernel``: a started, isolated kernel (built-ins only, no environment).
- ``register_plugin``: ``with register_plugin(plugin, name):`` registers on ``aieng_kernel``
  for the block and always unregisters.
- ``hook_recorder``: a :class:`HookRecorder` on ``aieng_kernel``.
- ``captured_events``: an :class:`EventCapture` on ``aieng_kernel``.
- ``usual_umask``: the process's umask 022 for the test (new files 0644, readable by all
  unless a component makes them otherwise), then restored: a privacy test then means
  the same on any machine.

Every test also gets structlog's configuration put back as it was before the test: the
``aieng`` CLI configures logging process-wide, and one test invoking it must not change
which log lines the next test sees. Likewise the ``aieng`` command group forgets the
commands plugins added during a test: the next test's kernel (other plugins) adds its own.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import structlog

from ..kernel import Kernel
from ..registry import PluginInfo
from ._kit import EventCapture, HookRecorder, isolated_kernel, registered
from .processes import umask


@pytest.fixture(autouse=True)
def _aieng_keep_logging_config() -> Iterator[None]:
    """Restore structlog's configuration after each test (CLI runs reconfigure it)."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(autouse=True)
def _aieng_forget_cli_plugins() -> Iterator[None]:
    """After each test, the ``aieng`` group forgets its plugins' commands (a test that ran
    it on a kernel with few plugins must not leave the next one without, say, ``keys``)."""
    yield
    app = sys.modules.get("aieng_core.cli._app")  # never imported here: only if a test did
    root = getattr(app, "cli", None)
    if root is not None and hasattr(root, "forget_plugins"):
        root.forget_plugins()


@pytest.fixture
async def aieng_kernel() -> AsyncIterator[Kernel]:
    """A started kernel isolated from installed plugins and the environment."""
    async with isolated_kernel() as kernel:
        yield kernel


@pytest.fixture
def register_plugin(
    aieng_kernel: Kernel,
) -> Callable[..., AbstractContextManager[PluginInfo]]:
    """``register_plugin(plugin, name)``: a context manager registering for one block."""

    def register(plugin: object, name: str, **kwargs: Any) -> AbstractContextManager[PluginInfo]:
        return registered(aieng_kernel, plugin, name, **kwargs)

    return register


@pytest.fixture
def hook_recorder(aieng_kernel: Kernel) -> Iterator[HookRecorder]:
    """Records the hook impl calls of ``aieng_kernel``'s pipelines."""
    recorder = HookRecorder(aieng_kernel)
    yield recorder
    recorder.close()


@pytest.fixture
def captured_events(aieng_kernel: Kernel) -> Iterator[EventCapture]:
    """Captures every event published on ``aieng_kernel``'s bus."""
    capture = EventCapture(aieng_kernel)
    yield capture
    capture.close()


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask 022 for the test, then the one before."""
    with umask(0o022):
        yield
