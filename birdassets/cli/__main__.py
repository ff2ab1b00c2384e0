"""``python -m birdassets.cli ...`` runs the ``birdassets`` command."""

import sys

from birdassets.cli import main

sys.exit(main())
