"""Code identity for lineage: which birdassets code produced a score."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from birdassets import __version__

_PACKAGE = Path(__file__).resolve().parent


@cache
def source_fingerprint() -> str:
    """sha256 over the package's Python sources (path + bytes), so an edited checkout is distinguishable."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def code_version() -> str:
    """``"<package version>+<12 hex of the source fingerprint>"``, e.g. ``"0.1.0+3fa2c1d09b7e"``."""
    return f"{__version__}+{source_fingerprint()[:12]}"
