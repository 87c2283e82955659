"""Process-wide settings that make CPU inference faster: huge pages and a heap that keeps freed memory.

PyTorch's CPU allocator has no cache: every activation of a forward pass is fresh memory from ``malloc``, and glibc
serves large blocks with ``mmap`` and returns them to the system on ``free``. The next forward pass then pays a
page fault for every page it touches again: writing 100 MB into new memory took 90 ms here, against 15 ms into
memory already mapped. Two settings remove most of that cost:

* ``THP_MEM_ALLOC_ENABLE=1``: PyTorch backs large CPU tensors with transparent huge pages (512x fewer faults).
  torch reads it once, at import, so ``import mmv`` sets it when torch is not imported yet (see ``mmv/__init__``).
* :func:`reuse_freed_memory`: glibc serves every block from its heap and never trims it, so the memory freed by
  one forward pass is reused by the next one without faults. The ``mmv`` command calls it at start; call it
  yourself in an inference script. It is process-wide and keeps the process at its peak memory, which is why
  importing the library does not do it.

``benchmarks/bench_models.py`` measures both (its ``no_hugepages`` and ``default_malloc`` rows).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["reuse_freed_memory"]

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_applied = False


def reuse_freed_memory() -> bool:
    """Makes glibc keep freed memory for reuse (no ``mmap`` for large blocks, no trimming of the heap).

    Set ``MMV_REUSE_FREED_MEMORY=0`` to make this a no-op. Elsewhere than glibc (macOS, musl, Windows) it does
    nothing.

    Returns:
        True if the setting is in effect.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("MMV_REUSE_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success. The trim threshold is the largest int: the heap top is never given back.
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    log.debug("glibc heap keeps freed memory: %s", _applied)
    return _applied
