"""The typed options of the ``vectors`` component."""

from __future__ import annotations

from collections.abc import Callable

import attrs
from attrs import validators as v

__all__ = ["ENGINES", "VectorsOptions"]

#: The HNSW engines an index may use (``VectorsOptions.engine``).
ENGINES = ("usearch", "hnswlib")


def _int_at_least(low: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    """Validator: an ``int`` (not a ``bool``) of at least ``low``."""

    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an integer, got {value!r}")
        if value < low:
            raise ValueError(f"{attribute.name} must be at least {low}, got {value}")

    return check


def _boolean(instance: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    """Validator: ``True`` or ``False`` (TOML's ``true`` / ``false``), nothing else."""
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be true or false, got {value!r}")


@attrs.frozen
class VectorsOptions:
    """Options of the ``vectors`` index.

    :param path: the folder the index persists to (created on first write); empty: the
        index lives in memory only and is lost when the process ends.
    :param exact_below: below this many vectors a query is answered by an exact cosine scan
        (numpy); from it on, by an HNSW graph (usearch) whose candidates are rescored
        exactly. The graph is built when the index reaches this size, kept up to date, and
        dropped when deletes bring the index below half of it. ``0``: always HNSW. A
        filtered query whose filters keep fewer documents than this is answered exactly.
    :param batch_size: the most texts per ``context.embed`` call while indexing.
    :param model: the embedding model asked for (``aieng_embed``'s ``model``); empty: the
        embedding backend's default. Recorded in the index, so a persisted index is never
        searched with vectors of another model.
    :param connectivity: HNSW edges per node (``M``); more: better recall, more memory.
    :param expansion_add: HNSW candidate list while inserting (``efConstruction``).
    :param expansion_search: HNSW candidate list while searching (``ef``); raised to the
        query's ``k`` when smaller.
    :param engine: the HNSW library: ``"usearch"`` (the default: portable wheels) or
        ``"hnswlib"`` (``pip install aieng-vectors[hnswlib]``; built from source for the
        machine's CPU, ~3× faster searches on the MiniLM benchmark). A persisted graph of
        the other engine is rebuilt from the vectors when the folder opens.
    :param threads: threads the engine uses to insert a batch into the HNSW graph (``0``: all
        cores). Searches use one thread: many run at once in the kernel's worker threads.
    :param read_only: open the folder for searches only, whatever its permissions: any
        number of read-only components (in one process or several: serving workers) share
        it, and none opens while a writer has it (nor a writer while they do). Searches,
        ``get`` and ``len`` see the index as it was when the component opened; ``aieng_index``
        and ``aieng_delete`` are refused before anything is embedded; closing writes nothing.
        Needs a ``path`` holding an index.
    """

    path: str = attrs.field(default="", validator=v.instance_of(str))
    exact_below: int = attrs.field(default=50_000, validator=_int_at_least(0))
    batch_size: int = attrs.field(default=64, validator=_int_at_least(1))
    model: str = attrs.field(default="", validator=v.instance_of(str))
    connectivity: int = attrs.field(default=16, validator=_int_at_least(2))
    expansion_add: int = attrs.field(default=128, validator=_int_at_least(1))
    expansion_search: int = attrs.field(default=64, validator=_int_at_least(1))
    threads: int = attrs.field(default=0, validator=_int_at_least(0))
    engine: str = attrs.field(default="usearch", validator=v.in_(ENGINES))
    read_only: bool = attrs.field(default=False, validator=_boolean)

    def __attrs_post_init__(self) -> None:
        if self.read_only and not self.path:
            raise ValueError("read_only = true needs a path: an index in memory that takes no "
                             "writes is always empty; set path to the folder to search")
