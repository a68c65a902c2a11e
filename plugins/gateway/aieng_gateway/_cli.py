"""The plugin's commands: ``aieng serve`` and ``aieng keys create / list / revoke``.

Registered through ``aieng_register_commands``; starlette and uvicorn load only when
``serve`` runs, so ``aieng --help`` stays fast.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import structlog

from ._keys import KeyStore, KeyStoreError, default_keys_path
from ._settings import GatewaySettings, parse_size

__all__ = ["add_commands", "build_pipeline", "keys", "serve"]

log = structlog.get_logger(__name__)

_KEYS_HELP = "The API-key database (default: $AIENG_KEYS or the user data dir)."
#: Seconds uvicorn leaves the gateway, past the grace period, to answer what it stopped.
_STOP_MARGIN = 3.0


@contextmanager
def _clear_errors() -> Iterator[None]:
    """A refused value or an unusable key database is a one-line error, not a traceback."""
    try:
        yield
    except (KeyStoreError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def _store(keys_path: Path | None) -> KeyStore:
    """The key database of ``--keys``, else the default one (no home folder to find it
    in: a one-line error)."""
    with _clear_errors():
        return KeyStore(keys_path or default_keys_path())


def _seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """A finite number of seconds: click's float range lets ``nan`` and ``inf`` through."""
    if not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number of seconds, got {value}")
    return value


def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def build_pipeline(kernel: Any, path: Path, *, monitor: bool, feedback_db: Path | None) -> Any:
    """Load PIPELINE and add a ``monitor`` and a ``feedback-sqlite`` component when the
    file has none and the aieng-monitoring plugin is installed (found by component name,
    never imported)."""
    from aieng_core import PipelineConfig

    config = PipelineConfig.load(path, kernel.registry)
    data = config.to_dict()
    uses = {c.get("use") for c in data.get("components", {}).values()}
    components = kernel.registry.components
    if monitor and "monitor" not in uses and "monitor" in components:
        data["components"]["_monitor"] = {"use": "monitor"}
    if feedback_db is not None and "feedback-sqlite" not in uses \
            and "feedback-sqlite" in components:
        data["components"]["_feedback"] = {"use": "feedback-sqlite", "path": str(feedback_db)}
    return kernel.pipeline(PipelineConfig.from_dict(data, kernel.registry, source=str(path)))


@click.command()
@click.argument("pipeline", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--no-auth", is_flag=True,
              help="Serve without API keys (logs a warning): only on a trusted network.")
@click.option("--keys", "keys_path", default=None, type=click.Path(path_type=Path),
              help=_KEYS_HELP)
@click.option("--max-body", default="1MB", show_default=True, callback=_size,
              help="Largest request body (1MB, 512KiB, bytes); larger ones get 413.")
@click.option("--regenerate-window", default=120.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True), callback=_seconds,
              help="Seconds within which a repeated conversation counts as 'regenerate'.")
@click.option("--public-metrics", is_flag=True, help="Serve /metrics without a key.")
@click.option("--monitor/--no-monitor", default=True, show_default=True,
              help="Add the 'monitor' component when the pipeline has none.")
@click.option("--feedback-db", default=".aieng/feedback.sqlite3", show_default=True,
              type=click.Path(path_type=Path),
              help="Where the added 'feedback-sqlite' sink stores feedback "
                   "(when the pipeline has no sink of its own).")
@click.option("--graceful-timeout", default=25.0, show_default=True,
              type=click.FloatRange(min=0), callback=_seconds,
              help="Seconds a stop (SIGTERM, Ctrl-C) leaves requests in flight to finish; "
                   "those still running then end with 503.")
@click.option("--keepalive", default=15.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds of silence after which a stream sends an SSE keep-alive "
                   "comment, so proxies' idle timeouts do not cut it (0: off).")
@click.option("--expose-upstream-urls", is_flag=True,
              help="Show clients the URLs an upstream error names (by default they read "
                   "<upstream>; the whole message is logged).")
@click.option("--max-tokens", default=None, type=click.IntRange(min=1),
              help="The most tokens a chat request may ask for (max_tokens or "
                   "max_completion_tokens; more: 400), and what one asking none gets "
                   "(default: no cap). With --agent: each model call of a run.")
@click.option("--agent", is_flag=True,
              help="Answer each chat completion with an agent run over the pipeline: its "
                   "tools run on the server, the final answer is the reply.")
@click.option("--max-steps", default=None, type=click.IntRange(min=1),
              help="With --agent: the most steps of one run (default 10).")
@click.option("--agent-timeout", default=None, type=click.FloatRange(min=0, min_open=True),
              help="With --agent: seconds for one whole run (default: no limit).")
@click.pass_context
def serve(ctx: click.Context, pipeline: Path, host: str, port: int, no_auth: bool,
          keys_path: Path | None, max_body: int, regenerate_window: float,
          public_metrics: bool, monitor: bool, feedback_db: Path,
          graceful_timeout: float, keepalive: float, expose_upstream_urls: bool,
          max_tokens: int | None, agent: bool, max_steps: int | None,
          agent_timeout: float | None) -> None:
    """Serve PIPELINE (a TOML file) over the OpenAI HTTP API: /v1/chat/completions,
    /v1/embeddings, /v1/models, /v1/feedback, /metrics, /healthz."""
    import uvicorn

    from aieng_core import Kernel

    from ._app import Gateway

    if not agent:
        for name, value in (("--max-steps", max_steps), ("--agent-timeout", agent_timeout)):
            if value is not None:
                raise click.UsageError(f"{name} needs --agent")
    # The root command's kernel (plugins already loaded) when there is one.
    root = ctx.find_root().obj
    kernel = root.get("kernel") if isinstance(root, dict) else None
    if not isinstance(kernel, Kernel):
        kernel = Kernel().load()
    store = None
    if not no_auth:
        store = _store(keys_path)
        if not store.path.exists():
            raise click.UsageError(f"no API keys at {store.path}: create one with "
                                   "'aieng keys create NAME', or pass --no-auth")
        with _clear_errors():
            store.records()  # an unreadable file fails here, not as a startup traceback
    with _clear_errors():  # --keepalive nan / inf: one line, not a traceback
        options = None
        if agent:
            from aieng_core.agent import AgentOptions

            options = AgentOptions(timeout=agent_timeout) if max_steps is None else \
                AgentOptions(max_steps=max_steps, timeout=agent_timeout)
        settings = GatewaySettings(auth=not no_auth, max_body=max_body,
                                   regenerate_window=regenerate_window,
                                   public_metrics=public_metrics, keepalive_s=keepalive,
                                   expose_upstream_urls=expose_upstream_urls, agent=options,
                                   max_tokens=max_tokens)

    def build(running: Any) -> Any:
        return build_pipeline(running, pipeline, monitor=monitor, feedback_db=feedback_db)

    from aieng_core import PipelineConfig

    PipelineConfig.load(pipeline, kernel.registry)  # a bad file fails before binding the port
    gateway = Gateway(build, keys=store, settings=settings, kernel=lambda: kernel)

    # The pipeline's failure to start (a component that cannot build or open), kept to be
    # reported as the CLI's one line instead of uvicorn's traceback.
    failures: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await gateway.app(scope, receive, send)
            return

        async def quiet(message: Any) -> None:
            if message["type"] == "lifespan.startup.failed":
                message = {**message, "message": ""}  # uvicorn would log the traceback
            await send(message)

        try:
            await gateway.app(scope, receive, quiet)
        except BaseException as exc:
            failures.append(exc)
            raise

    where = f"[{host}]" if ":" in host else host

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            try:
                await super().startup(sockets)
            except SystemExit:
                if not failures:  # uvicorn logged why it could not bind; say where
                    click.echo(f"aieng serve: cannot listen on {where}:{port}", err=True)
                raise
            if self.started:  # bound: the real port (--port 0 lets the OS pick one)
                bound = self.servers[0].sockets[0].getsockname()[1]
                click.echo(f"aieng serve: {pipeline} on http://{where}:{bound}/v1 "
                           f"(auth {'off' if no_auth else 'on'}"
                           f"{', agent' if agent else ''})", err=True)

        def handle_exit(self, sig: int, frame: Any) -> None:
            forced = self.should_exit and not self.force_exit and sig == signal.SIGINT
            super().handle_exit(sig, frame)
            if forced:  # uvicorn stops waiting; what runs is cancelled, the pipeline closes
                os.write(2, b"aieng serve: second Ctrl-C: requests still running are cut "
                            b"short; the pipeline closes\n")

        async def shutdown(self, sockets: Any = None) -> None:
            # What outlasts the grace period ends as a 503 (a stream: an error event) just
            # before uvicorn would cancel it: a bare 500, a cut stream and a traceback.
            import asyncio

            deadline = asyncio.get_running_loop().call_later(graceful_timeout,
                                                             gateway.stop_runs)
            try:
                await super().shutdown(sockets)
            finally:
                deadline.cancel()

    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                   access_log=False, lifespan="on",
                                   timeout_graceful_shutdown=math.ceil(
                                       graceful_timeout + _STOP_MARGIN)))
    logging.getLogger("uvicorn.error").addFilter(
        lambda record: not (failures and record.getMessage().startswith(
            "Application startup failed")))
    # Once a second Ctrl-C forces the exit, the requests and the lifespan it cancels would
    # each log a traceback of that cancellation: the line handle_exit wrote says it all.
    logging.getLogger("uvicorn.error").addFilter(
        lambda record: not (server.force_exit and record.levelno >= logging.ERROR))
    # Ctrl-C stops the server gracefully, then exits 130 as every aieng command does;
    # SIGTERM stops it gracefully too, then ends the process by that signal (143).
    try:
        server.run()
    except SystemExit:
        if failures and not server.started:
            raise _cause(failures[0]) from None  # one line, the exit status of `aieng run`
        raise
    if not server.started:
        ctx.exit(3)  # uvicorn's STARTUP_FAILURE


def _cause(error: BaseException) -> BaseException:
    """The one error inside nested exception groups (task groups wrap what they raise)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


@click.group()
def keys() -> None:
    """Manage the gateway's API keys (stored hashed; a key is shown once)."""


@keys.command("create")
@click.argument("name")
@click.option("--rpm", default=None, type=click.IntRange(min=1), help="Requests per minute.")
@click.option("--tpm", default=None, type=click.IntRange(min=1),
              help="Tokens per minute (prompt + completion).")
@click.option("--keys", "keys_path", default=None, type=click.Path(path_type=Path),
              help=_KEYS_HELP)
def create(name: str, rpm: int | None, tpm: int | None, keys_path: Path | None) -> None:
    """Create a key named NAME and print it (once: only its hash is stored)."""
    store = _store(keys_path)
    with _clear_errors():
        key, record = store.create(name, rpm=rpm, tpm=tpm)
    click.echo(key)
    click.echo(f"key id {record.id} ({name}) stored in {store.path}; this is the only time "
               "the key is shown", err=True)


@keys.command("list")
@click.option("--keys", "keys_path", default=None, type=click.Path(path_type=Path),
              help=_KEYS_HELP)
def list_keys(keys_path: Path | None) -> None:
    """List the keys: id, name, limits, created, revoked (never the keys)."""
    store = _store(keys_path)
    click.echo(f"{'id':<9} {'name':<20} {'rpm':>7} {'tpm':>9}  {'created':<20} revoked")
    with _clear_errors():
        records = store.records()
    for k in records:
        click.echo(f"{k.id:<9} {k.name[:20]:<20} {k.rpm or '-':>7} {k.tpm or '-':>9}  "
                   f"{_when(k.created):<20} {_when(k.revoked) if k.revoked else '-'}")


@keys.command("revoke")
@click.argument("id_or_name")
@click.option("--keys", "keys_path", default=None, type=click.Path(path_type=Path),
              help=_KEYS_HELP)
def revoke(id_or_name: str, keys_path: Path | None) -> None:
    """Revoke the key with this id, or else every live key with this name."""
    store = _store(keys_path)
    with _clear_errors():
        revoked = store.revoke(id_or_name)
    if not revoked:
        raise click.ClickException(f"no live key has id or name {id_or_name!r}")
    for k in revoked:
        click.echo(f"revoked {k.id} ({k.name})")


def _when(ts: float | None) -> str:
    """An epoch time as ISO 8601 in UTC with its zone (``2025-01-31T23:59:59Z``): a time
    without one reads as the reader's local time."""
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_commands(cli: click.Group) -> None:
    """Add ``serve`` and ``keys`` to the root group."""
    cli.add_command(serve)
    cli.add_command(keys)
