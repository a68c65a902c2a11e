"""The plugin as the kernel sees it: registration, options, pipelines, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import aieng_openai
import pytest
from _openai_double import API_KEY, CHAT_MODEL, LoopbackServer, OpenAIServerDouble
from aieng_openai import OpenAIBackend, OpenAIOptions

from aieng_core import ConfigError, Kernel

pytestmark = pytest.mark.anyio


def pipeline_of(base_url: str, **options: Any) -> dict[str, Any]:
    return {"pipeline": {"name": "remote", "stages": ["generate"]},
            "components": {"llm": {"use": "openai", "base_url": base_url,
                                   "model": CHAT_MODEL, **options}}}


async def test_runs_in_a_pipeline_and_closes_its_client(
        aieng_kernel: Kernel, register_plugin: Any, double: OpenAIServerDouble,
        loopback: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline file naming ``openai`` (key from the environment) runs against the
    server; closing the pipeline closes the component's HTTP client."""
    monkeypatch.setenv("AIENG_TEST_OPENAI_KEY", API_KEY)
    with register_plugin(aieng_openai, "openai") as info:
        assert info.status == "loaded", info.error
        pipeline = aieng_kernel.pipeline(pipeline_of(
            loopback.base_url, api_key_env="AIENG_TEST_OPENAI_KEY", backoff_base=0.01))
    async with pipeline:
        result = await pipeline.run("What is six times seven?")
        component = next(c for c in pipeline.components.values()
                         if isinstance(c, OpenAIBackend))
        assert component._client is not None
    assert result.status == "ok" and result.answer == "You said: What is six times seven?"
    assert component._client is None


@pytest.mark.parametrize(("options", "found"), [
    ({"modle": "x"}, "modle"),
    ({"base_url": "127.0.0.1:8000"}, "http"),
    ({"base_url": "http://user:pw@host/v1"}, "credentials"),
    ({"base_url": "http://127.0.0.1:80O0/v1"}, "Port could not be cast"),
    ({"base_url": "http://127.0.0.1:99999/v1"}, "Port out of range"),
    ({"base_url": "http://host/v1?api-version=1"}, "query"),
    ({"api_key": "k", "api_key_env": "K"}, "not both"),
    ({"api_key_env": "AIENG_TEST_SURELY_UNSET"}, "AIENG_TEST_SURELY_UNSET"),
    ({"read_timeout": 0}, "read_timeout"),
    ({"max_retries": -1}, "max_retries"),
    ({"max_connections": 0}, "max_connections"),
    ({"max_connections": True}, "max_connections"),
    ({"pool_timeout": 0}, "pool_timeout"),
    ({"pool_timeout": "1s"}, "pool_timeout"),
    ({"headers": {"Authorization": "Bearer x"}}, "Authorization"),
    ({"max_tokens_field": "tokens"}, "max_tokens_field"),
    ({"api_key": "sk-cl\u00e9"}, "api_key must be printable ASCII"),
    ({"headers": {"X-Team": "\u00e9quipe"}}, "X-Team"),
    ({"headers": {"X Team": "a"}}, "not an HTTP header name"),
])
async def test_bad_options_fail_to_load(aieng_kernel: Kernel, register_plugin: Any,
                                        options: dict[str, Any], found: str) -> None:
    """Misspelled keys, bad URLs (a bad port, a query), two keys, an unset key variable and
    bad numbers fail the pipeline's loading with a message naming the problem."""
    with register_plugin(aieng_openai, "openai"):
        config = pipeline_of("http://127.0.0.1:9/v1")
        config["components"]["llm"].update(options)
        with pytest.raises(ConfigError, match=found):
            aieng_kernel.pipeline(config)


async def test_a_non_ascii_key_fails_to_load_without_showing_it(
        aieng_kernel: Kernel, register_plugin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key that cannot go in an HTTP header (a pasted non-ASCII character) fails the
    pipeline's loading, not the first call with a UnicodeEncodeError; the message does not
    show the key."""
    monkeypatch.setenv("AIENG_TEST_KEY", "sk-\u2019secret")
    with register_plugin(aieng_openai, "openai"):
        config = pipeline_of("http://127.0.0.1:9/v1")
        config["components"]["llm"]["api_key_env"] = "AIENG_TEST_KEY"
        with pytest.raises(ConfigError, match="AIENG_TEST_KEY must be printable") as caught:
            aieng_kernel.pipeline(config)
    assert "secret" not in str(caught.value)


def test_models_must_be_a_list() -> None:
    """``models="gpt-4o"`` from Python is a type error, not the five models g, p, t, -, 4o."""
    with pytest.raises(TypeError, match="got the string 'gpt-4o'"):
        OpenAIOptions(base_url="http://127.0.0.1:9/v1", model="m",
                      models="gpt-4o")  # type: ignore[arg-type]


def test_options_hide_the_key() -> None:
    """The options' repr never shows the key."""
    options = OpenAIOptions(base_url="http://127.0.0.1:9/v1", model="m", api_key=API_KEY)
    assert API_KEY not in repr(options) and API_KEY not in repr(OpenAIBackend(options))


def test_import_is_light() -> None:
    """Importing the plugin (warnings as errors) loads neither httpx nor starlette."""
    code = ("import sys, aieng_openai; "
            "assert 'httpx' not in sys.modules, 'httpx imported'; "
            "assert 'httpcore' not in sys.modules")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
