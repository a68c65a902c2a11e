"""The big day: a key database of many keys, refreshed every ``refresh_s`` while serving.

A refresh used to read every key again each time (100,000 keys: half a second of the
server's CPU every 5 s, with the GIL). Now a file left alone since the last read is not
read again; any change to it (a key created or revoked in another process, a file copied
over in place or renamed over it, a change of mode) is still seen at the next refresh.
Reads are counted through the store's ``records``; the clocks are moved by hand."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aieng_gateway import ApiKey, KeyStore

from aieng_core.testing import ManualClock


class CountingStore:
    """``store`` with its clocks moved by hand and its file reads counted."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self.reads = 0
        self.clock = ManualClock(1000.0)
        self.wall = ManualClock(time.time())
        store._clock = self.clock
        store._wall = self.wall
        store._pause = lambda seconds: None
        records: Callable[[], list[ApiKey]] = store.records

        def counted() -> list[ApiKey]:
            self.reads += 1
            return records()

        store.records = counted  # type: ignore[method-assign]

    def later(self, seconds: float) -> None:
        """Move both clocks, then refresh as the server does when its copy is stale."""
        self.clock.now += seconds
        self.wall.now += seconds
        self.store.refresh()


def _many_keys(path: Path, count: int) -> str:
    """A key file of ``count`` keys besides one made by ``create``; returns that one."""
    first, _ = KeyStore(path).create("first")
    db = sqlite3.connect(path)
    db.executemany("INSERT INTO api_keys (id, name, hash, created) VALUES (?, ?, ?, ?)",
                   [(f"b{i:07x}", f"bulk {i}", f"h{i}", 1.0 + i) for i in range(count)])
    db.commit()
    db.close()
    return first


def test_an_unchanged_key_file_is_not_read_again(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite3"
    first = _many_keys(path, 2000)
    store = CountingStore(KeyStore(path))
    store.store.refresh(force=True)
    assert store.reads == 1 and store.store.live == 2001
    for _ in range(20):  # 100 s of serving: the file settles, then is left alone
        store.later(store.store.refresh_s)
    assert store.reads <= 2  # not one read per refresh (21 before)
    assert store.store.verify(first) is not None
    assert not store.store.stale


@pytest.mark.parametrize("change", ["create", "revoke", "copy over", "rename over", "chmod"])
def test_every_change_to_a_settled_file_is_read(tmp_path: Path, change: str) -> None:
    path = tmp_path / "keys.sqlite3"
    alice, alice_record = KeyStore(path).create("alice")
    spare = tmp_path / "spare.sqlite3"
    shutil.copyfile(path, spare)
    bob, _ = KeyStore(spare).create("bob")
    store = CountingStore(KeyStore(path))
    store.store.refresh(force=True)
    store.later(60.0)  # settled: this status is trusted from now on
    store.later(store.store.refresh_s)
    reads = store.reads
    assert store.store.verify(alice) is not None
    if change == "create":
        carol, _ = KeyStore(path).create("carol")  # another process: `aieng keys create`
    elif change == "revoke":
        KeyStore(path).revoke(alice_record.id)
    elif change == "copy over":
        with open(path, "r+b") as file:  # cp spare keys.sqlite3: in place, same inode
            file.truncate(0)
            file.write(spare.read_bytes())
    elif change == "rename over":
        os.replace(spare, path)
    else:
        path.chmod(0o400)  # the file's data as it was, its metadata changed
    store.later(store.store.refresh_s)
    assert store.reads == reads + 1
    if change == "create":
        assert store.store.verify(carol) is not None
    elif change == "revoke":
        assert store.store.verify(alice) is None
    elif change in ("copy over", "rename over"):
        assert store.store.verify(bob) is not None
    else:
        assert store.store.verify(alice) is not None


def test_a_fresh_file_is_read_at_every_refresh(tmp_path: Path) -> None:
    """A file changed within the file system clock's tick of a read may change again
    with the same status: until it has settled, every refresh reads it."""
    path = tmp_path / "keys.sqlite3"
    KeyStore(path).create("alice")
    store = CountingStore(KeyStore(path))
    store.store._wall = time.time  # the file's times are now
    store.store.refresh(force=True)
    for _ in range(3):
        store.clock.now += store.store.refresh_s
        store.store.refresh()
    assert store.reads == 4


def test_a_removed_file_is_noticed(tmp_path: Path) -> None:
    """A settled file removed while serving is read (and fails), not trusted."""
    path = tmp_path / "keys.sqlite3"
    alice, _ = KeyStore(path).create("alice")
    store = CountingStore(KeyStore(path))
    store.store.refresh(force=True)
    store.later(60.0)
    path.unlink()
    store.later(store.store.refresh_s)
    assert store.store._failure is not None and "is gone" in str(store.store._failure)
    assert store.store.verify(alice) is not None  # served while servable, as before
