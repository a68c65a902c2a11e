"""Caches store the model's answer before output guards; the guards run again on a hit."""

from __future__ import annotations

import pytest

from aieng_core import Kernel
from aieng_core.testing.doubles import PromptCache, ScriptedBackend
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, GuardVerdict

pytestmark = pytest.mark.anyio



class PerUserRestore:
    """Output guard double: fills ``<NAME>`` with the name of the user of the run (the way
    a PII guard restores a user's own redacted values)."""

    def __init__(self) -> None:
        self.user = ""

    @hookimpl
    def aieng_guard_output(self, completion: Completion) -> GuardVerdict | None:
        if "<NAME>" not in completion.text:
            return None
        return GuardVerdict(action="redact", text=completion.text.replace("<NAME>", self.user))


async def test_a_hit_never_serves_another_runs_guarded_answer(aieng_kernel: Kernel) -> None:
    cache, guard = PromptCache(), PerUserRestore()
    backend = ScriptedBackend(["Hello <NAME>, here is your answer."])
    pipeline = aieng_kernel.compose({"cache": cache, "llm": backend, "restore": guard})
    guard.user = "Ada"
    first = await pipeline.run("greet me")
    guard.user = "Grace"
    second = await pipeline.run("greet me")
    assert len(backend.requests) == 1 and second.cache_hit == "cache"
    assert first.answer == "Hello Ada, here is your answer."
    assert second.answer == "Hello Grace, here is your answer."
    assert cache.store["greet me"].text == "Hello <NAME>, here is your answer."


async def test_a_blocked_answer_is_not_stored(aieng_kernel: Kernel) -> None:
    class Block:
        @hookimpl
        def aieng_guard_output(self, completion: Completion) -> GuardVerdict:
            return GuardVerdict(action="block", text="withheld")

    cache = PromptCache()
    pipeline = aieng_kernel.compose({"cache": cache, "llm": ScriptedBackend(["x"]),
                                     "block": Block()})
    result = await pipeline.run("q")
    assert result.status == "blocked" and not cache.store


class Ending:
    """Backend double answering every request with one finish reason; counts its calls."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.calls = 0

    @hookimpl
    def aieng_generate(self) -> Completion:
        self.calls += 1
        return Completion(text="an answer", finish_reason=self.reason)  # type: ignore[arg-type]


@pytest.mark.parametrize("reason", ["error", "content_filter"])
async def test_a_failed_or_filtered_answer_is_not_stored(aieng_kernel: Kernel,
                                                         reason: str) -> None:
    """A completion the backend ended with finish_reason "error" or "content_filter" is not
    stored (the stage is recorded as skipped), so the next identical request asks the model
    again instead of replaying the failure."""
    cache, backend = PromptCache(), Ending(reason)
    pipeline = aieng_kernel.compose({"cache": cache, "llm": backend})
    first = await pipeline.run("q")
    assert not cache.store
    assert [(s.name, s.status) for s in first.stages][-1] == ("cache_store", "skipped")
    second = await pipeline.run("q")
    assert second.cache_hit is None and backend.calls == 2


@pytest.mark.parametrize("reason", ["stop", "length", "tool_calls"])
async def test_a_complete_or_length_cut_answer_is_stored(aieng_kernel: Kernel,
                                                         reason: str) -> None:
    """Answers ended normally, by max_tokens ("length", a faithful answer to the same
    request) or with tool calls are stored and replayed."""
    cache, backend = PromptCache(), Ending(reason)
    pipeline = aieng_kernel.compose({"cache": cache, "llm": backend})
    await pipeline.run("q")
    second = await pipeline.run("q")
    assert cache.store["q"].finish_reason == reason
    assert second.cache_hit == "cache" and backend.calls == 1
