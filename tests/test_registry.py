"""The registry: plugins load on their own, and registering then unregistering is neutral."""

from __future__ import annotations

import types
from typing import Any, ClassVar

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aieng_core import Kernel, UnknownComponentError
from aieng_core.registry import Registry
from aieng_core.testing import registered
from aieng_hookspecs import ComponentRegistry, EventRegistry, hookimpl
from aieng_hookspecs.types import Event, Hit, Query


class Component:
    """A retriever component for registration tests."""

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        return []


def make_plugin(name: str, components: list[str], *, events: bool, subscriber: bool) -> Any:
    module = types.ModuleType(f"plugin_{name}")

    @hookimpl
    def aieng_register_components(registry: ComponentRegistry) -> None:
        for component in components:
            registry.add(component, Component)

    module.aieng_register_components = aieng_register_components  # type: ignore[attr-defined]
    if events:
        event_name = f"custom.{name}"

        @attrs.frozen(kw_only=True)
        class Custom(Event):
            name: ClassVar[str] = event_name

        Custom.__module__ = module.__name__

        @hookimpl
        def aieng_register_events(registry: EventRegistry) -> None:
            registry.add(Custom)

        module.aieng_register_events = aieng_register_events  # type: ignore[attr-defined]
    if subscriber:
        @hookimpl
        def aieng_on_event(event: Event) -> None:
            pass

        module.aieng_on_event = aieng_on_event  # type: ignore[attr-defined]
    return module


def snapshot(registry: Registry) -> tuple[Any, ...]:
    pm = registry.plugin_manager
    impls = {name: [i.plugin_name for i in getattr(pm.hook, name).get_hookimpls()]
             for name in ("aieng_register_components", "aieng_register_events",
                          "aieng_on_event", "aieng_register_commands")}
    return (tuple(registry.components), tuple(p.name for p in registry.plugins),
            tuple(sorted(registry.event_types)), impls)


_plugin = st.tuples(st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=3),
                    st.booleans(), st.booleans())


@given(st.lists(_plugin, min_size=1, max_size=4))
def test_register_then_unregister_restores_hook_state(plugins: list[Any]) -> None:
    """Any sequence of plugins registered and unregistered leaves the registry as it was,
    including plugins that fail on a duplicate component name."""
    kernel = Kernel(env={}, entry_points=[]).load()
    before = snapshot(kernel.registry)
    infos = []
    for index, (components, events, subscriber) in enumerate(plugins):
        module = make_plugin(f"p{index}", [f"{c}{index % 2}" for c in components],
                             events=events, subscriber=subscriber)
        infos.append(kernel.registry.register(module, name=f"p{index}"))
    for info in reversed(infos):
        kernel.registry.unregister(info.name)
    assert snapshot(kernel.registry) == before


def test_registered_context_manager_always_unregisters() -> None:
    """The kit's `registered` unregisters even when the block raises."""
    kernel = Kernel(env={}, entry_points=[]).load()
    with pytest.raises(RuntimeError), registered(kernel, make_plugin(
            "x", ["xcomp"], events=False, subscriber=False), "x") as info:
        assert info.status == "loaded"
        assert "xcomp" in kernel.registry.components
        raise RuntimeError("test body fails")
    assert "xcomp" not in kernel.registry.components


def test_duplicate_name_in_the_kit_is_reported_as_broken_naming_both() -> None:
    """A second plugin offering an existing component name is broken, naming both plugins;
    the first keeps its component."""
    kernel = Kernel(env={}, entry_points=[]).load()
    first = kernel.registry.register(make_plugin("one", ["same"], events=False,
                                                 subscriber=False), name="one")
    second = kernel.registry.register(make_plugin("two", ["same"], events=False,
                                                  subscriber=False), name="two")
    assert first.status == "loaded" and second.status == "broken"
    assert "'one'" in second.error and "'two'" in second.error
    assert kernel.registry.component("same").plugin == "one"


def test_unknown_component_lists_choices_and_broken_plugins() -> None:
    """Asking for a missing component names the valid choices and any broken plugin."""
    kernel = Kernel(env={}, entry_points=[]).load()

    @hookimpl
    def aieng_register_components(registry: ComponentRegistry) -> None:
        raise RuntimeError("cannot find my model")

    bad = types.ModuleType("bad")
    bad.aieng_register_components = aieng_register_components  # type: ignore[attr-defined]
    info = kernel.registry.register(bad, name="bad", distribution="aieng-bad", version="1.0")
    assert info.status == "broken" and "cannot find my model" in info.error
    with pytest.raises(UnknownComponentError) as caught:
        kernel.registry.component("bm25")
    assert "memory" in str(caught.value) and "broken plugins: bad" in str(caught.value)


def test_module_level_role_hook_is_a_start_up_error() -> None:
    """Role hooks belong on components: a plugin module implementing one is broken."""
    kernel = Kernel(env={}, entry_points=[]).load()
    module = types.ModuleType("misplaced")

    @hookimpl
    def aieng_retrieve(query: Query, k: int) -> list[Hit]:
        return []

    module.aieng_retrieve = aieng_retrieve  # type: ignore[attr-defined]
    info = kernel.registry.register(module, name="misplaced")
    assert info.status == "broken" and "aieng_retrieve" in info.error
    assert kernel.registry.plugin_manager.get_plugin("misplaced") is None


def _adding(*args: Any, **kwargs: Any) -> types.ModuleType:
    """A plugin module whose registration calls ``registry.add(*args, **kwargs)``."""
    module = types.ModuleType("m")

    @hookimpl
    def aieng_register_components(registry: ComponentRegistry) -> None:
        registry.add(*args, **kwargs)

    module.aieng_register_components = aieng_register_components  # type: ignore[attr-defined]
    return module


def test_bad_component_names_and_options_are_rejected() -> None:
    """registry.add rejects non-lowercase names, non-callables and non-attrs options."""
    kernel = Kernel(env={}, entry_points=[]).load()
    for args, kwargs in [(("Bad Name", Component), {}), (("ok", 3), {}),
                         (("ok2", Component), {"options": dict})]:
        module = _adding(*args, **kwargs)
        assert kernel.registry.register(module, name="m").status == "broken"
        kernel.registry.unregister("m")


def test_plugin_calling_sys_exit_is_broken_not_fatal() -> None:
    """A plugin that calls sys.exit while registering is disabled; the kernel keeps going."""
    kernel = Kernel(env={}, entry_points=[]).load()
    module = types.ModuleType("quitter")

    @hookimpl
    def aieng_register_components(registry: ComponentRegistry) -> None:
        raise SystemExit(3)

    module.aieng_register_components = aieng_register_components  # type: ignore[attr-defined]
    info = kernel.registry.register(module, name="quitter")
    assert info.status == "broken" and "SystemExit" in info.error
    assert "memory" in kernel.registry.components


def test_async_registration_hook_is_broken_not_silently_empty() -> None:
    """An ``async def aieng_register_components`` would return a coroutine nobody awaits
    and register nothing: the plugin is broken, saying to write a plain def."""
    kernel = Kernel(env={}, entry_points=[]).load()
    module = types.ModuleType("hasty")

    @hookimpl
    async def aieng_register_components(registry: ComponentRegistry) -> None:
        registry.add("hasty", Component)

    module.aieng_register_components = aieng_register_components  # type: ignore[attr-defined]
    info = kernel.registry.register(module, name="hasty")
    assert info.status == "broken" and "plain def, not async def" in info.error
    assert "hasty" not in kernel.registry.components


def test_readers_register_and_conflicts_name_both_plugins(tmp_path: Any) -> None:
    """A plugin's file reader is used by ingest; a second plugin claiming the same suffix
    is broken, naming both; an unreadable suffix is a clear error."""
    from pathlib import Path

    from aieng_core.ingest import iter_documents
    from aieng_hookspecs import ReaderRegistry
    from aieng_hookspecs.types import Document

    def read_shout(path: Path) -> list[Document]:
        return [Document(id=str(path), text=path.read_text().upper())]

    def plugin(name: str) -> Any:
        module = types.ModuleType(name)

        @hookimpl
        def aieng_register_readers(registry: ReaderRegistry) -> None:
            registry.add(".shout", read_shout)

        module.aieng_register_readers = aieng_register_readers  # type: ignore[attr-defined]
        return module

    kernel = Kernel(env={}, entry_points=[]).load()
    assert kernel.registry.register(plugin("one"), name="one").status == "loaded"
    second = kernel.registry.register(plugin("two"), name="two")
    assert second.status == "broken" and "'one'" in second.error and "'two'" in second.error
    (tmp_path / "a.shout").write_text("hello")
    (tmp_path / "b.md").write_text("# T\n\nbody\n")
    (tmp_path / "c.xyz").write_text("skipped in folders")
    readers = {s: r.reader for s, r in kernel.registry.readers.items()}
    texts = sorted(d.text for d in iter_documents(tmp_path, readers=readers))
    assert texts == ["HELLO", "body"]
    with pytest.raises(ValueError, match="no reader for '.xyz'"):
        list(iter_documents(tmp_path / "c.xyz", readers=readers))
    kernel.registry.unregister("one")
    assert ".shout" not in kernel.registry.readers


def test_component_info_builds_with_given_or_default_options() -> None:
    """``ComponentInfo.build``: a component with options gets the ones given, or its
    options class's defaults; one without options is called with none."""
    from aieng_core.registry import ComponentInfo

    @attrs.frozen
    class Options:
        size: int = 3

    class Sized:
        def __init__(self, options: Options) -> None:
            self.options = options

    info = ComponentInfo("sized", Sized, Options, "", "p", "d")
    default = info.build()
    assert isinstance(default, Sized) and default.options == Options()
    given_options = Options(size=9)
    built = info.build(given_options)
    assert isinstance(built, Sized) and built.options is given_options
    assert isinstance(ComponentInfo("bare", Component, None, "", "p", "d").build(), Component)


def test_unregister_forgets_the_events_a_plugin_declared_wherever_they_are_defined() -> None:
    """A plugin's event types go with it when it is unregistered, also when their classes
    live in another module than the plugin's (a package's ``events`` module) or the plugin
    is an object; a core event type a plugin re-declares stays, and a later plugin may
    declare the freed name."""
    from aieng_hookspecs.types import CacheHit

    def declaring(event_name: str, holder: str) -> Any:
        @attrs.frozen(kw_only=True)
        class Fired(Event):
            name: ClassVar[str] = event_name

        Fired.__module__ = holder

        class Plugin:
            @hookimpl
            def aieng_register_events(self, registry: EventRegistry) -> None:
                registry.add(Fired)
                registry.add(CacheHit)

        return Plugin()

    kernel = Kernel(env={}, entry_points=[]).load()
    before = dict(kernel.registry.event_types)
    assert kernel.registry.register(declaring("drift.fired", "pkg.events"),
                                    name="pkg").status == "loaded"
    assert "drift.fired" in kernel.registry.event_types
    kernel.registry.unregister("pkg")
    assert kernel.registry.event_types == before
    again = kernel.registry.register(declaring("drift.fired", "other.events"), name="other")
    assert again.status == "loaded", again.error


def test_hook_without_hookimpl_is_broken_not_silently_ignored() -> None:
    """pluggy ignores a function without ``@hookimpl``: a plugin module whose
    ``aieng_register_components`` lacks it, or a component class whose role hook lacks it,
    would load and do nothing. Either is broken, naming the unmarked hook."""
    kernel = Kernel(env={}, entry_points=[]).load()
    module = types.ModuleType("forgetful")

    def aieng_register_components(registry: ComponentRegistry) -> None:  # no @hookimpl
        registry.add("forgetful", Component)

    module.aieng_register_components = aieng_register_components  # type: ignore[attr-defined]
    info = kernel.registry.register(module, name="forgetful")
    assert info.status == "broken", "the plugin loaded and registered nothing"
    assert "aieng_register_components" in info.error and "@hookimpl" in info.error

    class HalfMarked:
        """A guardrail whose output hook lacks @hookimpl."""

        @hookimpl
        def aieng_guard_input(self, request: Any) -> None:
            return None

        def aieng_guard_output(self, completion: Any) -> None:  # no @hookimpl
            return None

    components = types.ModuleType("half")

    @hookimpl
    def register(registry: ComponentRegistry) -> None:
        registry.add("half-marked", HalfMarked)

    components.aieng_register_components = register  # type: ignore[attr-defined]
    half = kernel.registry.register(components, name="half")
    assert half.status == "broken", "the component's unmarked hook would never be called"
    assert "HalfMarked.aieng_guard_output" in half.error and "@hookimpl" in half.error
    assert "half-marked" not in kernel.registry.components


def test_names_with_a_trailing_newline_and_options_instances_are_rejected() -> None:
    """A component or event name ending in a newline is no valid name (``$`` of a regular
    expression matches before it), and ``options=`` takes the attrs class, not an instance
    of it (which would load, then fail every pipeline with a bare TypeError)."""
    @attrs.frozen
    class Options:
        size: int = 3

    @attrs.frozen(kw_only=True)
    class Newline(Event):
        name: ClassVar[str] = "custom.fired\n"

    kernel = Kernel(env={}, entry_points=[]).load()
    cases: list[tuple[tuple[Any, ...], dict[str, Any], str]] = [
        (("sized\n", Component), {}, "component name"),
        (("sized", Component), {"options": Options()}, "must be an attrs class"),
        (("sized", Component), {"description": 5},
         "description of component 'sized' must be a string")]
    for args, kwargs, message in cases:
        module = _adding(*args, **kwargs)
        info = kernel.registry.register(module, name="m")
        assert info.status == "broken" and message in info.error, (args, kwargs)
        kernel.registry.unregister("m")

    events = types.ModuleType("events")

    @hookimpl
    def aieng_register_events(registry: EventRegistry) -> None:
        registry.add(Newline)

    events.aieng_register_events = aieng_register_events  # type: ignore[attr-defined]
    info = kernel.registry.register(events, name="events")
    assert info.status == "broken" and "event name" in info.error


def test_one_module_under_two_plugin_names_is_broken_naming_the_first() -> None:
    """Two entry points naming one module (a renamed entry point and a stale one): the
    second is broken with a short error naming the plugin that holds the module, not
    pluggy's dump of every loaded plugin."""
    kernel = Kernel(env={}, entry_points=[]).load()
    module = make_plugin("twice", ["twice"], events=False, subscriber=False)
    assert kernel.registry.register(module, name="twice").status == "loaded"
    alias = kernel.registry.register(module, name="twice-alias")
    assert alias.status == "broken"
    assert "already loaded as plugin 'twice'" in alias.error, alias.error
    assert "builtin" not in alias.error and len(alias.error) < 300, alias.error
    assert kernel.registry.component("twice").plugin == "twice"


def test_a_plugin_implementing_no_hook_is_broken() -> None:
    """An entry point naming something that implements no aieng hook (a constant, a class,
    the wrong module) loaded as "loaded" and did nothing; it is broken, saying so."""
    kernel = Kernel(env={}, entry_points=[]).load()
    info = kernel.registry.register(types.ModuleType("not_the_plugin"), name="empty")
    assert info.status == "broken"
    assert "'not_the_plugin' implements no aieng hook" in info.error
    assert "entry point" in info.error


def test_a_role_hook_on_the_plugin_module_says_where_it_belongs() -> None:
    """A plugin module with a module-level role hook (``@hookimpl def aieng_rerank``) is
    broken, saying role hooks go on a component class (pluggy's "unknown hook" read like a
    misspelling)."""
    kernel = Kernel(env={}, entry_points=[]).load()
    module = types.ModuleType("reranks")

    @hookimpl
    def aieng_rerank(query: Any, hits: Any, k: int) -> Any:
        return hits

    module.aieng_rerank = aieng_rerank  # type: ignore[attr-defined]
    info = kernel.registry.register(module, name="reranks")
    assert info.status == "broken"
    assert "aieng_rerank of plugin 'reranks' is a role hook on the plugin itself" in info.error
    assert "component class" in info.error
