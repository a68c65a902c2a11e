"""The host program's process-wide state, kept as it was around the libraries' offline tools.

The exporter and ONNX Runtime's offline tools change what belongs to the program that
embeds aieng:

- optimum's dummy inputs draw from Python's global ``random`` (a host that seeded it gets
  another sequence after an export);
- ``onnxruntime.quantization`` logs through the module-level ``logging.warning`` /
  ``logging.info``, which call ``logging.basicConfig()`` when the root logger has no
  handler: the host's root logger gains a stderr handler and its own records are printed
  in a format it never chose (``WARNING:root:Please consider to run pre-processing ...``).

:func:`host_state_kept` puts the global random generators back after the call, and routes
the root-logger records of the calling thread to structlog (``onnx.library_log``) while
the root logger has no handler of its own, so ``basicConfig`` never runs.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Iterator
from typing import Any

import structlog

__all__ = ["host_state_kept"]

log = structlog.get_logger(__name__)

#: Guards the fields below: tools may run in several threads at once (an export, and a
#: quantization of another model); the state is saved by the first to enter and put back
#: by the last to leave.
_lock = threading.Lock()
_entered = 0
_saved: tuple[Any, ...] = ()
#: The handler on the root logger while one is there (the root had none of its own).
_installed: list[_Forward] = []


class _Forward(logging.Handler):
    """Stands on a root logger that had no handler: the records of the threads running a
    library tool go to structlog; anyone else's are handled as with no handler at all
    (``logging.lastResort``: warnings and worse to stderr)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.threads: dict[int, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread in self.threads:
            log.debug("onnx.library_log", logger=record.name, level=record.levelname,
                      message=record.getMessage())
        elif logging.lastResort is not None and record.levelno >= logging.lastResort.level:
            logging.lastResort.handle(record)


@contextlib.contextmanager
def host_state_kept() -> Iterator[None]:
    """Run the body (a blocking export, quantization or fusion) leaving the global random
    generators (Python's, NumPy's, torch's CPU one) as they were, and without
    ``logging.basicConfig`` being run on the host's root logger behind its back. Calls
    may overlap in several threads: the state is the one before the first began."""
    _enter()
    try:
        yield
    finally:
        _leave()


def _enter() -> None:
    import numpy as np
    import torch

    global _entered, _saved
    root = logging.getLogger()
    ident = threading.get_ident()
    with _lock:
        if not _entered:
            _saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
            if not root.handlers:
                handler = _Forward()
                root.addHandler(handler)
                _installed.append(handler)
        _entered += 1
        if _installed:
            threads = _installed[0].threads
            threads[ident] = threads.get(ident, 0) + 1


def _leave() -> None:
    import numpy as np
    import torch

    global _entered, _saved
    ident = threading.get_ident()
    with _lock:
        _entered -= 1
        if _installed:
            threads = _installed[0].threads
            threads[ident] -= 1
            if not threads[ident]:
                del threads[ident]
        if not _entered:
            if _installed:
                logging.getLogger().removeHandler(_installed.pop())
            state, _saved = _saved, ()
            random.setstate(state[0])
            np.random.set_state(state[1])
            torch.set_rng_state(state[2])
