"""A trio program embedding aieng: index documents, answer questions side by side in the
host's own nursery under its own deadline, and stream an answer, all on trio.

Run it from the repository root (it reads ``docs/``)::

    .venv/bin/python examples/hosts/trio_host.py
"""

from __future__ import annotations

from pathlib import Path

import anyio
import trio
from aieng_hookspecs.types import Delta, Document

from aieng_core import Kernel

QUESTIONS = ["What is reciprocal rank fusion?", "Which stage renders the prompt?"]


def read_docs(folder: Path) -> list[Document]:
    """One document per Markdown file of ``folder`` (the host's own ingestion)."""
    return [Document(id=path.stem, text=path.read_text(encoding="utf-8"))
            for path in sorted(folder.glob("*.md"))]


async def main() -> None:
    async with Kernel() as kernel:
        pipeline = kernel.pipeline({
            "pipeline": {"name": "trio-qa", "stages": ["retrieve", "context", "generate"]},
            "components": {"docs": {"use": "memory"},  # starts empty: indexed below
                           "prompt": {"use": "prompt"},
                           "answer": {"use": "extractive", "max_sentences": 1}},
        })
        async with pipeline:  # closed when the block ends, before the kernel
            written = await pipeline.index(read_docs(Path("docs")))
            print("indexed", written)

            answers: dict[str, str] = {}

            async def ask(question: str) -> None:
                answers[question] = (await pipeline.run(question)).answer

            # The host's own deadline and task group around concurrent runs.
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for question in QUESTIONS:
                        nursery.start_soon(ask, question)
            for question in QUESTIONS:
                print("Q:", question)
                print("A:", answers[question])

            pieces: list[str] = []

            def on_delta(delta: Delta) -> None:
                pieces.append(delta.text)

            streamed = await pipeline.run(QUESTIONS[0], on_delta=on_delta)
            print("streamed", len(pieces), "pieces:", "".join(pieces) == streamed.answer)
            print("on trio:", trio.lowlevel.current_trio_token() is not None)


if __name__ == "__main__":
    anyio.run(main, backend="trio")
