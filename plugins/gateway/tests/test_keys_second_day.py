"""The key database on the second day: where it lives in odd environments (a relative
``XDG_DATA_HOME``, no ``HOME``, ``~`` in ``AIENG_KEYS``), its layout marked
(``PRAGMA user_version``) and a newer layout refused."""

from __future__ import annotations

import pwd
import sqlite3
from pathlib import Path

import pytest
from aieng_gateway import KeyStore, KeyStoreError, default_keys_path
from click.testing import CliRunner

from aieng_core.cli import cli
from aieng_core.testing import sqlite_layout


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("AIENG_KEYS", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_a_relative_xdg_data_home_is_ignored(bare_env: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    """The XDG spec: a relative path in ``XDG_DATA_HOME`` is invalid and ignored, so the
    keys do not land in whatever folder the server happens to start in."""
    bare_env.setenv("XDG_DATA_HOME", "data")
    assert default_keys_path() == tmp_path / "home" / ".local/share/aieng/keys.sqlite3"
    bare_env.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_keys_path() == tmp_path / "xdg" / "aieng" / "keys.sqlite3"


def test_a_tilde_in_aieng_keys_is_the_home_folder(bare_env: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    """``AIENG_KEYS=~/keys.sqlite3`` set where no shell expands it (a systemd unit, a
    compose file) is the home folder's file, not a folder named ``~``."""
    bare_env.setenv("AIENG_KEYS", "~/keys.sqlite3")
    assert default_keys_path() == tmp_path / "home" / "keys.sqlite3"
    assert KeyStore("~/k.sqlite3").path == tmp_path / "home" / "k.sqlite3"


def test_no_home_folder_is_a_clear_cli_error(bare_env: pytest.MonkeyPatch) -> None:
    """A container user with no ``HOME`` and no passwd entry: ``aieng keys`` says where
    to put the keys instead of a RuntimeError traceback."""
    bare_env.delenv("HOME")

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    bare_env.setattr(pwd, "getpwuid", no_entry)
    with pytest.raises(KeyStoreError, match="AIENG_KEYS"):
        default_keys_path()
    result = CliRunner().invoke(cli, ["keys", "list"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "AIENG_KEYS" in result.output and "--keys" in result.output


def test_the_layout_is_marked_and_an_unmarked_file_is_read(tmp_path: Path) -> None:
    """A new database is marked layout 1; one written before the marker (the same table,
    ``user_version`` 0) keeps its keys and is marked when next written."""
    path = tmp_path / "k.sqlite3"
    store = KeyStore(path)
    key, _ = store.create("alice")
    assert sqlite_layout(path) == 1
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 0")
    conn.close()
    store = KeyStore(path)
    store.refresh(force=True)
    assert store.verify(key) is not None
    store.create("bob")
    assert sqlite_layout(path) == 1


def test_a_newer_layout_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A key database a newer aieng-gateway wrote may hold what this one cannot enforce
    (a key's scope, say): it is refused, naming the file, the version and what to do,
    never read as this layout (which would grant its keys more than they allow)."""
    path = tmp_path / "k.sqlite3"
    KeyStore(path).create("alice")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(KeyStoreError) as caught:
        KeyStore(path).refresh(force=True)
    message = str(caught.value)
    assert str(path) in message and "version 2" in message and "upgrade" in message
    with pytest.raises(KeyStoreError):
        KeyStore(path).create("bob")
    assert path.read_bytes() == before
