"""``openai`` passes the kit's backend conformance suite against a real loopback server."""

from __future__ import annotations

from typing import Any

import pytest
from _openai_double import OpenAIServerDouble
from aieng_openai import OpenAIBackend

from aieng_core.testing.conformance import BackendSuite


class TestOpenAIConformance(BackendSuite):
    """The component, talking HTTP to the server double, passes every check the kit makes
    of a backend: generate, stream (SSE), embed, unknown models, concurrency, the loop."""

    @pytest.fixture
    def component(self, double: OpenAIServerDouble, make_backend: Any) -> OpenAIBackend:
        """A component on the double; its policy is deterministic, so it says so. (The kit's
        kernel closes its pipelines, and with them the component's HTTP client.)"""
        backend: OpenAIBackend = make_backend()
        backend.deterministic = True
        return backend
