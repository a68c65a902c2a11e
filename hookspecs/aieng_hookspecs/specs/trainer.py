"""Role ``trainer``: finetuning jobs (LoRA, QLoRA, ...)."""

from __future__ import annotations

from .._markers import CallMode, role_spec
from ..types import TrainJob, TrainResult

__all__ = ["aieng_train_run"]


@role_spec(CallMode.FIRST, role="trainer")
def aieng_train_run(job: TrainJob) -> TrainResult | None:
    """Run a finetuning job to completion.

    :called: by ``aieng train`` and the Python API, once per job.
    :mode: first: the first trainer supporting ``job.method`` runs it.
    :none: "method not supported here": the next trainer is asked.
    :async: may be ``async def``; training belongs in a thread or process.
    :param job: base model, dataset, method, output directory and hyperparameters.
    :returns: the adapter's location and the training metrics.

    .. versionadded:: 0.1.0
    """
