"""Process-wide settings that make CPU inference faster: huge pages and a heap that keeps freed memory.

PyTorch's CPU allocator has no cache: every activation of a forward pass is fresh memory from ``malloc``, and glibc
serves large blocks with ``mmap`` and returns them to the system on ``free``. The next forward pass then pays a
page fault for every page it touches again: writing 100 MB into new memory took 90 ms here, against 15 ms into
memory already mapped. Two settings remove most of that cost:

* ``THP_MEM_ALLOC_ENABLE=1``: PyTorch backs large CPU tensors with transparent huge pages (512x fewer faults).
  torch reads it once, at import, so it must be set before ``import torch``.
* :func:`reuse_freed_memory`: glibc serves every block from its heap and never trims it, so the memory freed by
  one forward pass is reused by the next one without faults. It keeps the process at its peak memory.

Both are process-wide, so ``import mmv`` sets neither: the ``mmv`` command turns both on at start, and a library
user opts in with one call, before torch is imported (``mmv.load`` and ``mmv.create_model`` import it)::

    import mmv
    mmv.runtime.use_fast_cpu_settings()  # {"huge_pages": True, "reuse_freed_memory": True}
    import torch

``THP_MEM_ALLOC_ENABLE=0`` or ``MMV_REUSE_FREED_MEMORY=0`` in the environment turns one of them off, for the
command too. ``benchmarks/bench_models.py`` measures both (its ``no_hugepages`` and ``default_malloc`` rows).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = ["reuse_freed_memory", "use_fast_cpu_settings"]

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_applied = False
# Whether huge pages were requested before torch was imported (by a call of use_fast_cpu_settings), so that a later
# call still reports them as in effect.
_huge_pages = False


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


def use_fast_cpu_settings() -> dict[str, bool]:
    """Turns on the ``mmv`` command's CPU settings in this process: huge pages and :func:`reuse_freed_memory`.

    Call it before ``import torch`` (and before anything that imports torch, such as ``mmv.load``): torch reads
    ``THP_MEM_ALLOC_ENABLE`` once, at import. Called later, it still makes glibc keep freed memory, and logs a
    warning that huge pages are not in effect. ``THP_MEM_ALLOC_ENABLE=0`` in the environment keeps huge pages off.

    Returns:
        ``{"huge_pages": bool, "reuse_freed_memory": bool}``: which of the two settings are in effect.
    """
    global _huge_pages
    if "torch" not in sys.modules:
        _huge_pages = os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1") == "1"
    elif not _huge_pages:
        log.warning("huge pages are not in effect: torch was imported before use_fast_cpu_settings(), and torch reads "
                    "THP_MEM_ALLOC_ENABLE only when it is imported; call it before 'import torch'")
    return {"huge_pages": _huge_pages, "reuse_freed_memory": reuse_freed_memory()}


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
