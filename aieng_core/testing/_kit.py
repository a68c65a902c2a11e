"""The testing kit's building blocks: an isolated kernel, registration, recorders."""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import anyio
from aieng_hookspecs.types import Event

from ..dispatch import ImplCall
from ..kernel import Kernel
from ..registry import PluginInfo
from ._keep import kept_bound, trim_kept

__all__ = ["EventCapture", "HookRecorder", "isolated_kernel", "kernel_with", "registered",
           "settle"]

E = TypeVar("E", bound=Event)


@asynccontextmanager
async def isolated_kernel(
    *, builtins: bool = True, loop_block_threshold: float | None = 0.1, **kwargs: Any
) -> AsyncIterator[Kernel]:
    """A started kernel that sees no installed plugins and no environment variables.

    :param builtins: keep the kernel's built-in components.
    :param loop_block_threshold: the watchdog's threshold (tighter than production).
    """
    kwargs.setdefault("env", {})
    kwargs.setdefault("entry_points", [])
    async with Kernel(builtins=builtins, loop_block_threshold=loop_block_threshold,
                      **kwargs) as kernel:
        yield kernel


async def settle(done: Callable[[], bool], *, limit: float = 10.0) -> None:
    """Let the event loop run (the bus deliver, callbacks finish) until ``done()`` holds;
    fails with ``TimeoutError`` after ``limit`` seconds (a bound on a hang, not a speed
    check: it returns as soon as ``done()`` holds). Waiting for a condition, not a fixed
    sleep, keeps a test right on a loaded machine.

    :raises TimeoutError: naming ``done`` and the limit (it was a bare ``TimeoutError``).
    """
    try:
        with anyio.fail_after(limit):
            while not done():
                await anyio.sleep(0.005)
    except TimeoutError:
        name = getattr(done, "__qualname__", repr(done))
        raise TimeoutError(f"settle: {name}() did not hold within {limit:g} s (limit=): "
                           "what it waits for never happened, or give a larger limit") from None


@contextmanager
def registered(kernel: Kernel, plugin: object, name: str, *, distribution: str = "",
               version: str = "") -> Iterator[PluginInfo]:
    """Register a plugin for the duration of a ``with`` block, then always unregister it.

    A plugin that fails to load is yielded as broken (``info.status == "broken"``), as the
    registry records it, so tests can assert on the error.
    """
    kernel.load()
    info = kernel.registry.register(plugin, name=name, distribution=distribution,
                                    version=version)
    try:
        yield info
    finally:
        if name in {p.name for p in kernel.registry.plugins}:
            kernel.registry.unregister(name)


def kernel_with(components: Mapping[str, Callable[..., object]], *,
                plugins: str = "builtin", name: str = "test_components") -> Kernel:
    """A loaded kernel (not started) offering ``components`` by name, for a pipeline file
    that names them: the CLI's tests give it as ``obj={"kernel": ...}``.

    :param components: component name → factory (a class, or a function returning the
        instance: ``lambda: ScriptedBackend([...])``).
    :param plugins: ``AIENG_PLUGINS`` of the kernel (``"builtin"``: only the built-ins
        besides these components; installed plugins are not loaded).
    :param name: the name of the plugin that registers them.
    """
    import types

    from aieng_hookspecs import ComponentRegistry, hookimpl

    @hookimpl
    def aieng_register_components(registry: ComponentRegistry) -> None:
        for component, factory in components.items():
            registry.add(component, factory)

    plugin = types.ModuleType(name)
    plugin.aieng_register_components = aieng_register_components  # type: ignore[attr-defined]
    kernel = Kernel(env={"AIENG_PLUGINS": plugins}, loop_block_threshold=None).load()
    kernel.registry.register(plugin, name=name)
    return kernel


class HookRecorder:
    """Records every hook impl call of a kernel's pipelines (through the dispatcher).

    :param keep: how many of the latest calls :attr:`records` holds (``None``, the default:
        every one, as a test reads them). A recorder kept through thousands of runs (a test
        of what a long-running process retains) gives a bound, or it is what grows;
        :attr:`count` counts every call either way.
    """

    def __init__(self, kernel: Kernel, *, keep: int | None = None) -> None:
        self.keep = kept_bound(keep)
        self.records: list[ImplCall] = []
        #: how many calls it saw, all told.
        self.count = 0
        self._remove = kernel.add_hook_monitor(self._record)

    def _record(self, call: ImplCall) -> None:
        self.count += 1
        self.records.append(call)
        trim_kept(self.records, self.keep)

    def calls(self, hook: str | None = None, *, plugin: str | None = None) -> list[ImplCall]:
        """The recorded calls, optionally of one hook and one plugin (component)."""
        return [c for c in self.records
                if (hook is None or c.hook == hook) and (plugin is None or c.plugin == plugin)]

    def order(self, hook: str) -> list[str]:
        """The plugins called for ``hook``, in call order."""
        return [c.plugin for c in self.calls(hook)]

    def close(self) -> None:
        """Stop recording."""
        self._remove()


class EventCapture:
    """Every event published on a kernel's bus, captured synchronously as it is published.

    It wraps ``bus.publish`` rather than subscribing, so nothing is ever dropped or late:
    what a test reads is exactly what the bus was given, in order.

    :param keep: how many of the latest events :attr:`events` holds (``None``, the default:
        every one). A capture kept through thousands of runs (a test of what a long-running
        process retains) gives a bound, or it is what grows; :attr:`count` counts every
        event either way.
    """

    def __init__(self, kernel: Kernel, *, keep: int | None = None) -> None:
        self.keep = kept_bound(keep)
        self.events: list[Event] = []
        #: how many events it saw, all told.
        self.count = 0
        bus = kernel.bus
        original = bus.publish  # the kernel always publishes through bus.publish, late-bound

        def publish(event: Event, source: object | None = None) -> None:
            self.count += 1
            self.events.append(event)
            trim_kept(self.events, self.keep)
            original(event, source)

        bus.publish = publish  # type: ignore[method-assign]
        self._bus = bus
        self._original = original

    def names(self, pattern: str = "*") -> list[str]:
        """Names of the captured events matching a shell-style pattern, in order."""
        return [e.name for e in self.events if fnmatch.fnmatchcase(e.name, pattern)]

    def of(self, kind: type[E]) -> list[E]:
        """Captured events of one type, in order."""
        return [e for e in self.events if isinstance(e, kind)]

    def for_run(self, run_id: str) -> Sequence[Event]:
        """Captured events of one run, in order."""
        return [e for e in self.events if e.run_id == run_id]

    def close(self) -> None:
        """Stop capturing."""
        self._bus.publish = self._original  # type: ignore[method-assign]
