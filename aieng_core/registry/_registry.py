"""The registry: loads each plugin on its own and keeps its components and event types."""

from __future__ import annotations

import importlib.metadata as metadata
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

import attrs
import pluggy
import structlog

from aieng_hookspecs import PROJECT, DocumentReader
from aieng_hookspecs.specs import REGISTRATION_MODULES, ROLE_MODULES
from aieng_hookspecs.types import Event

from .._errors import DuplicateComponentError, PluginLoadError, UnknownComponentError
from ._contract import contract_conflict
from ._discovery import Candidate, discover, matches, selection
from ._info import ComponentInfo, PluginInfo, hooks_of, spec_names, unmarked_hooks

__all__ = ["Registry", "run_registration"]

log = structlog.get_logger(__name__)

_NAME = re.compile(r"[a-z][a-z0-9_.-]*")
_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+")
BUILTIN = "builtin"
_ROLE_SPECS = spec_names(ROLE_MODULES)
_REGISTRATION_SPECS = spec_names(REGISTRATION_MODULES)
#: Role hooks a plugin module cannot implement (``aieng_on_event`` it can: both kinds).
_COMPONENT_ONLY_SPECS = _ROLE_SPECS - _REGISTRATION_SPECS
_UNMARKED_HINT = "without @hookimpl (from aieng_hookspecs), so it would never be called"


class _ComponentAdder:
    """The ``registry`` a plugin's ``aieng_register_components`` receives: stages its adds."""

    def __init__(self, registry: Registry, plugin: str, distribution: str) -> None:
        self._registry = registry
        self._plugin = plugin
        self._distribution = distribution
        self.added: dict[str, ComponentInfo] = {}

    def add(
        self,
        name: str,
        factory: Callable[..., object],
        *,
        options: type[Any] | None = None,
        description: str = "",
    ) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"component name {name!r} must be lower-case letters, digits, '_', '.' or '-'"
            )
        if not callable(factory):
            raise TypeError(f"factory of component {name!r} is not callable: {factory!r}")
        if options is not None and not (isinstance(options, type) and attrs.has(options)):
            raise TypeError(f"options of component {name!r} must be an attrs class, "
                            f"got {options!r}")
        if not isinstance(description, str):
            raise TypeError(f"description of component {name!r} must be a string, "
                            f"got {description!r}")
        if isinstance(factory, type) and (unmarked := unmarked_hooks(factory, _ROLE_SPECS)):
            raise TypeError(f"component {name!r}: " + ", ".join(
                f"{factory.__qualname__}.{hook}" for hook in unmarked) + f" {_UNMARKED_HINT}")
        owner = self._registry._components.get(name) or self.added.get(name)
        if owner is not None:
            raise DuplicateComponentError(
                f"component {name!r} is registered by plugin {owner.plugin!r} "
                f"({owner.distribution or 'no distribution'}) and again by plugin "
                f"{self._plugin!r} ({self._distribution or 'no distribution'}); "
                "disable one with AIENG_DISABLE_PLUGINS"
            )
        self.added[name] = ComponentInfo(
            name=name,
            factory=factory,
            options=options,
            description=description or _first_line(factory.__doc__),
            plugin=self._plugin,
            distribution=self._distribution,
        )


@attrs.frozen
class ReaderInfo:
    """A file format a plugin reads: its suffix, reader and plugin."""

    suffix: str
    reader: DocumentReader
    plugin: str
    description: str = ""


class _ReaderAdder:
    """The ``registry`` a plugin's ``aieng_register_readers`` receives."""

    def __init__(self, registry: Registry, plugin: str) -> None:
        self._registry = registry
        self._plugin = plugin
        self.added: dict[str, ReaderInfo] = {}

    def add(self, suffix: str, reader: DocumentReader, *, description: str = "") -> None:
        if not isinstance(suffix, str) or not re.fullmatch(r"\.[a-z0-9][a-z0-9._-]*", suffix):
            raise ValueError(f"suffix {suffix!r} must be lower case and start with a dot")
        if not callable(reader):
            raise TypeError(f"reader for {suffix!r} is not callable: {reader!r}")
        owner = self._registry._readers.get(suffix) or self.added.get(suffix)
        if owner is not None:
            raise PluginLoadError(f"files {suffix!r} are read by plugin {owner.plugin!r} and "
                                  f"again by plugin {self._plugin!r}; disable one with "
                                  "AIENG_DISABLE_PLUGINS")
        self.added[suffix] = ReaderInfo(suffix, reader, self._plugin, description)


class _EventAdder:
    def __init__(self, registry: Registry, plugin: str) -> None:
        self._registry = registry
        self._plugin = plugin
        self.added: dict[str, type[Event]] = {}

    def add(self, event_type: type[Event]) -> None:
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(f"{event_type!r} is not a subclass of aieng_hookspecs.types.Event")
        name = event_type.name
        if not isinstance(name, str) or not _EVENT_NAME.fullmatch(name):
            raise ValueError(f"event name {name!r} must be dotted lower-case (like 'drift.fired')")
        other = self._registry._event_types.get(name) or self.added.get(name)
        if other is not None and other is not event_type:
            raise PluginLoadError(f"event {name!r} is already declared by {other.__module__}")
        self.added[name] = event_type


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0] if doc and doc.strip() else ""


def _core_events() -> dict[str, type[Event]]:
    from aieng_hookspecs import types

    found: dict[str, type[Event]] = {}
    for attr in types.__all__:
        obj = getattr(types, attr)
        if isinstance(obj, type) and issubclass(obj, Event) and obj is not Event:
            found[obj.name] = obj
    return found


class Registry:
    """Loads plugins one by one; a plugin that raises is recorded as broken, the rest work.

    :param env: the environment to read ``AIENG_PLUGINS`` / ``AIENG_DISABLE_PLUGINS`` from.
    :param entry_points: entry points to load instead of the installed ones (tests).
    :param builtins: whether to load the kernel's built-in components.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        entry_points: Iterable[metadata.EntryPoint] | None = None,
        builtins: bool = True,
    ) -> None:
        self._env: Mapping[str, str] = env if env is not None else {}
        self._entry_points = entry_points
        self._builtins = builtins
        self._pm = pluggy.PluginManager(PROJECT)
        for module in REGISTRATION_MODULES:
            self._pm.add_hookspecs(module)
        self._plugins: dict[str, PluginInfo] = {}
        self._components: dict[str, ComponentInfo] = {}
        self._readers: dict[str, ReaderInfo] = {}
        self._event_types: dict[str, type[Event]] = _core_events()
        self._core_event_names = frozenset(self._event_types)
        self._events_of: dict[str, tuple[str, ...]] = {}  # plugin name -> events it declared
        self._disabled_by: dict[str, str] = {}  # plugin name -> the variable that disabled it
        self._loaded = False
        self._listener: Callable[[str, bool], None] | None = None

    def on_change(self, listener: Callable[[str, bool], None] | None) -> None:
        """Call ``listener(name, loaded)`` after a plugin is registered or unregistered
        (the running kernel uses it to subscribe plugins' ``aieng_on_event``)."""
        self._listener = listener

    # -- loading -------------------------------------------------------------------------

    def load(self) -> None:
        """Discover and load every allowed plugin once; later calls do nothing."""
        if self._loaded:
            return
        self._loaded = True
        allow, block = selection(self._env)
        candidates: list[Candidate] = []
        if self._builtins:
            candidates.append(Candidate(BUILTIN, None, "aieng", _version("aieng")))
        candidates.extend(discover(self._entry_points))
        _warn_unknown_entries(candidates, allow, block)
        for cand in candidates:
            if cand.name in self._plugins:
                # Keep both records: the first plugin stays listed (and loaded); the second
                # is listed as broken under its own key, naming both distributions.
                first = self._plugins[cand.name]
                self._plugins[f"{cand.name} ({cand.distribution or '?'})"] = PluginInfo(
                    cand.name, cand.distribution, cand.version, "broken",
                    f"PluginLoadError: a plugin named {cand.name!r} is already loaded from "
                    f"{first.dist_label}; {cand.distribution or '?'} {cand.version} cannot "
                    "use the same entry-point name")
                continue
            blocked = any(matches(entry, cand) for entry in block)
            if blocked or (allow is not None and not any(matches(e, cand) for e in allow)):
                self._disabled_by[cand.name] = (
                    "AIENG_DISABLE_PLUGINS" if blocked else "AIENG_PLUGINS")
                self._record(PluginInfo(cand.name, cand.distribution, cand.version, "disabled"))
                continue
            try:
                plugin = _load_builtin() if cand.entry_point is None else cand.entry_point.load()
            except (Exception, SystemExit) as exc:  # any import failure disables this plugin only
                self._broken(cand.name, cand.distribution, cand.version, exc)
                continue
            info = self.register(plugin, name=cand.name, distribution=cand.distribution,
                                 version=cand.version)
            if conflict := contract_conflict(cand.distribution, cand.version, cand.requires):
                self._mismatched(info, conflict)

    def _mismatched(self, info: PluginInfo, conflict: str) -> None:
        """Say, on a plugin's record, that it was made for another contract: in a broken
        one's error (the likely cause), as a loaded one's warning (its hooks may be called
        with what it does not expect)."""
        if info.status == "broken":
            self._record(attrs.evolve(info, error=f"{info.error}; {conflict}"))
            return
        log.warning("plugin.contract_mismatch", plugin=info.name, problem=conflict)
        self._record(attrs.evolve(info, warning=conflict))

    def register(
        self, plugin: object, *, name: str, distribution: str = "", version: str = ""
    ) -> PluginInfo:
        """Register one plugin object (a module, usually) and run its registration hooks.

        Never raises for the plugin's own faults: a plugin whose hooks are misspelled or
        whose registration raises is recorded as broken and unregistered.
        """
        if name in self._plugins and self._plugins[name].status == "loaded":
            raise PluginLoadError(f"a plugin named {name!r} is already registered")
        dist_label = f"{distribution} {version}".strip()
        try:
            if (holder := self._pm.get_name(plugin)) is not None:
                raise PluginLoadError(f"{getattr(plugin, '__name__', plugin)!r} is already "
                                      f"loaded as plugin {holder!r}: two entry points name it")
            if unmarked := unmarked_hooks(plugin, _REGISTRATION_SPECS):
                raise PluginLoadError(f"{', '.join(unmarked)} of plugin {name!r} is defined "
                                      f"{_UNMARKED_HINT}")
            if role := sorted(set(hooks_of(plugin)) & _COMPONENT_ONLY_SPECS):
                raise PluginLoadError(
                    f"{', '.join(role)} of plugin {name!r} is a role hook on the plugin itself: "
                    "role hooks go on a component class, added with aieng_register_components")
            self._pm.register(plugin, name=name)
        except (Exception, SystemExit) as exc:  # pluggy validation: bad signature, arguments
            return self._broken(name, distribution, version, exc)
        try:
            # A misspelled hook (aieng_register_component) fails here, at start-up.
            self._pm.check_pending()
            components = _ComponentAdder(self, name, dist_label)
            events = _EventAdder(self, name)
            readers = _ReaderAdder(self, name)
            self._call_one(plugin, "aieng_register_components", registry=components)
            self._call_one(plugin, "aieng_register_events", registry=events)
            self._call_one(plugin, "aieng_register_readers", registry=readers)
        except (Exception, SystemExit) as exc:  # the plugin's fault disables it only
            self._pm.unregister(plugin)
            return self._broken(name, distribution, version, exc)
        self._components.update(components.added)
        self._event_types.update(events.added)
        self._events_of[name] = tuple(events.added)
        self._readers.update(readers.added)
        hooks = set(hooks_of(plugin))
        for component in components.added.values():
            hooks.update(component.hooks)
        if not hooks:  # an entry point naming a constant, a class, the wrong module
            self._pm.unregister(plugin)
            return self._broken(name, distribution, version, PluginLoadError(
                f"{getattr(plugin, '__name__', type(plugin).__name__)!r} implements no aieng "
                "hook: does the entry point name the plugin's module?"))
        loaded = PluginInfo(name, distribution, version, "loaded", "",
                            tuple(sorted(components.added)), tuple(sorted(hooks)))
        self._record(loaded)
        if self._listener is not None:
            self._listener(name, True)
        return loaded

    def unregister(self, name: str) -> None:
        """Remove a plugin, its components and its event types."""
        plugin = self._pm.get_plugin(name)
        if plugin is not None:
            self._pm.unregister(plugin)
        info = self._plugins.pop(name, None)
        if info is None:
            raise KeyError(f"no plugin named {name!r}")
        if self._listener is not None and info.status == "loaded":
            self._listener(name, False)
        for component in info.components:
            self._components.pop(component, None)
        # The names it declared, wherever their classes are defined; not a core event type
        # it re-declared, nor one another loaded plugin declares too.
        others = {n for p, names in self._events_of.items() if p != name for n in names}
        for event_name in self._events_of.pop(name, ()):
            if event_name not in self._core_event_names and event_name not in others:
                self._event_types.pop(event_name, None)
        for suffix, reader in list(self._readers.items()):
            if reader.plugin == name:
                del self._readers[suffix]

    def _call_one(self, plugin: object, hook: str, **kwargs: object) -> None:
        caller = getattr(self._pm.hook, hook)
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin:
                run_registration(impl.function, hook, [kwargs[arg] for arg in impl.argnames])

    def _broken(self, name: str, distribution: str, version: str, exc: BaseException) -> PluginInfo:
        info = PluginInfo(name, distribution, version, "broken", f"{type(exc).__name__}: {exc}")
        log.warning("plugin.broken", plugin=name, distribution=distribution, version=version,
                    error=info.error)
        self._record(info)
        return info

    def _record(self, info: PluginInfo) -> None:
        self._plugins[info.name] = info

    # -- queries -------------------------------------------------------------------------

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The plugin manager of plugin modules (registration hooks, kernel subscribers)."""
        return self._pm

    @property
    def plugins(self) -> tuple[PluginInfo, ...]:
        """Every plugin seen: loaded, broken and disabled, in load order."""
        return tuple(self._plugins.values())

    @property
    def broken(self) -> tuple[PluginInfo, ...]:
        """The plugins that failed to import or register."""
        return tuple(p for p in self._plugins.values() if p.status == "broken")

    @property
    def components(self) -> Mapping[str, ComponentInfo]:
        """Registered components by name."""
        return dict(self._components)

    @property
    def readers(self) -> Mapping[str, ReaderInfo]:
        """Registered file readers by suffix (``.md``, ``.csv``, ...)."""
        return dict(self._readers)

    @property
    def event_types(self) -> Mapping[str, type[Event]]:
        """Known event types by name: the kernel's and the plugins'."""
        return dict(self._event_types)

    def component(self, name: str) -> ComponentInfo:
        """The component registered as ``name``.

        :raises UnknownComponentError: naming the valid choices and any broken plugins.
        """
        try:
            return self._components[name]
        except KeyError:
            choices = ", ".join(sorted(self._components)) or "(none)"
            message = f"unknown component {name!r}; valid choices: {choices}"
            if self.broken:
                message += "; broken plugins: " + ", ".join(p.name for p in self.broken)
            if hint := self.disabled_hint(name):
                message += f"; {hint}"
            raise UnknownComponentError(message) from None

    def disabled_hint(self, name: str) -> str:
        """For an unknown component ``name``: which disabled plugin offers it, or which
        plugins are disabled (a disabled plugin is never imported, so its components are
        unknown); empty when no plugin is disabled."""
        if not self._disabled_by:
            return ""
        owner = next((plugin for plugin in self._disabled_by
                      if plugin == name or (plugin == BUILTIN and name in _builtin_names())),
                     None)
        if owner is not None:
            variable = self._disabled_by[owner]
            how = "does not name it" if variable == "AIENG_PLUGINS" else "names it"
            return (f"component {name!r} is offered by plugin {owner!r}, which is disabled "
                    f"because {variable} {how}")
        return ("disabled plugins (AIENG_PLUGINS / AIENG_DISABLE_PLUGINS), whose components "
                "are not known: " + ", ".join(self._disabled_by))


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def _warn_unknown_entries(
    candidates: list[Candidate], allow: frozenset[str] | None, block: frozenset[str]
) -> None:
    """Warn about selection entries that name no plugin: a misspelling selects nothing."""
    for variable, entries in (("AIENG_PLUGINS", allow or frozenset()),
                              ("AIENG_DISABLE_PLUGINS", block)):
        unknown = sorted(e for e in entries
                         if e != BUILTIN and not any(matches(e, c) for c in candidates))
        if unknown:
            known = ", ".join(f"{c.name} ({c.distribution})" if c.distribution else c.name
                              for c in candidates)
            log.warning("plugins.unknown_entries", variable=variable, unknown=unknown,
                        known=known or "(none)",
                        hint="name a plugin by its entry-point or distribution name")


def _builtin_names() -> set[str]:
    """The component names the built-in plugin offers (it is the kernel's own code)."""
    class Names:
        def __init__(self) -> None:
            self.names: set[str] = set()

        def add(self, name: str, *args: object, **kwargs: object) -> None:
            self.names.add(name)

    names = Names()
    _load_builtin().aieng_register_components(names)
    return names.names


def _load_builtin() -> ModuleType:
    from .. import builtins

    return builtins


def run_registration(function: Callable[..., Any], hook: str, args: list[Any]) -> None:
    """Call a registration hook impl (``aieng_register_*``): a plain function, run once at
    start-up before any event loop.

    :raises TypeError: for an ``async def`` impl, which would otherwise return a coroutine
        nobody awaits and register nothing without a word.
    """
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        raise TypeError(f"{hook} must be a plain def, not async def: registration runs once "
                        "at start-up, before any event loop")
    result = function(*args)
    if inspect.isawaitable(result):  # a wrapper that hid an async function
        if inspect.iscoroutine(result):
            result.close()
        raise TypeError(f"{hook} returned an awaitable: registration hooks are plain "
                        "functions, run once at start-up")
