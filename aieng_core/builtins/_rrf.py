"""``rrf``: reciprocal rank fusion as a component, to set its constant in a pipeline file."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Hit, Query

from ..fusion import reciprocal_rank_fusion

__all__ = ["RRFFuser", "RRFOptions"]


@attrs.frozen
class RRFOptions:
    """Options of the ``rrf`` fuser.

    :param k: the RRF constant.
    """

    k: int = attrs.field(default=60, validator=attrs.validators.ge(1))


class RRFFuser:
    """Fuses retrievers' runs by reciprocal rank."""

    def __init__(self, options: RRFOptions) -> None:
        self.options = options

    @hookimpl
    def aieng_fuse(self, query: Query, runs: Sequence[Sequence[Hit]]) -> list[Hit]:
        return reciprocal_rank_fusion(runs, k=self.options.k)
