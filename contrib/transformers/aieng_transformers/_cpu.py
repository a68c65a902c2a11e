"""What this CPU computes natively: bfloat16 and float16 arithmetic, read from the x86
flags in ``/proc/cpuinfo``, so that a model loaded in a type the CPU only emulates says
so (torch then runs it many times slower than float32)."""

from __future__ import annotations

import functools
import platform

import structlog

__all__ = ["cpu_flags", "emulated_dtype", "warn_if_emulated"]

log = structlog.get_logger(__name__)

#: x86 flags of instructions that multiply each type natively.
NATIVE_FLAGS: dict[str, frozenset[str]] = {
    "bfloat16": frozenset({"avx512_bf16", "amx_bf16"}),
    "float16": frozenset({"avx512_fp16", "amx_fp16"}),
}


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The ``flags`` line of ``/proc/cpuinfo`` on an x86 CPU; ``None`` elsewhere or when it
    cannot be read."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return None


def emulated_dtype(dtype: str, device: str) -> bool:
    """Whether ``dtype`` (``bfloat16`` / ``float16``) on ``device`` runs on a CPU known to
    lack its instructions (an x86 CPU whose flags have none of :data:`NATIVE_FLAGS`)."""
    wanted = NATIVE_FLAGS.get(dtype)
    if wanted is None or not device.startswith("cpu"):
        return False
    flags = cpu_flags()
    return flags is not None and not flags & wanted


def warn_if_emulated(dtype: str, device: str, *, component: str) -> None:
    """Log ``dtype.emulated`` (a warning) when :func:`emulated_dtype` says so."""
    if emulated_dtype(dtype, device):
        log.warning("dtype.emulated", component=component, dtype=dtype,
                    reason=(f"this CPU has no {dtype} instructions "
                            f"({' / '.join(sorted(NATIVE_FLAGS[dtype]))}): torch emulates "
                            f"them, many times slower than float32 (MiniLM in bfloat16: "
                            f"~30x slower on an AVX2 AMD EPYC); use dtype = 'float32'"))
