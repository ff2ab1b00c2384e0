"""JAX's persistent compilation cache: under BIRDASSETS_HOME unless JAX_COMPILATION_CACHE_DIR says otherwise,
small programs kept too, and a second process reads every program back with bit-identical results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

PROGRAMS = """
import json, sys
from birdassets.cli import use_compile_cache
use_compile_cache()
import jax, jax.numpy as jnp
key = jax.random.PRNGKey(7)
w = jax.random.normal(key, (64, 32))                   # eager: a handful of small programs
h = jax.jit(lambda x: jnp.tanh(x @ w).sum(axis=0))(jnp.ones((8, 64)))
print(json.dumps([float(v) for v in h]))
"""


def run_programs(home: Path, cache: Path | None) -> list[float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")
           and not k.startswith("JAX_PERSISTENT_CACHE")}
    env |= {"BIRDASSETS_HOME": str(home), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    if cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    done = subprocess.run([sys.executable, "-c", PROGRAMS], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def entries(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*-cache")} if folder.exists() else set()


def test_programs_are_kept_under_the_home_and_read_back_bit_identical(tmp_path):
    home = tmp_path / "home"
    first = run_programs(home, None)
    kept = entries(home / "cache" / "jax")
    # the jitted function, the PRNG key, the normal draw and their helpers: sub-second programs are kept too
    assert len(kept) >= 4 and any(name.startswith("jit__lambda") for name in kept), kept
    second = run_programs(home, None)
    assert entries(home / "cache" / "jax") == kept  # every program of the second process came from the cache
    assert np.array_equal(np.array(first), np.array(second))


def test_an_explicit_cache_folder_wins_over_the_home(tmp_path):
    home, shared = tmp_path / "home", tmp_path / "shared-cache"
    run_programs(home, shared)
    assert entries(shared) and not entries(home / "cache" / "jax")
