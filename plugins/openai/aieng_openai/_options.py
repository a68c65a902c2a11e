"""The typed options of the ``openai`` component."""

from __future__ import annotations

import math
import re
import urllib.parse
from typing import Literal

import attrs
from aieng_hookspecs import listed

__all__ = ["OpenAIOptions"]

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Header names the component sets itself: a user header must not silently replace them.
_RESERVED_HEADERS = frozenset({"authorization", "content-type", "accept"})
#: Names of headers that carry a credential (Azure's ``api-key``, APIM's
#: ``Ocp-Apim-Subscription-Key``, ``x-api-key``, a proxy's token or cookie): their values
#: are scrubbed from errors as the API key is.
_CREDENTIAL_HEADER = re.compile(r"key|token|secret|auth|passw|cookie|signature|credential",
                                re.IGNORECASE)


def credential_headers(headers: dict[str, str]) -> list[str]:
    """The values (of 8 characters or more: a shorter one, ``on``, is no secret, and
    scrubbing it would garble every message) of the headers whose name says they carry a
    credential."""
    return [value for name, value in headers.items()
            if _CREDENTIAL_HEADER.search(name) and len(value.strip()) >= 8]


def _masked_headers(headers: dict[str, str]) -> str:
    """The headers as the options' repr shows them: names only, every value ``***``."""
    return repr(dict.fromkeys(headers, "***"))


def _base_url(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string, got {type(value).__name__}")
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(
            f"{attribute.name} must be an http(s) URL such as 'http://127.0.0.1:8000/v1' "
            f"(the OpenAI-compatible API root, usually ending in /v1), got {value!r}")
    if "@" in value.split("//", 1)[1].split("/", 1)[0]:
        raise ValueError(f"{attribute.name} must not carry credentials: use api_key or "
                         "api_key_env")
    try:  # a bad port would otherwise surface as httpx.InvalidURL on the first call
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - read for its ValueError
    except ValueError as error:
        raise ValueError(f"{attribute.name} is not a valid URL ({error}): {value!r}") from None
    if parts.query or parts.fragment:
        # Paths are appended to base_url: after a query they would land inside it.
        raise ValueError(f"{attribute.name} must not carry a query or fragment, got {value!r}")


def _opt_str(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"{attribute.name} must be a non-empty string or be left unset")


def _key(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    _opt_str(instance, attribute, value)
    if value is not None and not _header_safe(value):
        # Never the value itself in the message: it is a secret.
        raise ValueError(f"{attribute.name} must be printable ASCII (it is sent in an HTTP "
                         "header); check for a stray character pasted with it")


def _header_safe(text: str) -> bool:
    """Whether ``text`` can be an HTTP header value: printable ASCII and tabs."""
    return all(" " <= char <= "~" or char == "\t" for char in text)


def _env_name(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or not _ENV_NAME.match(value)):
        raise ValueError(f"{attribute.name} must name an environment variable "
                         f"(letters, digits, _), got {value!r}")


def _model(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must name the server's model "
                         "(what GET /v1/models lists)")


def _models(instance: object, attribute: attrs.Attribute[tuple[str, ...]],
            value: tuple[str, ...]) -> None:
    for name in value:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{attribute.name} must hold non-empty model names, got {name!r}")


def _seconds(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number of seconds, "
                        f"got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive, finite number of seconds, "
                         f"got {value!r}")


def _opt_seconds(instance: object, attribute: attrs.Attribute[float | None],
                 value: float | None) -> None:
    if value is not None:
        _seconds(instance, attribute, value)  # type: ignore[arg-type]


def _non_negative_seconds(instance: object, attribute: attrs.Attribute[float],
                          value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number of seconds, "
                        f"got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{attribute.name} must be at least 0 seconds, got {value!r}")


def _retries(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= 20:
        raise ValueError(f"{attribute.name} must be from 0 to 20, got {value!r}")


def _connections(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value!r}")


def _byte_count(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an integer number of bytes, "
                        f"got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1 byte, got {value!r}")


def _headers(instance: object, attribute: attrs.Attribute[dict[str, str]],
             value: dict[str, str]) -> None:
    for name, text in value.items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise TypeError(f"{attribute.name} must map header names to strings")
        if not name or not _header_safe(name) or ":" in name or " " in name:
            raise ValueError(f"{attribute.name}: {name!r} is not an HTTP header name")
        if not _header_safe(text):
            raise ValueError(f"{attribute.name}: the value of {name!r} must be printable "
                             "ASCII (HTTP headers carry no other characters)")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{attribute.name} must not set {name!r}: the component sets it "
                             "(use api_key or api_key_env for Authorization)")


@attrs.frozen
class OpenAIOptions:
    """Options of the ``openai`` backend.

    :param base_url: the API root of the server, as the OpenAI SDK takes it: requests go to
        ``{base_url}/chat/completions``, ``{base_url}/embeddings`` and ``{base_url}/models``
        (vLLM, llama.cpp server and TGI serve them under ``http://HOST:PORT/v1``). Required.
    :param model: the model sent when a request names none; the component answers requests
        whose ``model`` is ``None``, this one, ``embedding_model`` or one of ``models``.
    :param models: further model names this server serves (sent as given).
    :param embedding_model: the model ``aieng_embed`` uses when asked for none
        (default: ``model``).
    :param api_key: the bearer token. Never logged and scrubbed from error messages; prefer
        ``api_key_env`` so it stays out of pipeline files.
    :param api_key_env: the environment variable holding the key, read when the component
        is built. Give at most one of ``api_key`` and ``api_key_env``; none for local servers.
    :param headers: extra HTTP headers sent with every request (not Authorization). The
        repr shows their names only; the values of those named like a credential (``key``,
        ``token``, ``secret``, ``auth``, ``cookie``... in the name: Azure's ``api-key``;
        8 characters or more) are scrubbed from errors as ``api_key`` is.
    :param connect_timeout: seconds to wait for a connection.
    :param read_timeout: seconds to wait for each read of the response (in a stream: between
        two chunks, so a long generation is fine as long as tokens keep coming).
    :param max_connections: the most connections open to the server at once, so the most
        concurrent calls; a call past it waits for a free connection up to
        ``pool_timeout``, then fails (retried as a timeout).
    :param pool_timeout: seconds a call waits for a free connection when all
        ``max_connections`` are busy (default: ``connect_timeout``). Raise it to queue a
        burst of calls behind long generations while a dead server still fails fast.
    :param total_timeout: the most seconds one call may take in all: its attempts, the
        waits between them and reading the answer (a stream: until its headers; its
        chunks then keep it alive as long as each comes within ``read_timeout``). It ends
        what ``read_timeout`` cannot: a server that trickles its answer a byte at a time,
        or keeps answering 503. A wait between attempts that would end past it is not
        begun: the last failure is raised at once. ``None`` (the default): no limit of
        its own (in a pipeline, the stage's timeout bounds every call).
    :param max_retries: retries after the first attempt, on 408, 409, 429, 5xx, timeouts and
        connection errors; other 4xx answers are never retried.
    :param backoff_base: the first retry's nominal wait, doubled on each retry, with jitter.
    :param backoff_max: the longest wait between two attempts, backoff or ``Retry-After``.
        A server asking for a longer wait gets no retry: the error says when to come back.
    :param max_response_bytes: the largest answer read: a JSON body (after decompression),
        or one event (one line) of a stream, in characters. A server that sends more (a
        broken or hostile one) gets an :class:`OpenAIError` of kind ``protocol`` naming this
        option, not the process's memory. An error answer's body is read only for its
        excerpt.
    :param stream_usage: ask for usage in the last chunk of a stream
        (``stream_options.include_usage``); turn off for servers that reject the field.
    :param send_top_k: send ``request.top_k`` as ``top_k`` (vLLM, TGI and llama.cpp take it;
        hosted OpenAI rejects it).
    :param max_tokens_field: the name of the token limit in the body: ``max_tokens`` (every
        compatible server) or ``max_completion_tokens`` (newer OpenAI models).
    :param regex_field: the body field that carries a request's ``metadata["regex"]`` to a
        server that enforces it: ``guided_regex`` for vLLM's OpenAI-compatible server and
        for ``aieng serve``. Unset (the default), a request with a regex is refused with
        ``ValueError`` rather than sent unconstrained: the OpenAI API has no such field.
    :param trust_env: read the environment as httpx does: the proxies of ``HTTP_PROXY``,
        ``HTTPS_PROXY`` and ``ALL_PROXY`` (but not for the hosts of ``NO_PROXY``), the CA
        bundle of ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, credentials in ``~/.netrc``. A
        ``base_url`` on a loopback host (``localhost``, ``127.0.0.0/8``, ``::1``) is
        reached directly whatever the proxy variables say. ``False`` ignores them all.
    :param seed: seeds the retry backoff's jitter, so a component's waits repeat from
        run to run (a test, a replayed incident); unset (the default), each component
        draws its own, so that clients that failed together do not retry together.
    """

    base_url: str = attrs.field(validator=_base_url)
    model: str = attrs.field(validator=_model)
    models: tuple[str, ...] = attrs.field(default=(), converter=listed, validator=_models)
    embedding_model: str | None = attrs.field(default=None, validator=_opt_str)
    api_key: str | None = attrs.field(default=None, validator=_key, repr=False)
    api_key_env: str | None = attrs.field(default=None, validator=_env_name)
    headers: dict[str, str] = attrs.field(factory=dict, validator=_headers, hash=False,
                                          repr=_masked_headers)
    connect_timeout: float = attrs.field(default=5.0, validator=_seconds)
    read_timeout: float = attrs.field(default=120.0, validator=_seconds)
    max_connections: int = attrs.field(default=100, validator=_connections)
    pool_timeout: float | None = attrs.field(default=None, validator=_opt_seconds)
    total_timeout: float | None = attrs.field(default=None, validator=_opt_seconds)
    max_retries: int = attrs.field(default=3, validator=_retries)
    backoff_base: float = attrs.field(default=0.5, validator=_non_negative_seconds)
    backoff_max: float = attrs.field(default=30.0, validator=_non_negative_seconds)
    max_response_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_byte_count)
    stream_usage: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    send_top_k: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    max_tokens_field: MaxTokensField = attrs.field(
        default="max_tokens",
        validator=attrs.validators.in_(("max_tokens", "max_completion_tokens")))
    regex_field: str | None = attrs.field(default=None, validator=_opt_str)
    trust_env: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    seed: int | None = attrs.field(default=None, validator=attrs.validators.optional(
        attrs.validators.instance_of(int)))

    def __attrs_post_init__(self) -> None:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("give api_key or api_key_env, not both")
