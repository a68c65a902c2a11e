"""Secrets never reach an error message: a refused URL is shown without its credentials."""

from __future__ import annotations

import pytest
from aieng_weaviate import WeaviateOptions
from aieng_weaviate._requests import connection_params

SECRET = "s3cr3t-p4ss"


@pytest.mark.parametrize("url", [
    f"http://admin:{SECRET}@localhost:8080",
    f"https://{SECRET}@weaviate.example.com",
    f"http://admin:{SECRET}@[::1]:8080/",
    f"http://localhost:8080/?api_key={SECRET}",
    f"http://localhost:8080/v1#{SECRET}",
    f"http://admin:{SECRET}@localhost:99999",
])
def test_a_refused_url_is_not_echoed_with_its_credentials(url: str) -> None:
    """A URL with a user and password (or a key in its query) is refused, as before, but
    the message, which reaches logs and terminals, shows it with them masked, and says to
    use ``api_key_env``; the same for one from ``AIENG_WEAVIATE_URL``."""
    with pytest.raises(ValueError, match="url must look like") as raised:
        WeaviateOptions(url=url)
    message = str(raised.value)
    assert SECRET not in message
    assert "***" in message and "api_key_env" in message
    with pytest.raises(ValueError) as raised:
        connection_params(WeaviateOptions(), {"AIENG_WEAVIATE_URL": url})
    assert SECRET not in str(raised.value)


def test_a_refused_url_without_credentials_is_shown_whole() -> None:
    """A URL with nothing secret in it is shown as written, to see what is wrong."""
    with pytest.raises(ValueError, match="got 'localhost:8080'"):
        WeaviateOptions(url="localhost:8080")
    with pytest.raises(ValueError, match=r"got 'http://\[::1::\]:8080'"):
        WeaviateOptions(url="http://[::1::]:8080")
