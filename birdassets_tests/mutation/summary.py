"""Per-module counts of a sampled mutmut run, and the surviving mutants' names (run from the repository root).

Usage: ``python birdassets_tests/mutation/summary.py sample.txt`` where ``sample.txt`` holds the names that
``sample.py`` printed for the run. Statuses follow mutmut's exit codes (1/3 killed, 0 survived, 33/5 no tests,
24/36/152/255/-24 timeout).
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

_STATUS = {1: "killed", 3: "killed", 0: "survived", 33: "no tests", 5: "no tests", None: "not run",
           24: "timeout", -24: "timeout", 36: "timeout", 152: "timeout", 255: "timeout"}
COLUMNS = ("killed", "survived", "timeout", "no tests", "not run", "other")


def results(sample: set[str], mutants_dir: Path = Path("mutants")) -> dict[str, str]:
    """``{mutant name: status}`` for the sampled mutants."""
    status = {}
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if name in sample:
                status[name] = _STATUS.get(code, "other")
    return status


def main(sample_file: str) -> None:
    status = results(set(Path(sample_file).read_text().split()))
    table = collections.defaultdict(collections.Counter)
    for name, state in status.items():
        table[name.split(".x")[0]][state] += 1
    print("module".ljust(30), "total", *COLUMNS)
    for module, counts in sorted(table.items()):
        print(module.ljust(30), sum(counts.values()), *(counts[c] for c in COLUMNS))
    print("SURVIVED")
    print("\n".join(sorted(n for n, s in status.items() if s in ("survived", "no tests", "timeout"))))


if __name__ == "__main__":
    main(sys.argv[1])
