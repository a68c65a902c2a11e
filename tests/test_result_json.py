"""``RunResult.to_json`` is strict JSON, as ``AgentResult.to_json`` is: a number that is
not finite (a document's metadata, a model's tool arguments) is the string ``"NaN"``,
``"Infinity"`` or ``"-Infinity"``; ``json.dumps(..., allow_nan=False)`` refused it."""

from __future__ import annotations

import json
import math

import pytest

from aieng_core import Kernel
from aieng_core.testing.doubles import ScriptedBackend
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Document, Hit, Query

pytestmark = pytest.mark.anyio


class OddMetadata:
    """A retriever whose one document carries numbers that are not finite."""

    @hookimpl
    def aieng_retrieve(self, query: Query, k: int) -> list[Hit]:
        document = Document(id="d", text="t", metadata={
            "w": math.inf, "v": [-math.inf, math.nan, 1.5], "n": 2**60})
        return [Hit(document=document, score=1.0, rank=1, source="odd")]


def refuse(constant: str) -> None:
    raise ValueError(f"not strict JSON: {constant}")


async def test_run_result_json_is_strict(aieng_kernel: Kernel) -> None:
    pipeline = aieng_kernel.compose({"odd": OddMetadata(), "llm": ScriptedBackend(["ok"])})
    result = await pipeline.run("q")
    text = json.dumps(result.to_json(), allow_nan=False)
    data = json.loads(text, parse_constant=refuse)
    metadata = data["retrieved"][0]["document"]["metadata"]
    assert metadata == {"w": "Infinity", "v": ["-Infinity", "NaN", 1.5], "n": 2**60}
    assert data["answer"] == "ok"
