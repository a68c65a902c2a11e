"""API keys: shown once, stored hashed, verified in constant time, revocable; the CLI."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
import structlog
from _support import LoopbackServer, make_gateway
from aieng_gateway import KeyStore, hash_key
from click.testing import CliRunner

from aieng_core.cli import cli


def test_key_is_stored_only_as_its_hash(tmp_path: Path) -> None:
    """The database file holds the SHA-256 and the id, never the key."""
    store = KeyStore(tmp_path / "k.sqlite3")
    key, record = store.create("alice", rpm=10, tpm=1000)
    assert key.startswith(f"aieng-{record.id}-") and len(key) == 6 + 8 + 1 + 43
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    secret = key.rsplit("-", 1)[1] if key.count("-") == 2 else key[15:]
    assert key.encode() not in raw and secret.encode() not in raw
    assert hash_key(key).encode() in raw
    assert (tmp_path / "k.sqlite3").stat().st_mode & 0o077 == 0


def test_verify_and_revoke(tmp_path: Path) -> None:
    """A live key verifies; a wrong secret, a malformed key or a revoked key do not."""
    store = KeyStore(tmp_path / "k.sqlite3")
    key, record = store.create("bob")
    other, _ = store.create("bob")
    store.refresh(force=True)
    assert store.verify(key) == record
    assert store.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.verify("garbage") is None and store.verify("") is None
    revoked = store.revoke("bob")
    assert {k.name for k in revoked} == {"bob"} and len(revoked) == 2
    store.refresh(force=True)
    assert store.verify(key) is None and store.verify(other) is None
    assert store.revoke("bob") == []
    assert all(k.revoked is not None for k in store.records())


def test_invalid_key_settings(tmp_path: Path) -> None:
    """A blank name or a zero limit is refused."""
    store = KeyStore(tmp_path / "k.sqlite3")
    with pytest.raises(ValueError, match="name"):
        store.create(" ")
    with pytest.raises(ValueError, match="rpm"):
        store.create("x", rpm=0)


def test_cli_create_list_revoke(tmp_path: Path) -> None:
    """``aieng keys create`` prints the key once; list shows ids, never keys; revoke works."""
    path = str(tmp_path / "k.sqlite3")
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "ci", "--rpm", "5", "--keys", path])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    key_id = key.split("-")[1]
    listed = runner.invoke(cli, ["keys", "list", "--keys", path])
    assert key_id in listed.output and key not in listed.output and "ci" in listed.output
    revoked = runner.invoke(cli, ["keys", "revoke", key_id, "--keys", path])
    assert revoked.exit_code == 0 and f"revoked {key_id}" in revoked.output
    again = runner.invoke(cli, ["keys", "revoke", key_id, "--keys", path])
    assert again.exit_code != 0 and "no live key" in again.output


def test_serve_refuses_without_keys(tmp_path: Path) -> None:
    """``aieng serve`` with auth on and no key database says how to make one."""
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "p"\n')
    result = CliRunner().invoke(cli, ["serve", str(pipeline), "--keys",
                                      str(tmp_path / "none.sqlite3")])
    assert result.exit_code != 0 and "aieng keys create" in result.output


def test_revoking_an_id_spares_a_key_named_like_it(tmp_path: Path) -> None:
    """Revoking by id revokes that key only, even when another key's name is that id; a
    name shaped like a key id, or with control characters (a fake row in ``list``), is
    refused."""
    store = KeyStore(tmp_path / "k.sqlite3")
    _, alice = store.create("alice")
    # a database written before names were checked may hold such a name
    _, impostor = store.create("placeholder")
    with sqlite3.connect(tmp_path / "k.sqlite3") as db:
        db.execute("UPDATE api_keys SET name = ? WHERE id = ?", (alice.id, impostor.id))
    assert [k.id for k in store.revoke(alice.id)] == [alice.id]
    assert {k.id for k in store.records() if k.revoked is None} == {impostor.id}
    for bad in ("0badc0de", "bob\nc0ffee00  admin", "tab\there", "bell\x07"):
        with pytest.raises(ValueError, match="name"):
            store.create(bad)


def test_cli_bad_name_and_corrupt_database_are_clear_errors(tmp_path: Path) -> None:
    """A refused name or a file that is not a key database is a one-line error (exit 1),
    not a traceback, for every ``keys`` command and for ``serve``."""
    runner = CliRunner()
    good = str(tmp_path / "k.sqlite3")
    blank = runner.invoke(cli, ["keys", "create", " ", "--keys", good])
    assert blank.exit_code == 1 and "non-empty name" in blank.output
    assert blank.exception is None or isinstance(blank.exception, SystemExit)
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"this is not a database" * 100)
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[pipeline]\nname = "p"\n')
    for args in (["keys", "list"], ["keys", "create", "x"], ["keys", "revoke", "x"],
                 ["serve", str(pipeline)]):
        result = runner.invoke(cli, [*args, "--keys", str(corrupt)])
        assert result.exit_code == 1, (args, result.output)
        assert isinstance(result.exception, SystemExit), (args, result.exception)
        assert str(corrupt) in result.output and "not a database" in result.output


def test_read_only_commands_create_no_database(tmp_path: Path) -> None:
    """``keys list`` and ``keys revoke`` on a missing file create nothing, so a mistyped
    ``--keys`` cannot leave an empty database that ``serve`` would then accept."""
    runner = CliRunner()
    missing = tmp_path / "typo" / "keys.sqlite3"
    listed = runner.invoke(cli, ["keys", "list", "--keys", str(missing)])
    assert listed.exit_code == 0 and "id" in listed.output
    revoked = runner.invoke(cli, ["keys", "revoke", "bob", "--keys", str(missing)])
    assert revoked.exit_code == 1 and "no live key" in revoked.output
    assert not missing.exists() and not missing.parent.exists()



def test_unreadable_key_database_is_503(tmp_path: Path) -> None:
    """A key database that turns unreadable while serving fails closed with a 503 naming
    the cause, not a 500 ("internal gateway error"), and the file's path is not sent."""
    gateway = make_gateway(tmp_path)
    assert gateway.keys is not None
    key, _ = gateway.keys.create("t")
    with LoopbackServer(gateway.app) as server:
        for extra in ("-wal", "-shm"):
            (tmp_path / f"keys.sqlite3{extra}").unlink(missing_ok=True)
        (tmp_path / "keys.sqlite3").write_bytes(b"not a database" * 100)
        gateway.keys.refresh_s = 0.0  # reload on the next request
        answer = httpx.get(f"{server.url}/v1/models", timeout=20, trust_env=False,
                           headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "keys_unavailable" and str(tmp_path) not in error["message"]


@pytest.mark.anyio
async def test_start_without_a_live_key_warns(tmp_path: Path) -> None:
    """Auth on over a key database whose keys are all revoked starts (a key created later
    is picked up) but warns that every request is refused and how to make a key; a live
    key silences the warning."""
    gateway = make_gateway(tmp_path)
    assert gateway.keys is not None
    _, record = gateway.keys.create("old")
    gateway.keys.revoke(record.id)
    with structlog.testing.capture_logs() as logs:
        async with gateway.running():
            pass
    [warning] = [e for e in logs if e["event"] == "gateway.no_live_keys"]
    assert warning["log_level"] == "warning" and "aieng keys create" in warning["hint"]
    gateway.keys.create("new")
    with structlog.testing.capture_logs() as logs:
        async with gateway.running():
            pass
    assert not [e for e in logs if e["event"] == "gateway.no_live_keys"]
