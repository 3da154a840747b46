"""Keep freed chunk temporaries in the heap (glibc), so they are not page-faulted in afresh.

The quantizer allocates a few 256 KiB temporaries per 64K-element chunk. glibc serves blocks
>= 128 KiB with mmap and returns them with munmap on free, so every chunk page-faults its
temporaries in again (the kernel zeroes each page): measured 2x slower end to end on a
16M-element tensor (benchmarks/bench_quant.py). Raising the mmap and trim thresholds keeps those
blocks in the heap for reuse. Tensors themselves (> 64 MiB) are still mmapped and returned.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3


def keep_chunks_in_heap() -> bool:
    """Apply the glibc tuning; returns False where there is no glibc (nothing changes then)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 64 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 256 << 20))
