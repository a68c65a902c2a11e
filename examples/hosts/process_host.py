"""A pool of worker processes embedding aieng: each worker (started with "spawn") opens
the pipeline from its file once, answers its share of the questions, and sends back the
``RunResult`` of each (pickled, events and all), or the error a question met (aieng's
errors pickle too, their fields included).

Each process has its own kernel and its own event loop: nothing of aieng is shared
between processes, and nothing needs to be. Run it from the repository root (the
pipeline file reads ``docs/``)::

    .venv/bin/python examples/hosts/process_host.py
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import anyio

from aieng_core import AiengError, Kernel, RunResult

PIPELINE = "examples/pipelines/docs-qa.toml"
QUESTIONS = ["What is reciprocal rank fusion?", "Which stage renders the prompt?",
             "How are events delivered to slow subscribers?", "What does the rerank stage do?",
             "What is the loop watchdog?", "How do I write a plugin?"]


def answer_share(path: str, questions: list[str]
                 ) -> tuple[int, list[RunResult | AiengError]]:
    """Runs in a worker process: open the pipeline once, answer every question of the
    share. A failure is sent back as the error itself, so one bad question spoils nothing
    (it pickles with its fields: a ``HookError`` names its stage and component)."""

    async def main() -> list[RunResult | AiengError]:
        answers: list[RunResult | AiengError] = []
        async with Kernel() as kernel, kernel.load_pipeline(path) as pipeline:
            for question in questions:
                try:
                    answers.append(await pipeline.run(question))
                except AiengError as exc:
                    answers.append(exc)
        return answers

    return os.getpid(), anyio.run(main)


def main(workers: int = 2) -> None:
    shares = [QUESTIONS[n::workers] for n in range(workers)]
    context = multiprocessing.get_context("spawn")  # the safe start method on every OS
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        done = list(pool.map(answer_share, [PIPELINE] * workers, shares))
    print("worker processes:", len({pid for pid, _ in done}))
    for share, (_, answers) in zip(shares, done, strict=True):
        for question, answer in zip(share, answers, strict=True):
            print("Q:", question)
            if isinstance(answer, AiengError):
                print("   error:", answer)
            else:
                print("A:", answer.answer)
                print("   run", answer.run_id, "events", len(answer.events),
                      "sources", [hit.document.id for hit in answer.hits[:2]])


if __name__ == "__main__":
    main()
