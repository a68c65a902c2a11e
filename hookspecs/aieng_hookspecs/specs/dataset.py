"""Role ``dataset``: process dataset records (dedup, filters, formatting)."""

from __future__ import annotations

from collections.abc import Sequence

from .._markers import CallMode, role_spec
from ..types import Record

__all__ = ["aieng_dataset_process"]


@role_spec(CallMode.CHAIN, role="dataset", chain_arg="records")
def aieng_dataset_process(records: Sequence[Record]) -> list[Record] | None:
    """Transform a batch of records.

    :called: by dataset pipelines, once per batch.
    :mode: chain: processors run in order, each receiving the previous one's records.
    :none: "unchanged": the next processor receives the same records.
    :async: may be ``async def``.
    :param records: the batch.
    :returns: the records kept, transformed, in order.

    .. versionadded:: 0.1.0
    """
