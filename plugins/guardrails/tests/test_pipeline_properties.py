"""Properties of the guards composed in one pipeline, as the README orders them
(``injection``, ``output-guard``, ``pii``), streamed (``guarded`` and ``live``) or not,
over generated personal data embedded in random Unicode text."""

from __future__ import annotations

import anyio
from aieng_guardrails import (
    InjectionGuard,
    OutputGuard,
    OutputGuardOptions,
    PIIGuard,
    PIIOptions,
)
from aieng_hookspecs.types import Delta, Request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_pii import texts_with_pii

from aieng_core import Kernel
from aieng_core.testing import ScriptedBackend

#: what the backend double adds to its echo: an e-mail of the model's own.
MODEL_VALUE = "eve@evil.example"


def echo(request: Request) -> str:
    """The backend double's reply: the prompt it saw, and an address of its own."""
    return f"{request.prompt}; I cc {MODEL_VALUE}"


async def run_guarded(text: str, restore: bool, stream: str | None
                      ) -> tuple[ScriptedBackend, str, str, str]:
    """Run ``text`` through the guarded pipeline: ``(backend, status, answer, shown)``,
    ``shown`` being the text every delta brought (``stream`` None: no ``on_delta``)."""
    backend = ScriptedBackend(echo)
    deltas: list[Delta] = []
    async with Kernel() as kernel:
        pipeline = kernel.compose(
            {"injection": InjectionGuard(),
             "out": OutputGuard(OutputGuardOptions(policy="redact")),
             "pii": PIIGuard(PIIOptions(restore=restore)), "llm": backend},
            stream=stream or "guarded")
        result = await pipeline.run(text, on_delta=None if stream is None else deltas.append)
    return backend, result.status, result.answer, "".join(d.text for d in deltas)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts_with_pii(), st.booleans(), st.sampled_from([None, "guarded", "live"]))
def test_no_raw_value_reaches_the_backend_or_the_caller(
        case: tuple[str, list[str]], restore: bool, stream: str | None) -> None:
    """The backend sees none of the user's values; the caller gets them back only with
    ``restore`` (exactly the text they wrote, echoed), never the model's own address, and
    a guarded stream shows the final answer only; a live one shows what the model wrote,
    which never held the user's values."""
    text, values = case
    backend, status, answer, shown = anyio.run(run_guarded, text, restore, stream)
    seen = [m.content for r in backend.requests for m in r.messages]
    assert not [v for v in values if any(v in content for content in seen)], seen
    if status == "blocked" or MODEL_VALUE in text:
        return
    assert MODEL_VALUE not in answer
    echoed, _, own = answer.rpartition("; I cc ")
    if restore:
        assert echoed == text
        # the model's address has a placeholder of its own, not one restoring a user value
        assert own.startswith("<EMAIL_") and own not in text
    else:
        assert not [v for v in values if v in answer], answer
    if stream == "guarded":
        assert shown == answer
    elif stream == "live":
        assert shown == echo(backend.requests[-1])
        assert not [v for v in values if v in shown]
