"""malloc reuses large blocks (:mod:`birdassets.allocator`): measured in fresh interpreters, by page faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from birdassets.allocator import is_glibc

pytestmark = pytest.mark.skipif(not is_glibc(), reason="mallopt settings exist on GNU libc only")

STEPS = 20
BLOCK_MIB = 96  # above glibc's largest dynamic mmap threshold (32 MiB) and a thread heap's limit (64 MiB)

SCRIPT = textwrap.dedent(f"""
    import ctypes, json, os, resource, sys, threading
    from birdassets.allocator import reuse_large_blocks
    applied = reuse_large_blocks() if sys.argv[1] == "tuned" else None
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]

    def steps():  # an XLA step's temporaries: malloc'd, written, freed, on a worker thread
        for _ in range({STEPS}):
            block = libc.malloc({BLOCK_MIB} * 2**20)
            ctypes.memset(block, 1, {BLOCK_MIB} * 2**20)
            libc.free(block)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    worker = threading.Thread(target=steps)
    worker.start()
    worker.join()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    env = {{name: os.environ.get(name) for name in
           ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}}
    print(json.dumps({{"applied": applied, "faults": faults, "env": env}}))
""")


def run(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], env={**clean, **env}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_thread_s_large_blocks_are_reused_instead_of_faulted_in_every_step():
    default, tuned = run("default"), run("tuned")
    assert tuned["applied"] is True
    # default: every step maps its 96 MiB afresh (24,576 pages of 4 KiB, or 48 transparent huge pages);
    # tuned: the first step's pages are reused by the other 19
    assert tuned["faults"] <= 2 * 24_576
    assert default["faults"] >= STEPS / 2 * tuned["faults"]


def test_the_settings_are_exported_for_child_processes():
    tuned = run("tuned")
    assert tuned["env"] == {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "1073741824",
                            "MALLOC_TRIM_THRESHOLD_": "1073741824"}


@pytest.mark.parametrize("env", [{"MALLOC_ARENA_MAX": "4"}, {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}])
def test_a_user_s_own_malloc_settings_win(env):
    tuned = run("tuned", **env)
    assert tuned["applied"] is False
    assert tuned["env"]["MALLOC_MMAP_THRESHOLD_"] is None
    assert tuned["env"]["MALLOC_ARENA_MAX"] == env.get("MALLOC_ARENA_MAX")
