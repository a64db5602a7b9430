"""Keep freed image-sized buffers in the process rather than handing them back to the kernel.

glibc returns every freed block above its mmap threshold (128 KiB at start) to the kernel, and
the next allocation of that size faults it back in page by page, zero-filled. Its threshold
grows on its own only after such a block is freed, so a fresh process pays this on its first
images: the metrics allocate dozens of image-sized float64 arrays per pair, and the five metrics
of the authors' tables took 0.17 s on a 576x768 TNO pair in a fresh process against 0.10 s once
the threshold had grown (measured here; every ``evaluate`` of a small folder paid it).
``keep_freed_memory`` sets the threshold up front to glibc's own ceiling for it (32 MiB), and
the heap's trim threshold above it, so the first pair runs as fast as the hundredth. The cost is
up to that much freed memory kept by the process. Elsewhere (not glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where its own growth stops
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # as glibc pairs them when it grows the threshold itself


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (idempotent); False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
