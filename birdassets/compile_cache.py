"""JAX's persistent compilation cache, kept under ``BIRDASSETS_HOME`` (``cache/jax``).

Every process that runs JAX code (a command, a Dagster run, a Celery worker) compiles the same XLA programs:
the encoder's forward pass for each checkpoint, the probe trainer for each task, a model's initialisation.
With the cache, a program compiled once is read back by later processes and by later ``jax.jit`` wrappers of
the same computation in the same process (the cache is keyed by the program, its compile options and the JAX
version, not by the Python function), so a new checkpoint's run starts computing at once. Reading an
executable back gives the same machine code, so results are bit-identical with or without the cache.

An explicit ``JAX_COMPILATION_CACHE_DIR`` (environment) wins, so a whole test session or a cluster can share
one folder. Programs of every compile time are kept (a ResNet18's initialisation is ~40 programs of well
under a second each), up to :data:`CACHE_MAX_BYTES`, least recently used first out.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CACHE_DIR_ENV = "JAX_COMPILATION_CACHE_DIR"
CACHE_MAX_BYTES = 2 * 1024**3
"""Cap on the cache folder; JAX evicts the least recently used programs past it."""
_OPTIONS = {
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": -1,
    "jax_compilation_cache_max_size": CACHE_MAX_BYTES,
}


def enable_compile_cache(default_dir: Path) -> Path:
    """Point JAX's persistent compilation cache at ``$JAX_COMPILATION_CACHE_DIR`` or else ``default_dir``.

    Before JAX is imported this only sets environment variables (JAX reads them at import, and child
    processes inherit them), so a command that never touches JAX does not pay for importing it; JAX creates
    the folder at its first compile. Returns the folder in use.
    """
    directory = Path(os.environ.get(CACHE_DIR_ENV) or default_dir)
    settings = {"jax_compilation_cache_dir": str(directory), **_OPTIONS}
    for name, value in settings.items():
        os.environ.setdefault(name.upper(), str(value))
    if "jax" in sys.modules:
        import jax

        for name, value in settings.items():
            jax.config.update(name, value)
    return directory
