"""glibc malloc settings for array work: one heap whose large blocks are reused instead of mapped afresh.

XLA:CPU and NumPy take their large temporaries (a training step's activations, a batch's framed audio: tens to
hundreds of MB) from malloc and free them at the end of the step. glibc's defaults serve every block above its
mmap threshold (at most 32 MiB) with a new ``mmap`` and unmap it on free, and give threads arenas whose heaps
cannot exceed 64 MiB (so a thread's large block is always mapped). Each step then faults in and zeroes its
temporaries again, 4 KiB at a time, and the faults of one process's threads serialise on its memory map: the
demo's detector (150 ResNet18 steps) took 8.8 million page faults and 17 s of kernel time and ran 90 s; with
:data:`MALLOC_SETTINGS` it takes 0.44 million faults and 5 s, and runs 62 s, to the same weights.

The price: a process keeps up to :data:`KEEP_FREE_BYTES` of freed memory for reuse instead of returning it.
"""

from __future__ import annotations

import ctypes
import os

KEEP_FREE_BYTES = 1 << 30
"""Blocks below this come from the heap (``M_MMAP_THRESHOLD``), and up to this much freed memory at the heap's
top stays mapped (``M_TRIM_THRESHOLD``), 1 GiB."""
MALLOC_SETTINGS = {
    "MALLOC_ARENA_MAX": 1,
    "MALLOC_MMAP_THRESHOLD_": KEEP_FREE_BYTES,
    "MALLOC_TRIM_THRESHOLD_": KEEP_FREE_BYTES,
}
"""glibc's environment variables for the settings; child processes read them at start-up."""
_MALLOPT_PARAMETERS = {"MALLOC_ARENA_MAX": -8, "MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_TRIM_THRESHOLD_": -1}
"""``M_ARENA_MAX``, ``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD`` of ``<malloc.h>``: the same settings at run time."""


def is_glibc() -> bool:
    """Whether this process runs on GNU libc (musl, macOS and Windows have no ``mallopt`` of this kind)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (AttributeError, ValueError, OSError):
        return False


def user_tuned_malloc() -> bool:
    """Whether the environment already sets any glibc malloc option (those win: nothing is changed)."""
    return any(name in os.environ for name in MALLOC_SETTINGS) or "glibc.malloc" in os.environ.get(
        "GLIBC_TUNABLES", "")


def reuse_large_blocks() -> bool:
    """Apply :data:`MALLOC_SETTINGS` to this process (``mallopt``) and, through the environment, to the processes
    it starts (a demo lane, the webserver's runs, Celery workers). Call it before threads start (before
    TensorFlow or JAX is imported), so that every thread shares the one heap.

    Returns:
        whether the settings were applied: not off glibc, nor when the environment already tunes malloc.
    """
    if not is_glibc() or user_tuned_malloc():
        return False
    libc = ctypes.CDLL(None)  # this process's own C library
    for name, value in MALLOC_SETTINGS.items():
        if libc.mallopt(_MALLOPT_PARAMETERS[name], value) != 1:
            return False
    os.environ.update({name: str(value) for name, value in MALLOC_SETTINGS.items()})
    return True
