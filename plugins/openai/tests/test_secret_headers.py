"""A credential sent in ``headers`` (Azure's ``api-key``, a gateway's ``x-api-key``) is as
secret as ``api_key``: never in a repr, scrubbed from errors."""

from __future__ import annotations

from typing import Any

import pytest
from _openai_double import OpenAIServerDouble, Scripted
from aieng_hookspecs.types import Message, Request
from aieng_openai import OpenAIBackend, OpenAIError, OpenAIOptions

pytestmark = pytest.mark.anyio

AZURE_KEY = "azkey-0123456789abcdef-SECRETPART"


def test_header_values_are_not_in_the_options_repr() -> None:
    """The repr names the headers, never their values."""
    options = OpenAIOptions(base_url="http://127.0.0.1:9/v1", model="m",
                            headers={"api-key": AZURE_KEY, "X-Team": "search"})
    shown = repr(options)
    assert AZURE_KEY not in shown and AZURE_KEY[:8] not in shown
    assert "api-key" in shown and "X-Team" in shown
    assert options.headers["api-key"] == AZURE_KEY  # sent as given


async def test_a_credential_header_echoed_back_is_scrubbed(double: OpenAIServerDouble,
                                                          make_backend: Any) -> None:
    """A server that echoes the credential header's value (as OpenAI echoes a wrong key)
    shows it in no error message or body excerpt; a header that is no credential is
    left as it is."""
    double.script("chat/completions", Scripted(
        status=403, body=f'{{"error": "invalid subscription key {AZURE_KEY} (team search)"}}'))
    backend: OpenAIBackend = make_backend(headers={
        "Ocp-Apim-Subscription-Key": AZURE_KEY, "X-Team": "search"})
    with pytest.raises(OpenAIError) as caught:
        await backend.aieng_generate(Request(messages=(Message("user", "hi"),)))
    await backend.aclose()
    seen = " ".join([str(caught.value), repr(caught.value), caught.value.body])
    assert AZURE_KEY not in seen
    assert AZURE_KEY[:8] not in seen and AZURE_KEY[-8:] not in seen
    assert "team search" in caught.value.body
