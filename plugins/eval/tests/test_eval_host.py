"""An evaluation inside a host program: it runs (and resumes) under trio as under asyncio,
each session in a fresh event loop; what it returns can be sent to a worker process; and
it leaves the host's global state alone (the random generators, warnings filters, logging
handlers, the working directory)."""

from __future__ import annotations

import logging
import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import _evalkit as kit
import anyio
import numpy as np
import pytest
from aieng_eval import EvalError, read_results, run_eval


def _run(pipeline: Path, dataset: Path, out: Path, backend: str, **kwargs: Any) -> Any:
    return anyio.run(lambda: run_eval(pipeline, dataset, out=out, kernel=kit.make_kernel(),
                                      hash_cache=out.parent / "hashes.json", **kwargs),
                     backend=backend)


def _host_state() -> tuple[Any, ...]:
    return (random.getstate(), repr(np.random.get_state()), list(warnings.filters),
            list(logging.getLogger().handlers), os.getcwd())


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_run_and_its_resume_under_either_backend(tmp_path: Path, backend: str) -> None:
    """Four items, then the rest on resume (each session its own ``anyio.run``, as two
    scripts or notebook cells would be), with reports (bootstrap intervals) written: every
    item runs once, in order; the host's random generators, warnings filters, root logging
    handlers and working directory are as they were; the outcome and its items survive
    ``pickle`` (a host hands them to a worker process)."""
    random.seed(1234)
    np.random.seed(1234)
    before = _host_state()
    ds = kit.echo_dataset(tmp_path, 7)
    pipeline = kit.pipeline_file(tmp_path)
    out = tmp_path / "run dir é"  # a space and a non-ASCII letter in the path
    kit.CALLS.clear()
    first = _run(pipeline, ds, out, backend, limit=4, concurrency=2)
    second = _run(pipeline, ds, out, backend, concurrency=2)
    assert (first.ran, second.ran, second.skipped) == (4, 3, 4)
    assert sorted(kit.CALLS) == sorted(f"w{i}" for i in range(7))
    assert [r.id for r in second.results] == [f"q{i}" for i in range(7)]
    assert all(r.scores["exact_match"] == 1.0 for r in second.results)
    assert (out / "report.html").exists()
    assert _host_state() == before
    copy = pickle.loads(pickle.dumps(second))
    assert copy.results == second.results and copy.lock == second.lock
    assert pickle.loads(pickle.dumps(read_results(out / "results.jsonl"))) == \
        read_results(out / "results.jsonl")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_judge_pipeline_and_a_refusal_under_either_backend(tmp_path: Path,
                                                             backend: str) -> None:
    """A separate judge pipeline scores every item under either backend, and a resume over
    another dataset is refused with an :class:`EvalError` that a worker process can send
    back (it pickles, message and all)."""
    ds = kit.echo_dataset(tmp_path, 3)
    out = tmp_path / "run"
    judge = kit.pipeline_file(tmp_path, name="judges")
    result = _run(kit.pipeline_file(tmp_path, judges=False), ds, out, backend,
                  judge_pipeline=judge)
    assert [r.scores["exact_match"] for r in result.results] == [1.0, 1.0, 1.0]
    other = kit.echo_dataset(tmp_path, 4, name="other.jsonl")
    with pytest.raises(EvalError) as caught:
        _run(kit.pipeline_file(tmp_path, judges=False), other, out, backend,
             judge_pipeline=judge)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is EvalError and str(copy) == str(caught.value)


@pytest.mark.parametrize("home", ["unset", "read-only"])
def test_a_run_without_network_or_a_writable_home(tmp_path: Path, home: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """No network (every non-loopback connect refused), proxies set, and ``HOME`` unset
    or read-only with the default hash cache: the run and its reports complete as usual
    (the cache is an optimisation; nothing downloads or phones home)."""
    import socket

    real_connect = socket.socket.connect
    refused: list[object] = []

    def guarded(self: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in (
                "127.0.0.1", "::1", "localhost"):
            refused.append(address)
            raise OSError(f"network disabled in this test: {address!r}")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://proxy.invalid:3128")
    monkeypatch.delenv("AIENG_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    if home == "unset":
        monkeypatch.delenv("HOME", raising=False)
    else:
        locked = tmp_path / "home"
        locked.mkdir(mode=0o500)
        monkeypatch.setenv("HOME", str(locked))
    ds = kit.echo_dataset(tmp_path, 3)
    out = tmp_path / "run"
    result = anyio.run(lambda: run_eval(kit.pipeline_file(tmp_path), ds, out=out,
                                        kernel=kit.make_kernel()))
    assert result.ran == 3 and not result.failed
    assert (out / "report.html").exists() and refused == []
