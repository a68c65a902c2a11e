"""Every guardrail component passes the kit's conformance suite of its role.

``retrieval-guard`` passes the reranker suite in its ``drop`` mode; ``flag`` and
``redact`` change the documents they keep on purpose (metadata, text), which the
reranker contract's "hits drawn from the input" check forbids, so they are tested in
test_pipeline.py instead.
"""

from __future__ import annotations

import threading

import pytest
from aieng_guardrails import (
    InjectionGuard,
    InjectionOptions,
    OutputGuard,
    OutputGuardOptions,
    PIIGuard,
    PIIOptions,
    RetrievalGuard,
)

from aieng_core.pipeline import Pipeline
from aieng_core.testing import EventCapture
from aieng_core.testing.conformance import GuardrailSuite, RerankerSuite
from aieng_core.testing.conformance._base import SUBJECT


class TestPII(GuardrailSuite):
    """``pii`` with its defaults (redact in, redact the model's own PII out)."""

    @pytest.fixture
    def component(self) -> PIIGuard:
        """The default PII guard."""
        return PIIGuard()

    async def test_long_texts_do_not_block_the_loop(
        self, conformance_pipeline: Pipeline, captured_events: EventCapture
    ) -> None:
        """A 300 kB prompt is scanned in a worker thread, in short steps: the watchdog sees
        no stall, and the scan ran off the event loop's thread."""
        component = conformance_pipeline.components[SUBJECT]
        threads: list[threading.Thread] = []
        check = component.check_input
        component.check_input = lambda request: (threads.append(threading.current_thread()),
                                                 check(request))[1]
        text = "invoice 2024 order shipped, " * 11_000 + "mail x@y.io"
        async with self.loop_watch(captured_events):
            verdict = await self.guard_input(conformance_pipeline, text)
        assert verdict.action == "redact" and verdict.text.endswith("mail <EMAIL_1>")
        assert threads and threads[0] is not threading.main_thread()


class TestPIIRestoring(GuardrailSuite):
    """``pii`` restoring placeholders in the answer."""

    @pytest.fixture
    def component(self) -> PIIGuard:
        """A PII guard with ``restore = true``."""
        return PIIGuard(PIIOptions(restore=True))


class TestPIIRestoringListedCalls(GuardrailSuite):
    """``pii`` restoring the answer and the calls of one listed tool only."""

    @pytest.fixture
    def component(self) -> PIIGuard:
        """A PII guard with ``restore = true`` and ``restore_calls = ["send"]``."""
        return PIIGuard(PIIOptions(restore=True, restore_calls=["send"]))


class TestInjection(GuardrailSuite):
    """``injection`` blocking at the default threshold."""

    @pytest.fixture
    def component(self) -> InjectionGuard:
        """The default injection guard."""
        return InjectionGuard()


class TestInjectionRedacting(GuardrailSuite):
    """``injection`` redacting between 0.3 and 0.95."""

    @pytest.fixture
    def component(self) -> InjectionGuard:
        """An injection guard that removes injected sentences below the block threshold."""
        return InjectionGuard(InjectionOptions(block_threshold=0.95, redact_threshold=0.3))


class TestOutputGuard(GuardrailSuite):
    """``output-guard`` redacting, with a canary and blocked terms."""

    @pytest.fixture
    def component(self) -> OutputGuard:
        """An output guard with a canary and two blocked terms."""
        return OutputGuard(OutputGuardOptions(canaries=("ZEBRA-7741",),
                                              blocked_terms=("password", "东京")))


class TestOutputGuardBlocking(GuardrailSuite):
    """``output-guard`` blocking."""

    @pytest.fixture
    def component(self) -> OutputGuard:
        """An output guard with the block policy."""
        return OutputGuard(OutputGuardOptions(policy="block"))


class TestRetrievalGuard(RerankerSuite):
    """``retrieval-guard`` dropping injected hits."""

    filters = True  # it drops the hits it finds injected

    @pytest.fixture
    def component(self) -> RetrievalGuard:
        """The default retrieval guard."""
        return RetrievalGuard()
