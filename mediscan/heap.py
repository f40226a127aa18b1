"""The process's C heap under glibc's malloc: keep freed memory for reuse, or give it back.

Training on a CPU allocates and frees tens of megabytes of activations every step, and PyTorch
inference every batch. glibc returns a freed block above its mmap threshold (and the freed top of
the heap above its trim threshold) to the kernel at once, so every step faults the same pages in
again: about a sixth of a training step's time on two cores, over a third of an inference batch's
(docs/measurements.md). `keep_freed_memory` raises both thresholds for the process, for up to
1 GiB more resident memory; training and `Classifier.load` on a CPU call it. The server also gives
free pages back after a large upload (`serve.uploads.trim_heap`). Elsewhere than glibc, each call
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import lru_cache

MMAP_THRESHOLD = 256 << 20  # blocks larger than this still come from (and go back to) the kernel
TRIM_THRESHOLD = 1 << 30  # free memory kept at the top of the heap
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


@lru_cache(maxsize=1)
def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has malloc_trim and mallopt), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not (hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt")):
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return libc


def keep_freed_memory() -> bool:
    """Raise malloc's mmap and trim thresholds for this process; True when applied.

    Not applied without glibc or when the user set malloc's thresholds already (`_USER_SETTINGS`
    or a malloc tunable in GLIBC_TUNABLES)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    chosen = any(os.environ.get(name) for name in _USER_SETTINGS) or "malloc" in tunables
    libc = glibc()
    if libc is None or chosen:
        return False
    # the trim threshold only after the mmap one took: set alone, it turns off glibc's growing mmap
    # threshold and every large block is mmapped (measured: 42 instead of 96 training images/s)
    kept = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return bool(kept)


def release_free_memory() -> bool:
    """Return the heap's free pages to the kernel (malloc_trim); True when glibc did it."""
    libc = glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
