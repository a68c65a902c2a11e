"""What the registry knows about plugins and components (frozen records)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, Literal

import attrs

from aieng_hookspecs import PROJECT

__all__ = ["ComponentInfo", "PluginInfo", "hooks_of", "spec_names", "unmarked_hooks"]

PluginStatus = Literal["loaded", "broken", "disabled"]
_IMPL_ATTR = f"{PROJECT}_impl"


@attrs.frozen
class ComponentInfo:
    """A component a plugin offers.

    :param name: the registered name pipeline files ``use``.
    :param factory: the class or callable that builds it.
    :param options: the attrs class of its typed options, or ``None`` when it takes none.
    :param plugin: the plugin that registered it.
    :param distribution: the distribution that installed that plugin (``aieng-bm25 0.1.0``).
    """

    name: str
    factory: Callable[..., object]
    options: type[Any] | None
    description: str
    plugin: str
    distribution: str

    @property
    def hooks(self) -> tuple[str, ...]:
        """The role hooks the component's class implements (read from its markers)."""
        return hooks_of(self.factory)

    def build(self, options: Any = None) -> object:
        """A new instance: with ``options`` (an instance of :attr:`options`; ``None``: its
        defaults); a component without options is called with none."""
        if self.options is None:
            return self.factory()
        return self.factory(self.options() if options is None else options)


@attrs.frozen
class PluginInfo:
    """One plugin as the registry loaded it (or failed to).

    :param name: the entry-point name (``builtin`` for the kernel's own).
    :param distribution: the distribution name, empty when unknown.
    :param version: the distribution's version, empty when unknown.
    :param status: ``loaded``, ``broken`` (it raised; see ``error``) or ``disabled``
        (by ``AIENG_PLUGINS`` / ``AIENG_DISABLE_PLUGINS``).
    :param error: for a broken plugin, the error, with its type.
    :param warning: for a loaded plugin, what may go wrong: its distribution was made for
        another version of the contract (``aieng-hookspecs``).
    :param components: the components it registered.
    :param hooks: the hooks it implements: module-level ones and those of its components.
    """

    name: str
    distribution: str = ""
    version: str = ""
    status: PluginStatus = "loaded"
    error: str = ""
    components: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()
    warning: str = ""

    @property
    def dist_label(self) -> str:
        """``distribution version``, or the plugin name when the distribution is unknown."""
        if not self.distribution:
            return self.name
        return f"{self.distribution} {self.version}".strip()

    def to_json(self) -> dict[str, Any]:
        """The plain form ``aieng plugins --json`` prints."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "components": list(self.components),
            "hooks": list(self.hooks),
            "status": self.status,
            "error": self.error or None,
            "warning": self.warning or None,
        }


def hooks_of(obj: object) -> tuple[str, ...]:
    """Names of the hooks marked with ``@hookimpl`` on a class, instance or module."""
    names = []
    for attr in dir(obj):
        if not attr.startswith(f"{PROJECT}_"):
            continue
        try:
            member = getattr(obj, attr)
        except Exception:  # a property that raises is no hook
            continue
        opts = getattr(member, _IMPL_ATTR, None)
        if isinstance(opts, dict):
            names.append(opts.get("specname") or attr)
    return tuple(sorted(names))


def spec_names(modules: Iterable[ModuleType]) -> frozenset[str]:
    """The names of the hook specs declared in ``modules``."""
    return frozenset(name for module in modules for name in dir(module)
                     if isinstance(getattr(getattr(module, name), f"{PROJECT}_spec", None),
                                   dict))


def unmarked_hooks(obj: object, specs: Iterable[str]) -> tuple[str, ...]:
    """Callables on ``obj`` named like one of ``specs`` but without ``@hookimpl``: pluggy
    ignores them, so the hook they were written for is never called."""
    marked = set(hooks_of(obj))
    found = []
    for name in sorted(set(specs) - marked):
        try:
            member = getattr(obj, name, None)
        except Exception:  # a property that raises is no hook
            member = None
        if callable(member):
            found.append(name)
    return tuple(found)
