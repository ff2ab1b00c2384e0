"""Print the names of the sampled mutants for ``mutmut run`` (run from the repository root after the mutants exist).

A full run (about 3,100 mutants) takes hours on a small machine, so the recorded runs test a fixed, stratified
sample: within every mutated function, mutant number n is taken when n % STEP == 1 (``probes``: STEP_PROBES, since
each of its mutants re-trains JAX probes). The same sample is drawn before and after a change.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

STEP = 7
STEP_PROBES = 21
_NUMBER = re.compile(r"__mutmut_(\d+)$")


def sampled_names(mutants_dir: Path = Path("mutants")) -> list[str]:
    """Names from every ``*.py.meta`` under ``mutants_dir`` whose number is 1 modulo the module's step."""
    names = []
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        step = STEP_PROBES if meta.name == "probes.py.meta" else STEP
        for name in json.loads(meta.read_text())["exit_code_by_key"]:
            if int(_NUMBER.search(name).group(1)) % step == 1:
                names.append(name)
    return names


if __name__ == "__main__":
    print("\n".join(sampled_names()))
