"""Racing processes: the same script started in several processes and released together,
to test what two workers sharing a cache or a file do at the same moment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["race_processes"]

#: What every racer runs first: it says it is ready (``ready-<n>``) and waits for ``go``.
_PREAMBLE = """
import json, sys, time
from pathlib import Path
here = Path(sys.argv[1])
(here / f"ready-{sys.argv[2]}").touch()
while not (here / "go").exists():
    time.sleep(0.005)
"""


def race_processes(body: str, here: Path, *args: str, processes: int = 2,
                   timeout: float = 120.0, env: Mapping[str, str] | None = None) -> list[str]:
    """Run the Python source ``body`` in ``processes`` processes at once and return the last
    line each printed, in start order.

    Each process imports what it needs and says it is ready; once all are, they are released
    together, so the work of ``body`` overlaps. In ``body``, ``here`` is the folder
    (``Path``), ``sys.argv[3:]`` are ``args``, and ``json``, ``sys``, ``time`` and ``Path``
    are imported. A racer that fails (its exit status), or one that dies before the
    release, fails the call with its standard error.

    :param here: a folder of the test's own (``tmp_path``): the racers' handshake files
        go there.
    :param env: the racers' environment (default: this one, with ``OMP_NUM_THREADS=1``
        and ``HF_HUB_OFFLINE=1``).
    """
    environment = dict(env) if env is not None else {
        **os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    racers = [subprocess.Popen([sys.executable, "-c", _PREAMBLE + body, str(here), str(n),
                                *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=environment) for n in range(processes)]
    try:
        deadline = time.monotonic() + timeout
        while not all((here / f"ready-{n}").exists() for n in range(processes)):
            dead = [r.communicate() for r in racers if r.poll() is not None]
            assert not dead, f"a racer ended before the release: {dead}"
            assert time.monotonic() < deadline, f"the racers were not ready in {timeout} s"
            time.sleep(0.01)
        (here / "go").touch()
        outs = [r.communicate(timeout=timeout) for r in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.communicate()
    for racer, (_, err) in zip(racers, outs):
        assert racer.returncode == 0, err
    return [out.strip().splitlines()[-1] if out.strip() else "" for out, _ in outs]
