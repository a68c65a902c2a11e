"""``aieng_hookspecs.redacted``: credentials kept out of log lines, lockfiles and reports."""

from __future__ import annotations

import copy
from collections import namedtuple
from typing import Any

import pytest
from aieng_hookspecs import REDACTED, masked_url, redact_url, redacted, secret_key
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize("name", [
    "api_key", "apikey", "API_KEY", "openai_api_key", "password", "passwd", "secret",
    "client_secret", "token", "access_token", "Authorization", "proxy-authorization",
    "Cookie", "set-cookie", "X-Api-Key", "x-auth-token"])
def test_credential_names(name: str) -> None:
    assert secret_key(name)


@pytest.mark.parametrize("name", [
    "max_tokens", "token_count", "tokens", "model", "url", "api_key_env", "passwords_file",
    "secretary", "", "key"])
def test_names_that_are_no_credentials(name: str) -> None:
    assert not secret_key(name)


def test_no_string_is_a_credential_name() -> None:
    assert not secret_key(42)
    assert not secret_key(None)


@pytest.mark.parametrize(("text", "shown"), [
    ("redis://:hunter2@localhost:6379/0", "redis://:***@localhost:6379/0"),
    ("postgresql://me:p%40ss@db/x", "postgresql://me:***@db/x"),
    ("see https://u:pw@a.example and rediss://:x@b",
     "see https://u:***@a.example and rediss://:***@b"),
    ("http://localhost:8080/v1", "http://localhost:8080/v1"),  # a port is no password
    ("redis://localhost", "redis://localhost"),
    ("no url: a:b@c", "no url: a:b@c"),
])
def test_url_passwords(text: str, shown: str) -> None:
    assert redact_url(text) == shown


def test_mappings_lists_and_tuples_at_any_depth() -> None:
    config = {"components": {"llm": {"use": "openai", "api_key": "sk-1", "max_tokens": 5,
                                     "headers": {"Authorization": "Bearer t"}},
                             "cache": {"url": "redis://:pw@h", "token": None, "secret": ""}},
              "list": [{"password": "p"}, ("x", {"token": "t"})]}
    assert redacted(config) == {
        "components": {"llm": {"use": "openai", "api_key": REDACTED, "max_tokens": 5,
                               "headers": {"Authorization": REDACTED}},
                       "cache": {"url": "redis://:***@h", "token": None, "secret": ""}},
        "list": [{"password": REDACTED}, ("x", {"token": REDACTED})]}


def test_a_named_tuple_and_other_values_are_kept_whole() -> None:
    Pair = namedtuple("Pair", "token value")
    pair = Pair("t", 1)
    assert redacted(pair) is pair
    assert redacted(3.5) == 3.5


def test_a_cycle_ends() -> None:
    loop: dict[str, Any] = {"api_key": "k"}
    loop["self"] = loop
    out = redacted(loop)
    assert out["api_key"] == REDACTED


keys = st.sampled_from(["api_key", "token", "model", "url", "Authorization", "k", "x_token"])
leaves = st.one_of(st.none(), st.integers(), st.text(max_size=8),
                   st.sampled_from(["redis://:pw@h", "sk-secret"]))
trees = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)), max_leaves=20)


def _values_under_secret_keys(value: Any) -> list[Any]:
    found: list[Any] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if secret_key(key) and item not in (None, ""):
                found.append(item)
            found += _values_under_secret_keys(item)
    elif isinstance(value, list):
        for item in value:
            found += _values_under_secret_keys(item)
    return found


@given(trees)
def test_redacted_leaves_its_input_alone_and_no_credential_in_its_output(tree: Any) -> None:
    before = copy.deepcopy(tree)
    out = redacted(tree)
    assert tree == before
    assert all(v == REDACTED for v in _values_under_secret_keys(out))
    assert "pw@" not in repr(out)


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://user:pw@h:6379/0", "redis://user:***@h:6379/0"),
    ("https://TOKEN@weaviate.example.com", "https://***@weaviate.example.com"),
    ("http://admin:pw@[::1]:8080/", "http://admin:***@[::1]:8080/"),
    ("redis://h/0?db=1&password=pw&x=", "redis://h/0?db=1&password=***&x="),
    ("http://h:8080/?api_key=k", "http://h:8080/?api_key=***"),
    ("http://h:8080/?k", "http://h:8080/?***"),
    ("http://h:8080/v1#access_token=t", "http://h:8080/v1#***"),
    ("http://[::1::]:8080", "http://[::1::]:8080"),  # no URL a parser takes: still masked
    ("http://h/path@x", "http://h/path@x"),  # an @ in the path is no user information
    ("localhost:8080", "localhost:8080"),
])
def test_masked_url(url: str, shown: str) -> None:
    assert masked_url(url) == shown
