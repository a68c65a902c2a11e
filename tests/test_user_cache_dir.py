"""aieng_hookspecs.user_cache_dir in the environments containers give: no HOME, a user id
with no home directory, relative XDG_CACHE_HOME."""

from __future__ import annotations

import os
import pwd
import sys
from pathlib import Path

import pytest
from aieng_hookspecs import CacheDirError, user_cache_dir, user_data_dir

linux = pytest.mark.skipif(sys.platform != "linux", reason="the XDG layout is Linux's")


@pytest.fixture
def homeless(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container's arbitrary user id: no HOME and no passwd entry."""
    for name in ("HOME", "AIENG_CACHE_DIR", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)

    def missing(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", missing)


@linux
def test_no_home_names_the_variables_to_set(homeless: None) -> None:
    with pytest.raises(CacheDirError) as caught:
        user_cache_dir()
    message = str(caught.value)
    assert "AIENG_CACHE_DIR" in message and "HOME" in message
    assert str(os.getuid()) in message
    assert isinstance(caught.value, RuntimeError)  # what Path.home() raised before


@linux
def test_no_home_is_no_trouble_with_a_folder_named(homeless: None,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    assert user_cache_dir(str(tmp_path / "mine")) == tmp_path / "mine"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "aieng"
    monkeypatch.setenv("AIENG_CACHE_DIR", str(tmp_path / "env"))
    assert user_cache_dir() == tmp_path / "env"


@linux
def test_relative_xdg_cache_home_is_ignored(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    """The XDG spec: a relative path in an XDG variable is invalid and ignored."""
    monkeypatch.delenv("AIENG_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert user_cache_dir() == tmp_path / ".cache" / "aieng"


def test_a_relative_aieng_cache_dir_is_made_absolute(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """Resolved once, against the working directory of the moment: a later chdir does not
    move the cache (a relative path kept as is would)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIENG_CACHE_DIR", "here")
    folder = user_cache_dir()
    assert folder == tmp_path / "here" and folder.is_absolute()


@linux
def test_user_data_dir_follows_the_same_rules(homeless: None, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """``$XDG_DATA_HOME/aieng`` when absolute; a relative one is ignored; no home is a
    CacheDirError; with a home, ``~/.local/share/aieng``."""
    with pytest.raises(CacheDirError):
        user_data_dir()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert user_data_dir() == tmp_path / "data" / "aieng"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_data_dir() == tmp_path / ".local" / "share" / "aieng"
