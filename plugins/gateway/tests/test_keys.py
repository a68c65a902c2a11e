"""API keys: shown once, stored hashed, verified in constant time, revocable; the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
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
