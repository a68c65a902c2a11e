"""The key database on a read-only mount (a container image that bakes the keys in, a
file of another owner this user may only read): ``aieng serve`` reads and enforces it,
``aieng keys list`` lists it, ``create`` and ``revoke`` say where to run instead, and
nothing is written to it (not even the layout mark of an older file)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import structlog
from _support import LoopbackServer, make_gateway
from aieng_gateway import KeyStore, KeyStoreError
from click.testing import CliRunner

from aieng_core.cli import cli
from aieng_core.testing import read_only


def _user_version(path: Path) -> int:
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def _set_user_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


def _status(server: LoopbackServer, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with server.client(timeout=20) as client:
        return client.get("/v1/models", headers=headers).status_code


def test_serve_reads_and_enforces_a_read_only_key_file(tmp_path: Path) -> None:
    """``enable_wal`` failed on a read-only mount, so the gateway could not start at all.
    It starts now, warns once that the file is read-only and what that means, accepts a
    live key, refuses a revoked or missing one, and a change made to the file where it
    is writable is picked up at the next refresh. Nothing is left beside the file."""
    folder = tmp_path / "baked keys"
    folder.mkdir()
    writer = KeyStore(folder / "keys.sqlite3")
    alice, _ = writer.create("alice")
    bob, bob_record = writer.create("bob")
    writer.revoke(bob_record.id)
    gateway = make_gateway(tmp_path)
    with read_only(folder) as view:
        gateway.keys = KeyStore(view / "keys.sqlite3")
        with structlog.testing.capture_logs() as logs, LoopbackServer(gateway.app) as server:
            assert _status(server, alice) == 200
            assert _status(server, bob) == 401 and _status(server, None) == 401
            carol, _ = writer.create("carol")  # where the file is writable
            writer.revoke("alice")
            gateway.keys.refresh_s = 0.0
            assert _status(server, carol) == 200 and _status(server, alice) == 401
        assert gateway.keys.read_only
        assert sorted(os.listdir(view)) == ["keys.sqlite3"]
    [warning] = [e for e in logs if e["event"] == "gateway.keys_read_only"]
    assert warning["log_level"] == "warning"
    assert warning["keys"] == str(view / "keys.sqlite3")
    assert "writes nothing" in warning["effect"] and "in memory" in warning["effect"]
    assert not [e for e in logs if e["event"] == "gateway.keys_unavailable"]


def test_keys_commands_on_a_read_only_file(tmp_path: Path) -> None:
    """``aieng keys list`` lists a read-only file; ``create`` and ``revoke`` are a one-line
    error naming the file and what to do (not SQLite's bare "unable to open database
    file"), as is a new file in the read-only folder; the file is left byte for byte as it
    was."""
    folder = tmp_path / "ro"
    folder.mkdir()
    _, record = KeyStore(folder / "keys.sqlite3").create("alice", rpm=7)
    before = (folder / "keys.sqlite3").read_bytes()
    runner = CliRunner()
    with read_only(folder) as view:
        file = str(view / "keys.sqlite3")
        listed = runner.invoke(cli, ["keys", "list", "--keys", file])
        assert listed.exit_code == 0, listed.output
        assert record.id in listed.output and "alice" in listed.output
        for args in (["create", "bob"], ["revoke", "alice"], ["revoke", record.id]):
            result = runner.invoke(cli, ["keys", *args, "--keys", file])
            assert result.exit_code == 1, result.output
            assert isinstance(result.exception, SystemExit), result.exception
            assert file in result.output and "cannot be written" in result.output
            assert "--keys" in result.output and "aieng keys list" in result.output
        new = runner.invoke(cli, ["keys", "create", "bob", "--keys", str(view / "new.db")])
        assert new.exit_code == 1, new.output
        assert str(view / "new.db") in new.output and "cannot be created" in new.output
        assert "folder cannot be written" in new.output
        store = KeyStore(file)
        with pytest.raises(KeyStoreError, match="cannot be written"):
            store.create("bob")
        assert [k.name for k in store.records()] == ["alice"]
    assert (folder / "keys.sqlite3").read_bytes() == before


def test_an_unmarked_file_is_read_without_the_mark_and_a_newer_one_refused(
        tmp_path: Path) -> None:
    """A file written before the layout mark (``user_version`` 0) is read as it is on a
    read-only mount, without trying to mark it; a newer layout is refused as anywhere,
    naming the file and the version; an empty (zero-byte) file has no keys."""
    folder = tmp_path / "ro"
    folder.mkdir()
    old, newer = folder / "old.sqlite3", folder / "newer.sqlite3"
    key, _ = KeyStore(old).create("alice")
    KeyStore(newer).create("alice")
    _set_user_version(old, 0)
    _set_user_version(newer, 2)
    (folder / "empty.sqlite3").touch()
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    with read_only(folder) as view:
        store = KeyStore(view / "old.sqlite3")
        store.refresh(force=True)
        assert store.read_only and store.verify(key) is not None
        with pytest.raises(KeyStoreError) as caught:
            KeyStore(view / "newer.sqlite3").refresh(force=True)
        message = str(caught.value)
        assert str(view / "newer.sqlite3") in message and "version 2" in message
        assert "upgrade" in message
        assert KeyStore(view / "empty.sqlite3").records() == []
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert _user_version(old) == 0


def test_writes_left_in_the_wal_file_are_a_clear_error(tmp_path: Path) -> None:
    """A file copied with the -wal file of a writer that never closed (no -shm): on a
    read-only mount its last writes cannot be read; the error says so and what to do,
    rather than serving the keys without them."""
    made = tmp_path / "made"
    made.mkdir()
    KeyStore(made / "keys.sqlite3").create("alice")
    conn = sqlite3.connect(made / "keys.sqlite3", isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("UPDATE api_keys SET revoked = 1.0")
    folder = tmp_path / "ro"
    folder.mkdir()
    for name in ("keys.sqlite3", "keys.sqlite3-wal"):
        shutil.copyfile(made / name, folder / name)
    conn.close()
    with read_only(folder) as view, pytest.raises(KeyStoreError) as caught:
        KeyStore(view / "keys.sqlite3").refresh(force=True)
    message = str(caught.value)
    assert str(view / "keys.sqlite3") in message and "-wal file" in message


_AS_ANOTHER_USER = """
import sys
from aieng_gateway import KeyStore, KeyStoreError
store = KeyStore(sys.argv[1])
store.refresh(force=True)
print(store.read_only, store.verify(sys.argv[2]) is not None)
try:
    store.create("bob")
except KeyStoreError as error:
    print(error)
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run as another user")
def test_a_file_of_another_owner_is_read_only(tmp_path: Path) -> None:
    """A key file of root's (0644) in a folder the server's user owns: the user may read
    it but not write it. It is read (the user's process makes its -shm file beside it),
    and ``create`` says it cannot be written."""
    with tempfile.TemporaryDirectory() as top:  # tmp_path's parents are root's alone
        os.chmod(top, 0o755)
        folder = Path(top) / "keys"
        folder.mkdir()
        key, _ = KeyStore(folder / "keys.sqlite3").create("alice")
        (folder / "keys.sqlite3").chmod(0o644)
        os.chown(folder, 65534, 65534)
        done = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             "-c", _AS_ANOTHER_USER, str(folder / "keys.sqlite3"), key],
            capture_output=True, text=True, check=False, timeout=60,
            cwd=Path(__file__).resolve().parents[1])
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == "True True", done.stdout
        assert str(folder / "keys.sqlite3") in lines[1] and "cannot be written" in lines[1]
