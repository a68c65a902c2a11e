"""A torch model loaded before an ``os.fork()`` (multiprocessing's ``fork`` start method,
gunicorn ``--preload``), then used in the child.

torch's CPU kernels run on an OpenMP thread pool (GNU libgomp in the PyPI wheels). Once the
parent has entered a parallel region (any large enough operator with more than one intra-op
thread: loading or running a model), the pool's threads do not exist in a forked child, and
the child's first parallel region waits for them forever: it hangs, with no error. With one
intra-op thread torch never enters a parallel region, and the child works.

So a component refuses, with an error that says what to do, to run a model it loaded in
another process while torch has more than one intra-op thread; with one it runs.
"""

from __future__ import annotations

import os

__all__ = ["ForkedModelError", "check_process"]


class ForkedModelError(RuntimeError):
    """A torch model loaded in a parent process is used in a forked child whose torch would
    hang in its first multi-threaded operator."""


def check_process(loaded_in: int, model: str) -> None:
    """Raise :class:`ForkedModelError` when this is not the process ``loaded_in`` (where
    ``model`` was loaded) and torch runs more than one intra-op thread here.

    :param loaded_in: the id of the process that loaded the model.
    :param model: the model's name, for the message.
    """
    if loaded_in == os.getpid():
        return
    import torch

    threads = torch.get_num_threads()
    if threads > 1:
        raise ForkedModelError(
            f"the model {model!r} was loaded in process {loaded_in} and is used in process "
            f"{os.getpid()}, forked from it, with {threads} torch threads: torch's OpenMP "
            "threads do not survive fork() and its next multi-threaded operator would hang. "
            "Call torch.set_num_threads(1) in the child before using the model, or load it "
            "after the fork (multiprocessing's 'spawn' or 'forkserver' start method; "
            "gunicorn without --preload)")
