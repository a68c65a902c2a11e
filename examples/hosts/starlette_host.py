"""A Starlette application embedding aieng: the kernel and the pipeline live in the app's
lifespan, ``GET /ask?q=...`` answers from them, ``GET /ask/stream?q=...`` streams the
answer as server-sent events, and the aieng gateway's OpenAI-compatible app is mounted
under ``/openai`` on the same kernel.

Starlette runs the lifespan of the application it serves, not of the apps mounted under it:
the gateway's own lifespan never runs when it is mounted, so the host's lifespan enters
``gateway.running()`` itself (without it every gateway route answers 500).

Run it from the repository root (it reads ``docs/``); this starts uvicorn on loopback::

    .venv/bin/python examples/hosts/starlette_host.py --port 8000
    curl 'http://127.0.0.1:8000/ask?q=What+is+reciprocal+rank+fusion%3F'
    curl -N 'http://127.0.0.1:8000/ask/stream?q=What+is+reciprocal+rank+fusion%3F'
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from aieng_gateway import Gateway, GatewaySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from aieng_core import AiengError, Kernel, Pipeline

PIPELINE = "examples/pipelines/docs-qa.toml"


async def ask_stream(request: Request) -> ASGIApp:
    """``GET /ask/stream?q=...``: the answer as server-sent events, one ``data:`` line per
    piece of text (a JSON string), then an ``end`` event with the run's id and status (or
    an ``error`` event). A client that goes away cancels the run."""
    question = request.query_params.get("q", "").strip()
    if not question:
        return JSONResponse({"error": "give a question: /ask/stream?q=..."}, status_code=422)
    pipeline: Pipeline = request.app.state.pipeline

    def event(data: Any, name: str | None = None, last: bool = False) -> dict[str, Any]:
        text = (f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n"
        return {"type": "http.response.body", "body": text.encode(), "more_body": not last}

    async def until_disconnect(receive: Receive, run: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        run.cancel()  # the client is gone: leaving pipeline.stream's block cancels the run

    # An ASGI app of its own, not StreamingResponse: pipeline.stream holds a task group,
    # which must not be left open across the yield of an async generator.
    async def events(scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(until_disconnect, receive, group.cancel_scope)
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache")]})
            try:
                async with pipeline.stream(question) as deltas:
                    async for delta in deltas:
                        if delta.text:
                            await send(event(delta.text))
            except AiengError as exc:  # the status line is sent: the error is an event
                await send(event({"error": str(exc)}, "error", last=True))
            else:
                result = deltas.result
                await send(event({"run_id": result.run_id, "status": result.status}, "end",
                                 last=True))
            group.cancel_scope.cancel()  # the response is complete

    return events


def create_app() -> Starlette:
    """The host's app. Nothing is built until the server starts it (its lifespan)."""
    kernel = Kernel()
    # The gateway serves its own pipeline, built on the host's kernel (already running
    # when the gateway starts: the gateway must not enter it a second time). Auth is off
    # for the example only; a real host gives it a KeyStore (plugins/gateway/README.md).
    gateway = Gateway(lambda k: k.load_pipeline(PIPELINE),
                      kernel=lambda: contextlib.nullcontext(kernel),
                      settings=GatewaySettings(auth=False))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The pipeline is open until the server shuts down, then closed before the kernel.
        async with kernel, gateway.running(), kernel.load_pipeline(PIPELINE) as pipeline:
            app.state.pipeline = pipeline
            yield

    async def ask(request: Request) -> JSONResponse:
        question = request.query_params.get("q", "").strip()
        if not question:
            return JSONResponse({"error": "give a question: /ask?q=..."}, status_code=422)
        pipeline: Pipeline = request.app.state.pipeline
        result = await pipeline.run(question)
        return JSONResponse({"answer": result.answer, "run_id": result.run_id,
                             "sources": [hit.document.id for hit in result.hits]})

    app = Starlette(routes=[Route("/ask", ask), Route("/ask/stream", ask_stream),
                            Mount("/openai", app=gateway.app)], lifespan=lifespan)
    app.state.kernel, app.state.gateway = kernel, gateway
    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
