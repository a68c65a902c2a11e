"""The Redis level: encoded completions under prefixed keys, expiring by Redis (``PX``)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import sys
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aieng_cache import Stored, payload_namespace

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisLevel", "RedisUnavailable", "check_seconds"]

# SCAN batch of clear(): large enough to be quick, small enough not to stall the server.
_SCAN_COUNT = 500
# The longest PX given to Redis (about 31,700 years): Redis refuses one past a 64-bit
# millisecond clock, and a longer TTL means "keep it" all the same.
_MAX_PX = 10**15
# The bytes of a value clear_namespace() reads (GETRANGE): the namespace is the last member
# of an encoded entry (encode_completion writes ``,"ns":"<namespace>"}`` last), so the end
# of a value of many MB names it; a value this short is read whole.
_TAIL = 1024
# The end of an entry's namespace member, read backwards: ``,"ns":"`` then the string.
_NS_MEMBER = b',"ns":"'
# The database of a redis:// URL: "", "/" or "/<number>" (redis-py silently uses 0 for
# any other path, so "redis://host/cache" would share database 0 unnoticed).
_DB_PATH = re.compile(r"/?|/[0-9]+")


def _backend() -> str:
    """The async library running this code when it is not asyncio (for messages)."""
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
        else:
            return "trio"
    return "this event loop (none of asyncio's is running in this thread)"


def check_seconds(name: str, value: object) -> None:
    """Refuse a timeout that is not a finite number of seconds > 0, naming the option.

    :raises ValueError: for 0, a negative number, NaN, an infinity (a server that stops
        answering would hold every call for good), a boolean or a string (units or not).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 < value < math.inf:
        why = ""
        if isinstance(value, str):
            why = " (a string: the unit is always seconds, write the number alone)"
        elif isinstance(value, float) and math.isinf(value):
            why = (" (without a limit, a server that stops answering holds every call "
                   "for good)")
        raise ValueError(f"{name} must be a finite number of seconds > 0, got "
                         f"{value!r}{why}")


class RedisUnavailable(ConnectionError):
    """The Redis server could not be reached (or stopped answering)."""


def _where(url: str) -> str:
    """``host:port/db`` of a Redis URL, without its credentials (never put in messages)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    host = parts.hostname or "localhost"
    if ":" in host:  # IPv6: bracketed as in the URL, else its port reads as part of it
        host = f"[{host}]"
    return f"{host}:{parts.port or 6379}{parts.path or '/0'}"


def _check_database(url: str) -> None:
    """Refuse a ``redis://`` URL whose path is no database number (redis-py ignores it)."""
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss") and not _DB_PATH.fullmatch(parts.path):
        raise ValueError(f"the database of a Redis URL is a number (redis://host:port/0), "
                         f"got {parts.path!r} in {_where(url)}")


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern: a prefix such as ``app[1]:`` must not
    match ``app1:`` keys, which ``clear`` would then delete."""
    return "".join("\\" + c if c in "*?[]\\^-" else c for c in text)


def _tail_namespace(tail: bytes) -> tuple[bool, str | None]:
    """The namespace of an encoded entry from the last bytes of its value, as
    :func:`~aieng_cache.payload_namespace` reads it from the whole value: ``(True,
    namespace)``, ``(True, None)`` for an unknown one (an entry written without it, whose
    last member is ``tool_calls``, or no entry), or ``(False, None)`` when the namespace
    starts before ``tail`` (the whole value is needed)."""
    if len(tail) < 2:
        return False, None
    if not tail.endswith(b'"}'):  # the last member no string: written without "ns"
        return True, None
    end = len(tail) - 2  # the closing quote of the last member's string
    start = end
    while True:  # back to the first quote that no backslash escapes: the opening one
        start = tail.rfind(b'"', 0, start)
        if start < 0:
            return False, None
        run = start - len(tail[:start].rstrip(b"\\"))  # backslashes right before it
        if run == start:  # they reach the start of the tail: escaped or not, unknown
            return False, None
        if run % 2 == 0:
            break
    if start < len(_NS_MEMBER) - 1:  # the member's name is cut off
        return False, None
    if tail[start - len(_NS_MEMBER) + 1:start + 1] != _NS_MEMBER:
        return True, None  # another string last: no entry of the codec
    try:
        namespace = json.loads(tail[start:end + 1])
    except ValueError:  # UnicodeDecodeError included
        return True, None
    return True, namespace if isinstance(namespace, str) else None


class RedisLevel:
    """A cache level in Redis (through redis-py's asyncio client).

    Entries are ``SET prefix+key payload PX ttl_ms``: Redis expires them itself; a lookup
    reads the value and its remaining time (``PTTL``) in one round trip, so a hit promoted
    to a faster level keeps the time it has left.

    :param url: ``redis://[:password@]host:port/db``, ``rediss://...`` or ``unix://path``.
    :param prefix: put before every key (``clear`` removes only keys with it).
    :param socket_timeout: seconds to connect or wait for an answer (or for a free
        connection of the pool): a finite number > 0.
    :param max_connections: connections to the server at most; more concurrent calls wait
        for a free one (a blocking pool) instead of failing.
    :param client: use this ``redis.asyncio.Redis`` client instead of one built from ``url``.
    """

    name = "redis"

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "aieng:cache:",
                 *, socket_timeout: float = 5.0, max_connections: int = 32,
                 client: Redis | None = None) -> None:
        check_seconds("socket_timeout", socket_timeout)
        built = client is None
        if client is None:
            _check_database(url)
            client = self._build(url, socket_timeout, max_connections)
        self.url = url
        self.prefix = prefix
        self.client = client
        self._closed = False
        self._owns_client = built
        self._settings = (socket_timeout, max_connections)
        # The event loop and process the client's connections belong to (set at first use):
        # see _open_client.
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._pid = os.getpid()

    @staticmethod
    def _build(url: str, socket_timeout: float, max_connections: int) -> Redis:
        # Imported when a level is built, not when the plugin loads.
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        # A pooled connection the server closed (a restart, a failover, its idle
        # timeout) fails on its next use; reconnecting once answers the call instead.
        # Timeouts are not retried: a server that does not answer fails fast.
        retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=socket_timeout,
            socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
            retry=retry)
        return Redis(connection_pool=pool)

    def check_backend(self) -> asyncio.AbstractEventLoop:
        """The running asyncio loop; a clear error under another event loop.

        :raises RuntimeError: under trio (or no event loop): redis-py's asyncio client
            runs only on asyncio, and failed deep inside it ("no running event loop").
        """
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                f"the Redis cache level ({_where(self.url)}) needs asyncio: redis-py's "
                f"asyncio client does not run under {_backend()}. Run the host program "
                "with asyncio (anyio.run(main, backend='asyncio')), or use the memory or "
                "SQLite levels of the cache, which run under trio too") from None

    def _open_client(self) -> Redis:
        # redis-py reconnects a closed client on its next call: connections nobody closes.
        if self._closed:
            raise RuntimeError(f"the Redis level at {_where(self.url)} is closed")
        loop = self.check_backend()
        known = self._loop() if self._loop is not None else None
        if known is not loop or self._pid != os.getpid():
            if self._loop is not None and self._owns_client:
                # The pool's connections belong to another event loop (a second
                # asyncio.run: a script, a notebook), which answered "attached to a
                # different loop" or "Event loop is closed"; or to the parent of this
                # forked process, whose sockets the two would share, each reading the
                # other's replies. A new pool here; the old one is left, unclosed (its
                # loop is not this one), to the garbage collector.
                self.client = self._build(self.url, *self._settings)
            self._loop, self._pid = weakref.ref(loop), os.getpid()
        return self.client

    def _unavailable(self, exc: BaseException) -> RedisUnavailable:
        return RedisUnavailable(
            f"cannot reach Redis at {_where(self.url)} ({type(exc).__name__}: {exc}); start "
            "a server there (apt-get install redis-server; redis-server) or fix the cache's "
            "redis URL")

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            return await getattr(self._open_client(), method)(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def ping(self) -> None:
        """Check the server answers.

        :raises RedisUnavailable: when it does not.
        """
        await self._call("ping")

    async def get(self, key: str, now: float) -> Stored | None:
        """The live entry under ``key`` and when it expires, or ``None``."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import ResponseError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        name = self.prefix + key
        client = self._open_client()
        try:
            async with client.pipeline(transaction=False) as pipe:
                pipe.get(name)
                pipe.pttl(name)
                value, pttl = await pipe.execute(raise_on_error=False)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise self._unavailable(exc) from exc
        for answer in (value, pttl):
            if isinstance(answer, ResponseError) and not str(answer).startswith("WRONGTYPE"):
                raise answer
        if isinstance(value, ResponseError):
            # A key that is no string (another program's hash or list under the prefix):
            # an empty payload fails the codec, so the cache drops the key as unreadable.
            value = b""
        if value is None or pttl == -2:  # -2: gone (expired between the two reads)
            return None
        # Bytes that are not UTF-8 (another program writing under the prefix) decode to
        # U+FFFD, fail the codec, and make the cache drop the key as any unreadable entry.
        payload = (value.decode("utf-8", errors="replace") if isinstance(value, bytes)
                   else str(value))
        expires_at = math.inf if pttl == -1 else now + pttl / 1000.0
        return Stored(payload, expires_at)

    async def put(self, key: str, payload: str, *, kind: str, now: float,
                  expires_at: float) -> None:
        """``SET`` the payload, expiring in the milliseconds left until ``expires_at``."""
        if math.isinf(expires_at):
            await self._call("set", self.prefix + key, payload)
            return
        # min() before ceil(): the milliseconds of a TTL near the largest float overflow
        # to inf, which ceil() cannot take.
        milliseconds = math.ceil(min((expires_at - now) * 1000.0, float(_MAX_PX)))
        if milliseconds <= 0:
            # Already expired: a miss from now on, as in the SQLite level. Redis refuses a
            # PX <= 0, and skipping the SET would leave an older, live value answering.
            await self._call("delete", self.prefix + key)
            return
        await self._call("set", self.prefix + key, payload, px=milliseconds)

    async def delete(self, key: str) -> None:
        """Remove ``key``."""
        await self._call("delete", self.prefix + key)

    async def clear(self) -> None:
        """Remove every key that starts with the prefix (``SCAN`` + ``UNLINK``)."""
        if not self.prefix:
            raise ValueError("refusing to clear a Redis level without a key prefix: it "
                             "would delete every key of the database")
        batch: list[bytes] = []
        cursor = 0
        pattern = _glob_escape(self.prefix) + "*"
        while True:
            cursor, keys = await self._call("scan", cursor, match=pattern, count=_SCAN_COUNT)
            batch.extend(keys)
            if batch:
                await self._call("unlink", *batch)
                batch = []
            if cursor == 0:
                break

    async def clear_namespace(self, namespace: str) -> None:
        """Remove the keys under the prefix whose entry was stored by a cache of
        ``namespace``, and those of no known namespace (entries written by a version that
        did not record it, or values that are no readable entry): ``SCAN`` + ``GETRANGE``
        + ``UNLINK``, reading the last KB of each value under the prefix (where the
        namespace is written), not the whole value."""
        if not self.prefix:
            raise ValueError("refusing to clear a Redis level without a key prefix: it "
                             "would delete keys of the whole database")
        cursor = 0
        pattern = _glob_escape(self.prefix) + "*"
        while True:
            cursor, keys = await self._call("scan", cursor, match=pattern, count=_SCAN_COUNT)
            if keys:
                doomed = [key for key, found in zip(keys, await self._namespaces(keys),
                                                    strict=True)
                          if found in (None, namespace)]
                if doomed:
                    await self._call("unlink", *doomed)
            if cursor == 0:
                break

    async def _namespaces(self, keys: list[bytes]) -> list[str | None]:
        """The namespace of each key's entry (``None``: unknown), from the values' last
        :data:`_TAIL` bytes (one round trip); a value whose namespace starts before them
        is read whole, alone."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import ResponseError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        client = self._open_client()
        try:
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.getrange(key, -_TAIL, -1)
                tails = await pipe.execute(raise_on_error=False)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise self._unavailable(exc) from exc
        found: list[str | None] = []
        for key, tail in zip(keys, tails, strict=True):
            if isinstance(tail, ResponseError):
                if not str(tail).startswith("WRONGTYPE"):
                    raise tail
                # A key holding no string (another program's hash or list): a lookup
                # drops it as unreadable, so clearing it loses nothing.
                found.append(None)
                continue
            if isinstance(tail, str):  # a client given with decode_responses=True
                tail = tail.encode("utf-8", "surrogatepass")
            # An empty tail: a key gone meanwhile (unlinking it again is harmless).
            if len(tail) < _TAIL:  # the whole value
                found.append(payload_namespace(tail))
                continue
            known, namespace = _tail_namespace(tail)
            if not known:
                whole = await self._call("get", key)
                namespace = None if whole is None else payload_namespace(whole)
            found.append(namespace)
        return found

    async def aclose(self) -> None:
        """Close the client's connections (once); later calls raise ``RuntimeError``."""
        if self._closed:
            return
        self._closed = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not asyncio (trio): this level never connected
        if self._loop is None or (self._loop() is loop and self._pid == os.getpid()):
            await self.client.aclose(close_connection_pool=True)
        # else: connections of another loop or of the parent process, not closable here
