"""glibc malloc tuning for training: keep freed activation memory instead of returning it to the system.

By default glibc serves blocks above a (dynamic, ≤ 32 MiB) threshold with fresh ``mmap`` and gives them back with
``munmap`` when freed, and trims the heap top above 128 KiB.  A training step allocates and frees the same large
activations and gradients every time, so every step page-faults them in again (zeroed by the kernel): measured on
this CPU for OASIS at ngf 64, 96×128, 1 thread, ~200k minor faults and 0.4–0.7 s of system time per ~4 s step.
``train.malloc: retain`` takes every block from the heap (``M_MMAP_MAX`` 0) and never trims it (``M_TRIM_THRESHOLD``
huge): there the faults dropped to ~50k, and in ``benchmarks/speed_report.py`` steps at ngf 64 were 10–20 % faster
with ~10 % more peak RSS (freed memory stays mapped; docs/performance.md).  Results are unaffected.  Elsewhere than
glibc (macOS, musl) it does nothing and the Trainer says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util

MALLOC_MODES = ("default", "retain")
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc <malloc.h>
NEVER_TRIM = 2**31 - 1  # mallopt takes an int: 2 GiB of free heap top before trimming


def set_malloc(mode: str) -> bool:
    """Apply ``train.malloc``; True when glibc accepted the settings (``default`` changes nothing: False)."""
    if mode not in MALLOC_MODES:
        raise ValueError(f"train.malloc must be one of {', '.join(MALLOC_MODES)}, got {mode!r}")
    if mode == "default":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
