"""What every conformance suite shares: hook validation, the pipeline, the loop watch."""

from __future__ import annotations

import copy
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import anyio
import attrs
import pluggy
import pytest
from hypothesis import HealthCheck, settings

from aieng_hookspecs import PROJECT
from aieng_hookspecs.specs import ROLE_MODULES
from aieng_hookspecs.types import ErrorEvent, LoopBlocked

from ...dispatch import Dispatcher
from ...kernel import Kernel
from ...pipeline import Pipeline
from ...registry import spec_names, unmarked_hooks
from .._kit import EventCapture
from ..steady import Growth, ameasure_growth
from ._resources import Resources, released, snapshot

__all__ = [
    "PROPERTY",
    "STAGE",
    "SUBJECT",
    "RoleSuite",
    "check_valid",
    "collect_stream",
    "implemented_hooks",
    "left_unchanged",
    "optional_fixture",
    "unique",
]

#: The name the component under test has in the suites' pipelines.
SUBJECT = "subject"
#: The stage label of the suites' direct hook calls (it shows in errors and events).
STAGE = "conformance"
#: Hypothesis settings of the suites' property tests: few examples, no deadline (a real
#: model is slow), fixtures shared across the examples of one test (on purpose).
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Long enough for the watchdog (it wakes every 10 ms) to notice a stall and report it.
_SETTLE = 0.03


def implemented_hooks(component: object) -> frozenset[str]:
    """The names of the role hooks a component implements (validated as pluggy does).

    :raises pluggy.PluginValidationError: when an impl does not match its spec.
    """
    pm = pluggy.PluginManager(PROJECT)
    for module in ROLE_MODULES:
        pm.add_hookspecs(module)
    pm.register(component, name=SUBJECT)
    return frozenset(caller.name for caller in pm.get_hookcallers(component) or [])


class RoleSuite:
    """Base of the conformance suites: what holds for a component of any role.

    A subclass per role names the role's hooks; a plugin author subclasses that one and
    gives a ``component`` fixture. Every suite checks that the component's hook impls
    validate against the specs (each marked ``@hookimpl``), that it implements its role,
    that it opens and closes without an error, that once closed it holds no file
    descriptor, thread or task it opened (:meth:`exercise` uses it first; ``release_grace``
    bounds the wait for them to end), and that it never blocks the event loop; when asked
    (``steady_calls``), that thousands of calls of its hooks, each with inputs of its own,
    leave nothing behind (:meth:`test_steady_state`);
    the role's suite checks the role's contract through a pipeline of the kit's
    isolated kernel (``aieng_kernel``), calling the hooks through the pipeline's dispatcher
    so that the component's raw answers are checked, not the kernel's normalized ones,
    each boundary value among them against its own validators (:func:`check_valid`).
    """

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    #: The role (``aieng_role`` of its specs).
    role: ClassVar[str] = ""
    #: Hooks the component must implement.
    required_hooks: ClassVar[tuple[str, ...]] = ()
    #: The role's hooks; the component must implement at least one of them.
    role_hooks: ClassVar[tuple[str, ...]] = ()
    #: Seconds a component's threads, sockets and tasks get to end after its pipeline
    #: closed (the release check returns as soon as they have).
    release_grace: ClassVar[float] = 2.0
    #: Calls of the role's hooks that :meth:`test_steady_state` measures, each with inputs
    #: of its own (:meth:`steady_call`: a new query, text or key each time); ``0`` (the
    #: default) skips the check. 1,000 or more find a leak of tens of bytes a call.
    steady_calls: ClassVar[int] = 0
    #: Calls made before measuring, after the dispatcher's record of recent calls is full:
    #: more than any bounded cache, pool or buffer of the component fills (or build the
    #: component with smaller bounds in the ``component`` fixture).
    steady_warmup: ClassVar[int] = 200
    #: The most bytes a measured call may leave allocated, on average. A retained entry
    #: (a per-key record, a kept request) costs 50-200 bytes; bounded noise, a few
    #: kilobytes in all, divides down over the calls.
    steady_bytes_per_call: ClassVar[float] = 32.0

    # -- fixtures ------------------------------------------------------------------------

    @pytest.fixture
    async def conformance_pipeline(self, aieng_kernel: Kernel, component: object) -> Pipeline:
        """A pipeline of the kit's kernel holding only the component (named ``subject``).

        Built inside the event loop: composing on a started kernel subscribes a component
        that implements ``aieng_on_event`` with a task of the kernel's task group.
        """
        return self.compose(aieng_kernel, component)

    @pytest.fixture
    async def resources_before(self, aieng_kernel: Kernel) -> Resources:
        """What the process holds once the kernel runs, before the component is built (a
        test lists it before ``component``, so pytest sets it up first)."""
        await anyio.lowlevel.checkpoint()  # the kernel's own tasks have started
        return snapshot()

    # -- helpers -------------------------------------------------------------------------

    def compose(
        self,
        kernel: Kernel,
        component: object,
        *,
        stages: Iterable[str] | None = None,
        stage: Mapping[str, Mapping[str, Any]] | None = None,
        others: Mapping[str, object] | None = None,
    ) -> Pipeline:
        """A pipeline of ``component`` (named ``subject``, listed first) and ``others``."""
        return kernel.compose({SUBJECT: component, **(others or {})},
                              name=f"conformance-{self.role}", stages=stages, stage=stage)

    def skip_unless_implements(self, component: object, *hooks: str) -> None:
        """Skip the test unless the component implements one of ``hooks``."""
        if not implemented_hooks(component).intersection(hooks):
            pytest.skip(f"{type(component).__name__} does not implement {' or '.join(hooks)}")

    @asynccontextmanager
    async def loop_watch(self, events: EventCapture) -> AsyncIterator[None]:
        """Fail when the kernel's watchdog names the component in a ``loop.blocked`` event
        raised while the ``async with`` block runs."""
        await anyio.sleep(_SETTLE)  # let the watchdog catch up with whatever ran before
        start = len(events.events)
        yield
        await anyio.sleep(_SETTLE)
        prefix = f"{SUBJECT}."
        stalls = [e for e in events.events[start:] if isinstance(e, LoopBlocked)
                  and any(label.startswith(prefix) for label in e.active)]
        assert not stalls, (
            f"the component blocked the event loop for up to "
            f"{max(e.duration_s for e in stalls):.3f} s in "
            f"{sorted({a for e in stalls for a in e.active if a.startswith(prefix)})}: "
            "make the impl async (awaiting its I/O) or mark it @blocking")

    # -- what every suite checks ---------------------------------------------------------

    def test_hookimpls_validate(self, component: object) -> None:
        """The component's impls match the specs (pluggy's validation and ``check_pending``):
        no misspelled hook, no unknown argument, no wrapper, no hook method without
        ``@hookimpl`` (pluggy would ignore it), and the role's hooks present."""
        pm = pluggy.PluginManager(PROJECT)
        for module in ROLE_MODULES:
            pm.add_hookspecs(module)
        name = type(component).__name__
        unmarked = unmarked_hooks(component, spec_names(ROLE_MODULES))
        assert not unmarked, (
            f"{name} defines {', '.join(unmarked)} without @hookimpl: pluggy ignores it, "
            "so it is never called")
        try:
            pm.register(component, name=SUBJECT)
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise AssertionError(f"{name} has an invalid hook impl: {exc}") from None
        callers = pm.get_hookcallers(component) or []
        hooks = {caller.name for caller in callers}
        for caller in callers:
            for impl in caller.get_hookimpls():
                assert not (impl.wrapper or impl.hookwrapper), (
                    f"{name}.{caller.name} is a hook wrapper; role hooks take plain impls")
        missing = [hook for hook in self.required_hooks if hook not in hooks]
        assert not missing, f"{name} does not implement {', '.join(missing)}"
        assert hooks.intersection(self.role_hooks), (
            f"{name} implements none of the {self.role} hooks {', '.join(self.role_hooks)}")

    async def test_opens_and_closes(self, conformance_pipeline: Pipeline,
                                    captured_events: EventCapture) -> None:
        """The component opens (``aieng_pipeline_open``) and closes
        (``aieng_pipeline_close``) without an error: a pipeline logs a failed close and
        goes on, so no run would show it."""
        await conformance_pipeline.open()
        await conformance_pipeline.aclose()
        failures = [f"{e.hook}: {e.message}" for e in captured_events.of(ErrorEvent)
                    if e.plugin == SUBJECT]
        assert not failures, f"the component failed to open or close: {failures}"

    async def test_releases_what_it_opened(self, resources_before: Resources,
                                           component: object, conformance_pipeline: Pipeline,
                                           request: pytest.FixtureRequest) -> None:
        """Once its pipeline closed, the component holds nothing it opened: no file
        descriptor (a file, a socket, a lock file), no thread still running, no task left
        on the loop. A pipeline built per request or per test must not leak each time.
        Where descriptors (no ``/proc/self/fd``) or tasks (neither asyncio nor trio) cannot
        be seen, the rest is checked and the test then skips, saying what it did not check."""
        try:
            await self.exercise(conformance_pipeline, request)
        finally:
            await conformance_pipeline.aclose()
        left = await released(resources_before, grace=self.release_grace)
        assert not left, (
            f"{type(component).__name__} still holds after its pipeline closed: "
            f"{'; '.join(left)}: release it in aieng_pipeline_close (close files and "
            "clients, join threads, cancel tasks)")
        if resources_before.unobserved:
            unchecked = ", ".join(resources_before.unobserved)
            pytest.skip(f"nothing leaked, but not checked: {unchecked}")

    async def exercise(self, pipeline: Pipeline, request: pytest.FixtureRequest) -> None:
        """What :meth:`test_releases_what_it_opened` does with the pipeline before closing
        it (by default: open it); a suite overrides it to use the component as a run does
        (taking its own fixtures from ``request``), so that what opens lazily is opened too.
        """
        await pipeline.open()

    # -- the steady state ----------------------------------------------------------------

    async def steady_setup(self, pipeline: Pipeline, request: pytest.FixtureRequest) -> None:
        """What :meth:`test_steady_state` does with the pipeline before the calls (by
        default :meth:`exercise`: open it, index the corpus, store the facts...)."""
        await self.exercise(pipeline, request)

    async def steady_call(self, pipeline: Pipeline, i: int) -> None:
        """One call of the role's hooks through the pipeline's dispatcher, its inputs made
        of ``i`` (each call's its own). A role's suite defines it; a suite without one
        skips the steady-state check."""
        pytest.skip(f"the {self.role or 'base'} suite defines no steady_call")

    async def check_steady(self, pipeline: Pipeline, *, calls: int | None = None,
                           warmup: int | None = None) -> Growth:
        """Fail unless ``calls`` (default :attr:`steady_calls`) calls of
        :meth:`steady_call` on the prepared ``pipeline``, after the warm-up, retain at most
        :attr:`steady_bytes_per_call` bytes a call and hold no file descriptor, thread or
        task (:func:`aieng_core.testing.ameasure_growth`); returns what was measured.

        The dispatcher keeps its latest impl calls for the loop watchdog (a bounded
        record): it is emptied and filled again first, by calls traced but not measured,
        so the measured calls only replace its entries; then ``warmup`` (default
        :attr:`steady_warmup`) calls fill what the component bounds.
        """
        calls = self.steady_calls if calls is None else calls
        warmup = self.steady_warmup if warmup is None else warmup
        recent = pipeline.dispatcher.recent
        tracing = not tracemalloc.is_tracing()
        if tracing:  # the record's entries that the measured calls replace must be traced
            tracemalloc.start(1)  # too, or what their replacement frees is not seen
        try:
            recent.clear()
            filled = 0
            while recent.maxlen is not None and len(recent) < recent.maxlen \
                    and filled < recent.maxlen:
                await self.steady_call(pipeline, filled)
                filled += 1
            growth = await ameasure_growth(lambda i: self.steady_call(pipeline, filled + i),
                                           warmup=warmup, calls=calls)
        finally:
            if tracing:
                tracemalloc.stop()
        name = type(pipeline.components[SUBJECT]).__name__
        assert not growth.held, (
            f"{name} holds, after {calls} calls of its {self.role} hooks, what it did not "
            f"before them: release per-call descriptors, threads and tasks when the call "
            f"ends\n{growth.report()}")
        assert growth.per_call <= self.steady_bytes_per_call, (
            f"{name} retained {growth.per_call:.0f} B a call over {calls} calls of its "
            f"{self.role} hooks, each with inputs of its own (steady_bytes_per_call = "
            f"{self.steady_bytes_per_call:g}): bound what it keeps per request, key or "
            f"text by a size or a time (least recently used out), or release it when the "
            f"call ends; a bounded cache larger than the warm-up of {warmup} calls fills "
            f"needs steady_warmup raised\n{growth.report()}")
        return growth

    async def test_steady_state(self, conformance_pipeline: Pipeline,
                                request: pytest.FixtureRequest) -> None:
        """With :attr:`steady_calls` set: that many calls of the role's hooks through the
        pipeline, each with inputs of its own, after a warm-up, leave at most
        :attr:`steady_bytes_per_call` bytes a call behind and no descriptor, thread or
        task (:meth:`check_steady`): a component in a server serves millions of calls."""
        if self.steady_calls <= 0:
            pytest.skip("steady_calls = 0: set it (1,000 or more) to measure what a call "
                        "leaves behind")
        try:
            await self.steady_setup(conformance_pipeline, request)
            await self.check_steady(conformance_pipeline)
        finally:
            await conformance_pipeline.aclose()


async def collect_stream(dispatcher: Dispatcher, stream: object, *,
                         timeout: float = 60.0) -> list[Any]:
    """Every item of a stream that an ``aieng_stream`` impl returned, then close it.

    The dispatcher tracks only the call that returned the iterator, so each step of the
    iteration is marked in flight here: a stream that blocks the loop while iterating is
    then named by the watchdog too.
    """
    assert isinstance(stream, AsyncIterator), (
        f"aieng_stream returned {type(stream).__name__}, expected an async iterator")
    label = f"{SUBJECT}.aieng_stream"
    items: list[Any] = []
    try:
        with anyio.fail_after(timeout):
            while True:
                with dispatcher.tracking(label):
                    try:
                        item = await anext(stream)
                    except StopAsyncIteration:
                        break
                items.append(item)
    finally:
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            await closer()
    return items


def _changed(before: object, after: object, path: str) -> str:
    """Where ``after`` first differs from ``before``: a path into fields and items."""
    cls: Any = type(before)
    if attrs.has(cls) and type(after) is cls:
        for field in attrs.fields(cls):
            old, new = getattr(before, field.name), getattr(after, field.name)
            if old != new:
                return _changed(old, new, f"{path}.{field.name}")
    elif isinstance(before, (list, tuple)) and isinstance(after, (list, tuple)) \
            and len(before) == len(after):
        for index, (old, new) in enumerate(zip(before, after)):
            if old != new:
                return _changed(old, new, f"{path}[{index}]")
    return f"{path} was {before!r:.200} and became {after!r:.200}"


async def left_unchanged(awaitable: Awaitable[Any], hook: str, /, **arguments: object) -> Any:
    """Await ``awaitable`` (a hook call given ``arguments``) and fail when the impl changed
    any of them in place; returns what the call returned.

    The boundary types are frozen, but their ``metadata`` (and a tool call's ``arguments``)
    are plain dicts, shared with the caller: an impl that writes into one changes the run's
    state (a hit's document in the retriever, the arguments in the agent's transcript). An
    impl that wants to annotate makes a copy (``attrs.evolve(doc, metadata={...})``).
    """
    before = {name: copy.deepcopy(value) for name, value in arguments.items()}
    result = await awaitable
    for name, value in arguments.items():
        assert value == before[name], (
            f"{hook} changed its argument in place: {_changed(before[name], value, name)}; "
            "build new values (attrs.evolve, dict(...)) instead of writing into those given")
    return result


def check_valid(value: object, what: str) -> None:
    """Fail unless ``value``, and every boundary value inside it, passes its own validators.

    The constructors of the boundary types validate, but ``aieng_hookspecs.types.unchecked``
    (and ``object.__setattr__``) build values without it: a hit with a NaN score or a
    ``numpy.float32`` one, a rank of 0. Such a value passes ``isinstance`` and then breaks
    whatever compares, sorts or serializes it further down the run.

    :param value: what a hook returned (a boundary value, or a list or tuple of them).
    :param what: how the failure message names it (``"hit 3"``).
    """
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_valid(item, f"{what}[{index}]")
        return
    cls: Any = type(value)
    if not attrs.has(cls):
        return
    try:
        attrs.validate(value)  # type: ignore[arg-type]  # attrs.has(cls) holds
    except (TypeError, ValueError) as exc:
        raise AssertionError(
            f"{what} is no valid {type(value).__name__}: {exc}; build boundary values with "
            "their constructor (not unchecked()) from plain Python numbers") from None
    for field in attrs.fields(cls):
        inner = getattr(value, field.name)
        if isinstance(inner, (list, tuple)) or attrs.has(type(inner)):
            check_valid(inner, f"{what}.{field.name}")


def optional_fixture(request: pytest.FixtureRequest, name: str) -> Any:
    """The value of a (synchronous) fixture, or ``None`` when the fixture skips."""
    try:
        return request.getfixturevalue(name)
    except pytest.skip.Exception:
        return None


def unique(values: Sequence[str]) -> bool:
    """Whether no value repeats."""
    return len(set(values)) == len(values)
