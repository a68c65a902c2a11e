"""A key refresh that meets a writer: the file copied over in place on the host while a
container reads it from a read-only mount (empty, then torn, for a moment), a file that
turns unreadable, a lock held by another process. A failed read is tried again after a
short pause; when it still fails, the keys of the last good read are served until that
read is ``2 * refresh_s`` old (a warning says so), then every keyed request is a 503
(fail closed). Time is the store's clock, patched: nothing sleeps for long."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from _support import LoopbackServer, make_gateway
from aieng_gateway import ApiKey, KeyStore, KeyStoreError

from aieng_core.testing import ManualClock, read_only

_HERE = Path(__file__).resolve().parents[1]


def _controlled(store: KeyStore) -> tuple[ManualClock, list[float]]:
    """``store`` on a hand-moved clock, its retry pauses recorded instead of slept."""
    clock, pauses = ManualClock(1000.0), list[float]()
    store._clock = clock
    store._pause = pauses.append
    return clock, pauses


def _status(server: LoopbackServer, key: str) -> int:
    return httpx.get(f"{server.url}/v1/models", trust_env=False, timeout=20,
                     headers={"Authorization": f"Bearer {key}"}).status_code


class Writer:
    """A second process running ``script`` (with ``args``), stepped line by line: it
    prints a line when it reaches a step and waits for one on its stdin to go on."""

    def __init__(self, script: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=_HERE)

    def reached(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        assert line, self.process.stderr.read() if self.process.stderr else ""
        return line

    def go_on(self) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        return self.reached()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=20)


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    made: list[Writer] = []
    yield made
    for writer in made:
        writer.close()


_COPY_OVER = """
import sys
data = open(sys.argv[2], "rb").read()
with open(sys.argv[1], "r+b") as file:  # cp NEW keys.sqlite3: emptied, then written
    file.truncate(0)
    file.flush()
    print("emptied", flush=True)
    sys.stdin.readline()
    file.write(data)
print("written", flush=True)
sys.stdin.readline()
"""


def test_a_file_copied_over_in_place_is_read_again(tmp_path: Path,
                                                   writers: list[Writer]) -> None:
    """The host copies a new key file over the one a container reads read-only: for a
    moment it is empty. A refresh then read no key at all and served that (every key a
    401 until the next refresh); now a read that finds no key where the last one found
    some is tried again after a short pause, and sees the new file."""
    folder = tmp_path / "host keys"
    folder.mkdir()
    alice, _ = KeyStore(folder / "keys.sqlite3").create("alice")
    shutil.copyfile(folder / "keys.sqlite3", tmp_path / "new.sqlite3")
    bob, _ = KeyStore(tmp_path / "new.sqlite3").create("bob")
    with read_only(folder) as view:
        store = KeyStore(view / "keys.sqlite3")
        clock, pauses = _controlled(store)
        store.refresh(force=True)
        writer = Writer(_COPY_OVER, str(folder / "keys.sqlite3"), str(tmp_path / "new.sqlite3"))
        writers.append(writer)
        assert writer.reached() == "emptied"

        def pause(seconds: float) -> None:  # the copy goes on while the refresh waits
            pauses.append(seconds)
            if len(pauses) == 1:
                assert writer.go_on() == "written"

        store._pause = pause
        clock.now += store.refresh_s
        store.refresh()
        assert len(pauses) == 1
        assert store.verify(alice) is not None and store.verify(bob) is not None


def test_an_unreadable_file_serves_the_last_keys_for_a_bounded_time(tmp_path: Path) -> None:
    """The key file (on a read-only mount) turns unreadable while serving: a refresh used
    to answer that request 503 at once. Now the read is tried twice more, then the keys of
    the last good read are served, with one warning, until that read is 2 x refresh_s
    old; after that every keyed request is a 503 until the file reads again."""
    folder = tmp_path / "keys"
    folder.mkdir()
    file = folder / "keys.sqlite3"
    alice, _ = KeyStore(file).create("alice")
    good = file.read_bytes()
    gateway = make_gateway(tmp_path)
    with read_only(folder) as view:
        gateway.keys = store = KeyStore(view / "keys.sqlite3")
        clock, pauses = _controlled(store)
        with structlog.testing.capture_logs() as logs, LoopbackServer(gateway.app) as server:
            assert _status(server, alice) == 200
            file.write_bytes(b"not a database" * 300)  # swapped for a broken file
            clock.now += store.refresh_s + 1
            assert _status(server, alice) == 200
            assert pauses == [0.05, 0.25]
            clock.now += store.refresh_s - 2  # 2 x refresh_s - 1 after the good read
            assert _status(server, alice) == 200
            [stale] = [e for e in logs if e["event"] == "gateway.keys_stale"]
            assert stale["log_level"] == "warning" and "not a database" in stale["error"]
            assert "503" in stale["effect"]
            assert not [e for e in logs if e["event"] == "gateway.keys_unavailable"]
            clock.now += 1.5  # past the bound: fail closed
            assert _status(server, alice) == 503
            assert [e for e in logs if e["event"] == "gateway.keys_unavailable"]
            file.write_bytes(good)  # it reads again: served at once
            assert _status(server, alice) == 200
            clock.now += store.refresh_s
            file.write_bytes(b"")  # emptied: no key where there were some
            assert _status(server, alice) == 200
            assert len([e for e in logs if e["event"] == "gateway.keys_stale"]) == 2
            clock.now += store.refresh_s
            assert _status(server, alice) == 503
            failed = [e for e in logs if e["event"] == "gateway.keys_unavailable"]
            assert "holds no key" in failed[-1]["error"]


_HOLD = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
if sys.argv[2] == "rollback":
    db.execute("PRAGMA journal_mode = DELETE")
db.execute("BEGIN EXCLUSIVE" if sys.argv[2] == "rollback" else "BEGIN IMMEDIATE")
db.execute("INSERT INTO api_keys (id, name, hash, created) VALUES ('0badc0de', 'x', 'h', 1)")
print("holding", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
print("committed", flush=True)
sys.stdin.readline()
"""


def test_a_writer_holding_a_transaction_does_not_block_a_refresh(
        tmp_path: Path, writers: list[Writer]) -> None:
    """``aieng keys create`` in another process, mid-transaction, on the (WAL) key file
    the server can write: a refresh is not blocked (no "database is locked"), reads the
    keys committed so far, and the new one once it is committed."""
    path = tmp_path / "keys.sqlite3"
    store = KeyStore(path)
    alice, _ = store.create("alice")
    clock, pauses = _controlled(store)
    store.refresh(force=True)
    writer = Writer(_HOLD, str(path), "wal")
    writers.append(writer)
    assert writer.reached() == "holding"
    store.refresh(force=True)
    assert store.verify(alice) is not None and "0badc0de" not in store._cache
    assert writer.go_on() == "committed"
    clock.now += store.refresh_s
    store.refresh()
    assert "0badc0de" in store._cache and pauses == []


def test_a_lock_held_past_the_busy_timeout(tmp_path: Path, writers: list[Writer]) -> None:
    """A file in rollback-journal mode whose writer holds its lock past the busy timeout:
    the refresh is not tried again (it has waited already), the last keys are served up
    to the bound, then the lock error is raised; once released the file is read."""
    path = tmp_path / "keys.sqlite3"
    store = KeyStore(path)
    alice, _ = store.create("alice")
    clock, pauses = _controlled(store)
    store.refresh(force=True)
    store._busy_s = 0.05
    writer = Writer(_HOLD, str(path), "rollback")
    writers.append(writer)
    assert writer.reached() == "holding"
    clock.now += store.refresh_s
    with structlog.testing.capture_logs() as logs:
        store.refresh()
    assert store.verify(alice) is not None and pauses == []
    assert "database is locked" in logs[0]["error"]
    clock.now += store.refresh_s
    with pytest.raises(KeyStoreError, match="database is locked"):
        store.refresh()
    assert writer.go_on() == "committed"
    store.refresh()
    assert store.verify(alice) is not None and "0badc0de" in store._cache


def test_concurrent_refreshes_while_one_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    """While one thread's refresh waits on the file, another request's refresh serves the
    copy at once (within the bound) instead of queueing behind it; past the bound it
    waits, and takes that read's failure rather than reading (and waiting) again."""
    path = tmp_path / "keys.sqlite3"
    store = KeyStore(path)
    alice, _ = store.create("alice")
    clock, _ = _controlled(store)
    store.refresh(force=True)
    entered, release, reads = threading.Event(), threading.Event(), []
    records = store.records

    def slow_records() -> list[ApiKey]:
        reads.append(1)
        entered.set()
        assert release.wait(20)
        raise KeyStoreError("the key database cannot be used: database is locked")

    monkeypatch.setattr(store, "records", slow_records)
    errors: list[BaseException] = []

    def refresh() -> None:
        try:
            store.refresh()
        except KeyStoreError as exc:
            errors.append(exc)

    clock.now += store.refresh_s
    first = threading.Thread(target=refresh)
    first.start()
    assert entered.wait(20)
    second = threading.Thread(target=refresh)
    second.start()
    second.join(20)
    assert not second.is_alive() and first.is_alive() and not errors
    clock.now += store.refresh_s  # past the bound while the first read still waits
    second = threading.Thread(target=refresh)
    second.start()
    release.set()
    first.join(20)
    second.join(20)
    assert len(reads) == 3 and len(errors) == 2  # one refresh: a read and its 2 retries
    monkeypatch.setattr(store, "records", records)
    store.refresh()
    assert store.verify(alice) is not None


def test_a_removed_key_file_is_unavailable_not_empty(tmp_path: Path) -> None:
    """The key file removed while serving (``rm`` before a copy, a volume gone) read as no
    key at all: every key a silent 401. It is a failed read now: the last keys up to the
    bound, then an error naming the file and saying it is gone (a 503); the file put back
    is read again."""
    path = tmp_path / "keys.sqlite3"
    store = KeyStore(path)
    alice, _ = store.create("alice")
    clock, pauses = _controlled(store)
    store.refresh(force=True)
    kept = tmp_path / "kept.sqlite3"
    path.rename(kept)
    clock.now += store.refresh_s
    store.refresh()
    assert store.verify(alice) is not None and len(pauses) == 2
    clock.now += store.refresh_s
    with pytest.raises(KeyStoreError) as caught:
        store.refresh()
    assert str(path) in str(caught.value) and "is gone" in str(caught.value)
    assert not path.exists()  # a refresh creates no empty file in its place
    kept.rename(path)
    store.refresh()
    assert store.verify(alice) is not None
