"""aieng's contract: the hook markers, the spec modules, the boundary types and events.

Plugins import from here and never from the kernel::

    from aieng_hookspecs import hookimpl
    from aieng_hookspecs.types import Hit, Query
"""

from ._buildlock import build_lock, lock_path
from ._full import DISK_FULL, disk_full, disk_full_hint
from ._machine import cpu_share, memory_share
from ._markers import PROJECT, CallMode, blocking, hookimpl, hookspec, role_spec
from ._models import MODEL_BUILD
from ._options import listed
from ._paths import (
    UNWRITABLE,
    CacheDirError,
    fsync_folder,
    remove_abandoned,
    replace_file,
    scratch_path,
    user_cache_dir,
    user_data_dir,
)
from ._protocols import (
    ComponentRegistry,
    DocumentReader,
    EventRegistry,
    PipelineContext,
    ReaderRegistry,
)
from ._secrets import REDACTED, masked_url, redact_url, redacted, secret_key
from ._sqlite import (
    WAL_SIZE_LIMIT,
    ForkGuard,
    check_layout,
    create_private,
    enable_wal,
    mark_layout,
    open_read_only,
    reclaim_space,
    sqlite_busy,
    sqlite_error,
    writable,
    write_transaction,
)
from ._text import HIDDEN, closest, did_you_mean, valid_utf8, word_chars
from ._threads import loop_waker, stop_if_cancelled
from ._untrusted import neutralize_citations, neutralize_fences

__all__ = [
    "DISK_FULL",
    "HIDDEN",
    "MODEL_BUILD",
    "PROJECT",
    "REDACTED",
    "UNWRITABLE",
    "WAL_SIZE_LIMIT",
    "CacheDirError",
    "CallMode",
    "ComponentRegistry",
    "DocumentReader",
    "EventRegistry",
    "ForkGuard",
    "PipelineContext",
    "ReaderRegistry",
    "__version__",
    "blocking",
    "build_lock",
    "check_layout",
    "closest",
    "cpu_share",
    "create_private",
    "did_you_mean",
    "disk_full",
    "disk_full_hint",
    "enable_wal",
    "fsync_folder",
    "hookimpl",
    "hookspec",
    "listed",
    "lock_path",
    "loop_waker",
    "mark_layout",
    "masked_url",
    "memory_share",
    "neutralize_citations",
    "neutralize_fences",
    "open_read_only",
    "reclaim_space",
    "redact_url",
    "redacted",
    "remove_abandoned",
    "replace_file",
    "role_spec",
    "scratch_path",
    "secret_key",
    "sqlite_busy",
    "sqlite_error",
    "stop_if_cancelled",
    "user_cache_dir",
    "user_data_dir",
    "valid_utf8",
    "word_chars",
    "writable",
    "write_transaction",
]

__version__ = "0.1.0"
