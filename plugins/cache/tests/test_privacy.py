"""What the caches keep of users' text stays private: the SQLite files are their owner's
alone, and a Redis URL's password never shows in a repr."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from aieng_cache import CacheOptions, SQLiteStore


def _modes(path: Path) -> dict[str, int]:
    found = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in found if p.exists()}


@pytest.mark.usefixtures("usual_umask")
def test_a_new_cache_file_is_its_owners_alone(tmp_path: Path) -> None:
    """The file holds prompts and answers: created 0600 (its -wal and -shm too, which
    SQLite makes with the database's mode), whatever the umask lets others read."""
    path = tmp_path / "sub" / "cache.sqlite3"
    store = SQLiteStore(path)
    store.put("k", "my secret prompt's answer", kind="chat", now=1.0)
    modes = _modes(path)
    store.close()
    assert modes[path.name] == 0o600, modes
    assert all(mode & 0o077 == 0 for mode in modes.values()), modes


@pytest.mark.usefixtures("usual_umask")
def test_an_existing_cache_file_keeps_its_mode(tmp_path: Path) -> None:
    """A file the user made (shared with a group on purpose) keeps its permissions."""
    path = tmp_path / "cache.sqlite3"
    path.touch()
    path.chmod(0o640)
    store = SQLiteStore(path)
    store.put("k", "v", kind="chat", now=1.0)
    store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("url", ["redis://:hunter2@cache.internal:6379/0",
                                 "rediss://app:hunter2@cache.internal:6380/1",
                                 "redis://cache.internal:6379/0?password=hunter2"])
def test_a_redis_urls_password_is_not_in_the_options_repr(url: str) -> None:
    """``repr(CacheOptions)`` (a log line, a test failure, a debugger) shows where Redis
    is, never its password."""
    shown = repr(CacheOptions(redis=url))
    assert "hunter2" not in shown
    assert "cache.internal" in shown and "***" in shown
    assert CacheOptions(redis=url).redis == url  # the value itself is untouched


def test_a_redis_url_without_a_password_is_shown_as_it_is() -> None:
    """Nothing to hide: the URL reads as written."""
    url = "redis://cache.internal:6379/0"
    assert f"redis={url!r}" in repr(CacheOptions(redis=url))
