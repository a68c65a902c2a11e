"""The kernel embedded in a host program: trio as well as asyncio, a host's cancel scopes and
threads, values and errors sent to worker processes, a fork, a host's own logging set-up."""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
import structlog
from aieng_hookspecs import blocking, hookimpl
from aieng_hookspecs.types import (
    Completion,
    Document,
    ErrorEvent,
    Feedback,
    LoopBlocked,
    Request,
    ToolCall,
    ToolResult,
    ToolSpec,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aieng_core import ConfigError, HookError, Kernel, PipelineConfig, RunResult
from aieng_core._errors import DuplicateComponentError, UnknownComponentError
from aieng_core.agent import Agent, AgentClosedError
from aieng_core.builtins import MemoryOptions, MemoryRetriever
from aieng_core.testing import EventCapture, settle
from aieng_core.testing import strategies as strat
from aieng_core.testing.doubles import PromptCache, ScriptedBackend
from aieng_core.testing.processes import in_forked_child

pytestmark = pytest.mark.anyio

BOTH = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
DOCS = [Document(id="rrf", text="reciprocal rank fusion merges ranked lists"),
        Document(id="bus", text="the event bus delivers typed events")]


def _kernel(**kwargs: Any) -> Kernel:
    kwargs.setdefault("env", {})
    kwargs.setdefault("entry_points", [])
    kwargs.setdefault("default_embedder", None)
    return Kernel(**kwargs)


class Sink:
    """A feedback sink double."""

    def __init__(self) -> None:
        self.records: list[Feedback] = []

    @hookimpl
    def aieng_feedback_record(self, feedback: Feedback) -> None:
        self.records.append(feedback)


class ThreadedBackend:
    """A ``@blocking`` backend: it answers from a worker thread, publishing from there."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    @hookimpl
    @blocking
    def aieng_generate(self, request: Request) -> Completion:
        from aieng_hookspecs.types import BusDropped

        self.kernel.publish(BusDropped(subscriber="from-a-thread", dropped=1))
        return Completion(text=f"thread {threading.get_ident() != MAIN}")


MAIN = threading.get_ident()


# -- trio as well as asyncio ---------------------------------------------------------------


@BOTH
async def test_run_stream_index_delete_feedback_on_either_backend() -> None:
    """Every pipeline entry point works the same under trio and asyncio: index, a streamed
    run, delete, feedback; the bus delivers to callbacks, and the result pickles."""
    async with _kernel() as kernel:
        seen: list[str] = []
        kernel.bus.add_callback(lambda e: seen.append(e.name), name="host")
        sink = Sink()
        pipeline = kernel.compose({"docs": MemoryRetriever(MemoryOptions()), "sink": sink,
                                   "llm": ScriptedBackend(["one two three"], delay=0.01)})
        await pipeline.index(DOCS)
        deltas: list[str] = []
        result = await pipeline.run("rank fusion", on_delta=lambda d: deltas.append(d.text))
        assert result.answer == "one two three" and "".join(deltas) == "one two three"
        assert result.hits[0].document.id == "rrf"
        assert await pipeline.delete(["rrf"]) == 1
        assert [h.document.id for h in (await pipeline.run("rank fusion")).hits] != ["rrf"]
        assert await pipeline.feedback(result.run_id, "thumbs", 1.0) == 1
        assert sink.records[0].run_id == result.run_id
        await settle(lambda: seen.count("run.finished") == 2)
    assert pickle.loads(pickle.dumps(result)) == result


@BOTH
async def test_single_flight_shares_one_generation_on_either_backend() -> None:
    """Identical concurrent runs behind a cache make one generation under trio too."""
    async with _kernel() as kernel:
        llm = ScriptedBackend(["shared"], delay=0.05)
        pipeline = kernel.compose({"cache": PromptCache(), "llm": llm}, single_flight=True)
        results: list[RunResult] = []

        async def one() -> None:
            results.append(await pipeline.run("same question"))

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(one)
    assert len(llm.requests) == 1
    assert sorted(r.cache_hit or "" for r in results) == ["", "cache", "cache", "cache"]


@BOTH
async def test_worker_threads_publish_and_call_back_into_the_loop() -> None:
    """A ``@blocking`` impl publishing from its worker thread reaches a callback (the bus's
    thread-safe hand-over on each backend), and sync host code in worker threads calls
    the pipeline through ``anyio.from_thread.run``."""
    async with _kernel() as kernel:
        seen: list[str] = []
        kernel.bus.add_callback(lambda e: seen.append(e.subscriber), name="host",  # type: ignore[attr-defined]
                                pattern="bus.dropped")
        pipeline = kernel.compose({"llm": ThreadedBackend(kernel)})

        def host_code(n: int) -> str:
            return anyio.from_thread.run(pipeline.run, f"question {n}").answer

        answers: list[str] = []

        async def in_thread(n: int) -> None:
            answers.append(await anyio.to_thread.run_sync(host_code, n))

        async with anyio.create_task_group() as group:
            for n in range(3):
                group.start_soon(in_thread, n)
        await settle(lambda: seen.count("from-a-thread") == 3)
    assert answers == ["thread True"] * 3


class HeavyThenAsync:
    """A ``@blocking`` impl doing its heavy part in the thread, returning a coroutine."""

    @hookimpl
    @blocking
    def aieng_generate(self, request: Request) -> Any:
        async def rest() -> Completion:
            return Completion(text="awaited")

        return rest()


@BOTH
async def test_a_blocking_impl_returning_a_coroutine_on_either_backend() -> None:
    """A ``@blocking`` impl's returned coroutine is awaited on trio too (trio refused it
    from the thread: "Trio expected a sync function")."""
    async with _kernel() as kernel:
        result = await kernel.compose({"llm": HeavyThenAsync()}).run("x")
    assert result.answer == "awaited"


@BOTH
async def test_timeout_and_skip_policies_on_either_backend() -> None:
    """A stage timeout is a plain HookError (no exception group) and ``skip`` passes over
    a failing impl, under trio as under asyncio."""
    async with _kernel() as kernel:
        slow = kernel.compose({"llm": ScriptedBackend(["x"], delay=30)}, timeout=0.05)
        with pytest.raises(HookError, match="timed out after 0.05"):
            await slow.run("x")
        boom = ScriptedBackend(fail_with=RuntimeError("kaboom"))
        skipping = kernel.compose({"docs": MemoryRetriever(MemoryOptions()), "llm": boom},
                                  name="skipping", stage={"generate": {"on_error": "skip"}})
        result = await skipping.run("x")
    assert result.completion is None
    assert [e.message for e in result.events if isinstance(e, ErrorEvent)] == ["RuntimeError: kaboom"]


@BOTH
async def test_host_cancel_scope_mid_run_leaves_nothing_running() -> None:
    """A host's cancel scope cancelling a run mid-generation cancels it (no HookError, no
    exception group), and the pipeline then closes at once, nothing left in flight."""
    async with _kernel() as kernel:
        pipeline = kernel.compose({"llm": ScriptedBackend(["x"], delay=30)}, timeout=None)
        with anyio.move_on_after(0.05) as scope:
            await pipeline.run("x")
        assert scope.cancelled_caught
        with anyio.fail_after(5):  # a run left in flight would hold this for 30 s
            await pipeline.aclose()


@BOTH
async def test_host_task_group_failure_cancels_a_run_without_wrapping_it() -> None:
    """A host task group whose other task fails cancels the run; the host sees its own
    error in its group, the run leaves no task behind."""
    async with _kernel() as kernel:
        pipeline = kernel.compose({"llm": ScriptedBackend(["x"], delay=30)}, timeout=None)

        async def fail() -> None:
            await anyio.sleep(0.02)
            raise KeyError("host")

        with pytest.raises(BaseExceptionGroup) as caught:
            async with anyio.create_task_group() as group:
                group.start_soon(pipeline.run, "x")
                group.start_soon(fail)
        assert caught.group_contains(KeyError) and not caught.group_contains(HookError)
        with anyio.fail_after(5):
            await pipeline.aclose()


class Blocker:
    """A backend that blocks the event loop (``time.sleep`` in an async impl)."""

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion:
        time.sleep(0.3)  # noqa: ASYNC251 - the blocking call under test
        return Completion(text="late")


@BOTH
async def test_watchdog_names_a_loop_blocker_on_either_backend() -> None:
    """The loop watchdog reports the impl that held the loop, under trio as well."""
    async with _kernel(loop_block_threshold=0.1) as kernel:
        capture = EventCapture(kernel)
        await kernel.compose({"blocker": Blocker()}).run("x")
        await settle(lambda: any("blocker.aieng_generate" in e.active
                                 for e in capture.of(LoopBlocked)))


@BOTH
async def test_kernel_exit_drains_callback_subscribers() -> None:
    """Events queued when the kernel exits reach slow callback subscribers before it ends."""
    got: list[str] = []

    async def slow(event: Any) -> None:
        await anyio.sleep(0.001)
        got.append(event.name)

    async with _kernel() as kernel:
        kernel.bus.add_callback(slow, name="slow", pattern="stage.*")
        result = await kernel.compose({"llm": ScriptedBackend()}).run("x")
    assert got == [e.name for e in result.events if e.name.startswith("stage.")]


class Tools:
    """One tool, ``echo``."""

    @hookimpl
    def aieng_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name="echo", description="echoes")]

    @hookimpl
    async def aieng_call_tool(self, call: ToolCall) -> ToolResult:
        return ToolResult(call.id, str(call.arguments.get("text", "")))


@BOTH
async def test_agent_runner_on_either_backend() -> None:
    """The agent runner calls a tool and answers under trio as under asyncio."""
    async with _kernel() as kernel:
        model = ScriptedBackend([[ToolCall(id="c1", name="echo", arguments={"text": "hi"})],
                                 "done"])
        pipeline = kernel.compose({"llm": model, "tools": Tools()}, name="agent")
        result = await Agent(pipeline).run("say hi")
    assert result.status == "answered" and result.steps[0].results[0].content == "hi"


# -- another thread's loop, a second loop, a fork --------------------------------------------


@BOTH
async def test_a_pipeline_called_from_another_threads_loop_is_refused() -> None:
    """A pipeline of a running kernel called from another thread's own event loop is
    refused with an error saying what to do: its locks and events belong to the kernel's
    loop (a single-flight follower there waited its whole limit; across backends it failed
    deep inside)."""
    async with _kernel() as kernel:
        pipeline = kernel.compose({"llm": ScriptedBackend()})
        await pipeline.run("warm")
        errors: list[BaseException] = []

        def other_loop() -> None:
            try:
                anyio.run(pipeline.run, "x")
            except BaseException as exc:  # noqa: BLE001 - the test reads it
                errors.append(exc)

        thread = threading.Thread(target=other_loop)
        thread.start()
        await anyio.to_thread.run_sync(thread.join)
    [error] = errors
    assert isinstance(error, RuntimeError) and "anyio.from_thread.run" in str(error)


@pytest.mark.parametrize("second", ["asyncio", "trio"])
def test_a_kernel_runs_again_in_a_second_event_loop(second: str) -> None:
    """A kernel exited in one event loop starts again in a second one (``asyncio.run``
    twice, as scripts and notebooks do; trio after asyncio); its closed pipelines say so."""
    kernel = _kernel()
    first = kernel.compose({"llm": ScriptedBackend(["one"])})

    async def use(backend_pipeline: Any) -> str:
        async with kernel:
            return (await backend_pipeline().run("x")).answer

    assert anyio.run(use, lambda: first, backend="asyncio") == "one"
    with pytest.raises(RuntimeError, match="is closed"):
        anyio.run(use, lambda: first, backend=second)
    fresh = lambda: kernel.compose({"llm": ScriptedBackend(["two"])})
    assert anyio.run(use, fresh, backend=second) == "two"
    assert anyio.run(use, fresh, backend="asyncio") == "two"


@pytest.mark.parametrize("second", ["asyncio", "trio"])
def test_a_kernel_made_inside_a_first_loop_serves_a_second(second: str) -> None:
    """A Kernel constructed inside a first ``asyncio.run`` (``async with Kernel()``) serves
    a later loop of either backend, the default embedder's lock included (it was the first
    loop's: "no running event loop" deep inside on trio)."""
    made: list[Kernel] = []

    async def use() -> object:
        if not made:
            made.append(Kernel(env={}, entry_points=[]))
        async with made[0] as kernel:
            await kernel.compose({"llm": ScriptedBackend()}).run("x")
            return await kernel.default_embedder()  # none installed: None, past its lock

    assert anyio.run(use, backend="asyncio") is None
    assert anyio.run(use, backend=second) is None


def _in_child(work: Any) -> str:
    """Run ``work()`` in a forked child; what it returns (or raises) as text."""
    try:
        return str(in_forked_child(work, timeout=20))
    except Exception as exc:  # noqa: BLE001 - the child's error, as text
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # a child of a trio worker thread
async def test_a_forked_child_is_refused_the_running_kernel_but_may_start_its_own() -> None:
    """After ``os.fork()`` (``multiprocessing`` "fork", gunicorn --preload) a child using the
    parent's running kernel gets an error naming the fork and what to do (its event loop,
    threads and connections are the parent's); a kernel not running at the fork starts in
    the child and works."""
    idle = _kernel()
    idle_pipeline = idle.compose({"llm": ScriptedBackend(["child answer"])})

    async def child_own() -> str:
        async with idle:
            return (await idle_pipeline.run("x")).answer

    async with _kernel() as kernel:
        pipeline = kernel.compose({"llm": ScriptedBackend(["parent answer"])})
        await pipeline.run("warm")
        # From a worker thread, as a pool does: a child of the loop's own thread is inside
        # the parent's running loop and cannot start one at all.
        used = await anyio.to_thread.run_sync(
            _in_child, lambda: anyio.run(pipeline.run, "x").answer)
        entered = await anyio.to_thread.run_sync(_in_child, lambda: anyio.run(_enter, kernel))
        own = await anyio.to_thread.run_sync(_in_child, lambda: anyio.run(child_own))
        assert (await pipeline.run("again")).answer == "parent answer"
    assert used.startswith("RuntimeError: ") and "forked" in used and "spawn" in used
    assert entered.startswith("RuntimeError: ") and "forked" in entered
    assert own == "child answer"


def test_runs_in_forked_children_have_ids_of_their_own() -> None:
    """A pipeline built before a fork (gunicorn --preload builds its app, then forks the
    workers) gives each process run ids of its own: feedback, traces and logs are joined by
    the run id, and two workers must never both answer ``<prefix>-1``."""
    kernel = _kernel()
    pipeline = kernel.compose({"llm": ScriptedBackend(["answer"])})

    async def one_run() -> str:
        async with kernel:
            return (await pipeline.run("x")).run_id

    children = [_in_child(lambda: anyio.run(one_run)) for _ in range(2)]
    ids = [*children, anyio.run(one_run)]
    assert all(id_.endswith("-1") for id_ in ids), ids  # each process's first run
    assert len(set(ids)) == 3, ids


@BOTH
async def test_a_run_in_a_cancelled_scope_does_not_start() -> None:
    """A run whose caller's deadline has passed (the host's cancel scope is cancelled) is
    cancelled before it starts, even when no component awaits: no model call, and the
    host's scope catches the cancellation."""
    backend = ScriptedBackend(["answer"])
    async with _kernel() as kernel:
        pipeline = kernel.compose({"llm": backend})
        await pipeline.open()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await pipeline.run("x")
        assert scope.cancelled_caught
        assert backend.requests == []
        assert (await pipeline.run("y")).answer == "answer"  # the pipeline is unharmed


async def _enter(kernel: Kernel) -> None:
    async with kernel:
        pass


# -- values and errors sent to worker processes ----------------------------------------------


def _same_error(a: BaseException, b: BaseException) -> None:
    assert type(a) is type(b) and str(a) == str(b) and a.args == b.args
    assert {k: v for k, v in vars(a).items() if k != "cause"} == \
        {k: v for k, v in vars(b).items() if k != "cause"}


class Unpicklable(Exception):
    """A plugin's exception taking a keyword-only argument: it does not unpickle."""

    def __init__(self, *, code: int) -> None:
        super().__init__(f"code {code}")


@given(hook=st.text(min_size=1, max_size=20), plugin=st.text(min_size=1, max_size=20), hint=st.text(max_size=20),
       final=st.booleans(), stage=st.text(max_size=10))
@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
def test_hook_error_pickles_with_its_fields(hook: str, plugin: str, hint: str, final: bool,
                                            stage: str) -> None:
    """A HookError (keyword-only ``__init__``) round-trips through pickle with its text and
    fields, as a worker process sends it back (it did not unpickle at all)."""
    error = HookError(hook=hook, plugin=plugin, stage=stage, hint=hint, final=final,
                      cause=ValueError("bad value"), distribution="d 1.0")
    back = pickle.loads(pickle.dumps(error))
    _same_error(error, back)
    assert repr(back.cause) == "ValueError('bad value')"


def test_hook_error_with_an_unpicklable_cause_pickles_its_text() -> None:
    """A cause that does not pickle itself travels as a RuntimeError with its type and text."""
    error = HookError(hook="aieng_generate", plugin="llm", cause=Unpicklable(code=7))
    back = pickle.loads(pickle.dumps(error))
    assert str(back) == str(error)
    assert isinstance(back.cause, RuntimeError) and str(back.cause) == "Unpicklable: code 7"


def test_every_public_error_round_trips_through_pickle() -> None:
    """ConfigError keeps its source (it came back prefixed ``<dict>:``), the other kernel
    errors their text and fields."""
    errors: list[BaseException] = [
        ConfigError("not a number", source="qa.toml", key="components.k", expected="int",
                    choices=["1", "2"]),
        DuplicateComponentError("two 'bm25'"), UnknownComponentError("no 'x'"),
    ]
    for error in errors:
        _same_error(error, pickle.loads(pickle.dumps(error)))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_agent_closed_error_pickles_with_its_result() -> None:
    """AgentClosedError carries the run so far; pickled, it still does (it failed)."""
    async with _kernel() as kernel:
        pipeline = kernel.compose({"llm": ScriptedBackend()}, name="agent")
        await pipeline.aclose()
        with pytest.raises(AgentClosedError) as caught:
            await Agent(pipeline).run("x")
    back = pickle.loads(pickle.dumps(caught.value))
    assert str(back) == str(caught.value) and back.result == caught.value.result


@given(st.one_of(strat.events(), strat.hits(), strat.documents(), strat.queries(),
                 strat.runs()))
@settings(max_examples=60)
def test_boundary_values_round_trip_through_pickle(value: object) -> None:
    """Events, hits, documents, queries and runs pickle to equal values."""
    assert pickle.loads(pickle.dumps(value)) == value


def test_configs_pickle_and_kernels_and_pipelines_say_what_to_send() -> None:
    """A PipelineConfig pickles; a Kernel or Pipeline refuses with a TypeError saying what
    to send instead (it failed on a module object deep inside)."""
    kernel = _kernel().load()
    config = PipelineConfig.load("examples/pipelines/docs-qa.toml", kernel.registry)
    assert pickle.loads(pickle.dumps(config)) == config
    pipeline = kernel.compose({"llm": ScriptedBackend()})
    with pytest.raises(TypeError, match="send its config"):
        pickle.dumps(pipeline)
    with pytest.raises(TypeError, match="Kernel cannot be pickled"):
        pickle.dumps(kernel)


# -- the host's logging set-up ---------------------------------------------------------------


@pytest.fixture
def unconfigured_structlog() -> Iterator[None]:
    """structlog as a program that configured nothing has it; put back after."""
    saved = structlog.get_config() if structlog.is_configured() else None
    structlog.reset_defaults()
    try:
        yield
    finally:
        structlog.reset_defaults()
        if saved is not None:
            structlog.configure(**saved)


def no_root_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The root logger as a program that configured no ``logging`` has it, for the rest of
    the test (pytest adds handlers of its own as the test's call begins)."""
    import logging

    monkeypatch.setattr(logging.getLogger(), "handlers", [])


@pytest.mark.usefixtures("unconfigured_structlog")
async def test_a_host_that_configured_only_logging_gets_the_lines_through_its_handlers(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that configured the standard library's logging (a handler on the root
    logger) and not structlog gets the kernel's lines through its handlers, at its
    levels and in its format, under the module's logger name, with the run's id and the
    credentials hidden; nothing on standard error (they were JSON lines there)."""
    import logging

    class Broken:
        @hookimpl
        def aieng_retrieve(self) -> list[Any]:
            raise OSError("disk gone")

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    no_root_handlers(monkeypatch)
    logging.getLogger().addHandler(Keep())  # the host's logging.basicConfig(...), say
    async with _kernel(loop_block_threshold=None) as kernel:
        pipeline = kernel.compose({"broken": Broken()}, name="logged", stages=["retrieve"],
                                  on_error="skip")
        result = await pipeline.run("q")
        structlog.get_logger("host").info("host.quiet")  # below the root's WARNING
        structlog.get_logger("host").warning("host.loud", api_key="sk-secret")
    (failed,) = [r for r in records if r.getMessage().startswith("hook.failed ")]
    assert failed.name == "aieng_core.dispatch" and failed.levelno == logging.WARNING
    assert f"run_id={result.run_id!r}" in failed.getMessage()
    assert failed.aieng["plugin"] == "broken"  # type: ignore[attr-defined]
    assert [r.getMessage() for r in records if r.name == "host"] == ["host.loud api_key='***'"]
    assert capsys.readouterr().err == ""


@pytest.mark.usefixtures("unconfigured_structlog")
def test_a_host_level_set_after_the_kernel_is_obeyed(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A host setting its level after creating a Kernel (structlog's documented one-liner,
    which keeps the processors) gets its info lines: the kernel's default WARNING filter
    steps aside (it dropped them); before that, the kernel's quiet default holds."""
    import logging

    no_root_handlers(monkeypatch)
    _kernel()
    log = structlog.get_logger("host")
    log.info("host.before")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    log.info("host.after")
    log.debug("host.debug")
    err = capsys.readouterr().err
    assert "host.before" not in err and "host.debug" not in err
    assert "host.after" in err
