"""A Starlette application embedding aieng: the kernel and the pipeline live in the app's
lifespan, ``GET /ask?q=...`` answers from them, and the aieng gateway's OpenAI-compatible
app is mounted under ``/openai`` on the same kernel.

Starlette runs the lifespan of the application it serves, not of the apps mounted under it:
the gateway's own lifespan never runs when it is mounted, so the host's lifespan enters
``gateway.running()`` itself (without it every gateway route answers 500).

Run it from the repository root (it reads ``docs/``); this starts uvicorn on loopback::

    .venv/bin/python examples/hosts/starlette_host.py --port 8000
    curl 'http://127.0.0.1:8000/ask?q=What+is+reciprocal+rank+fusion%3F'
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

from aieng_gateway import Gateway, GatewaySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from aieng_core import Kernel, Pipeline

PIPELINE = "examples/pipelines/docs-qa.toml"


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

    app = Starlette(routes=[Route("/ask", ask), Mount("/openai", app=gateway.app)],
                    lifespan=lifespan)
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
