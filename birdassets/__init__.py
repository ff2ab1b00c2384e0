"""birdassets: raw bioacoustic audio to trustworthy, queryable benchmark scores.

The package has two layers:

* a Dagster-free core library (``audio``, ``frontends``, ``sources``, ``datasets``, ``folds``,
  ``models``, ``checkpoints``, ``embeddings``, ``probes``, ``metrics``, ``store``), and
* a thin Dagster layer (``birdassets.defs`` and ``birdassets.definitions``) whose assets call the core.
"""

__version__ = "0.1.0"
