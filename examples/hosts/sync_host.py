"""Synchronous code embedding aieng, as a script or a notebook does.

Two ways, both shown here:

- ``anyio.run`` per call: a plain function runs a whole kernel on a fresh event loop and
  returns. Each call is a separate loop, one after another; nothing is shared between them
  (a kernel and its pipelines belong to the loop that entered them).
- a blocking portal (``anyio.from_thread.start_blocking_portal``): one event loop in a
  thread of its own keeps the kernel and the pipeline open, and any number of the host's
  threads call ``portal.call(pipeline.run, question)``. This is the way for sync code
  that asks many questions: the pipeline opens once.

Run it from the repository root (it reads ``docs/``)::

    .venv/bin/python examples/hosts/sync_host.py
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import anyio
import anyio.from_thread

from aieng_core import Kernel, RunResult

PIPELINE = "examples/pipelines/docs-qa.toml"
QUESTIONS = ["What is reciprocal rank fusion?", "Which stage renders the prompt?",
             "How are events delivered to slow subscribers?", "What does the rerank stage do?"]


def ask_once(question: str) -> str:
    """One question, one event loop: the simplest sync call (the pipeline opens each time)."""

    async def main() -> str:
        async with Kernel() as kernel:
            pipeline = kernel.load_pipeline(PIPELINE)
            return (await pipeline.run(question)).answer

    return anyio.run(main)


def ask_many(questions: list[str], threads: int = 4) -> list[str]:
    """Many questions from a pool of the host's threads, through one portal: one loop, one
    kernel and one open pipeline serve every thread."""
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(Kernel()) as kernel:
        pipeline = kernel.load_pipeline(PIPELINE)
        with portal.wrap_async_context_manager(pipeline):  # open now, closed at the end

            def ask(question: str) -> str:  # runs in a worker thread of the host
                result: RunResult = portal.call(pipeline.run, question)
                return result.answer

            with ThreadPoolExecutor(threads) as pool:
                return list(pool.map(ask, questions))


def main() -> None:
    first = ask_once(QUESTIONS[0])
    again = ask_once(QUESTIONS[0])  # a second loop, after the first one ended
    print("two loops, same answer:", first == again)
    answers = ask_many(QUESTIONS)
    for question, answer in zip(QUESTIONS, answers, strict=True):
        print("Q:", question)
        print("A:", answer)
    print("portal agrees with anyio.run:", answers[0] == first)


if __name__ == "__main__":
    main()
