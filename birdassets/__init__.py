"""birdassets: raw bioacoustic audio to trustworthy, queryable benchmark scores.

The package has two layers:

* a Dagster-free core: one step function per asset (``birdassets.steps``) over the library (``audio``,
  ``frontends``, ``sources``, ``datasets``, ``folds``, ``checkpoints``, ``models``, ``embeddings``, ``probes``,
  ``scoring``, ``metrics``, ``detection``, ``store``, ``train``), and
* a thin Dagster layer (``birdassets.defs`` and ``birdassets.definitions``) whose assets each call a step and
  turn its report into metadata.

The README's "How the code is laid out" walks through every package.
"""

import os

# Keras 3 runs on JAX in birdassets (the supervised models); set here, before anything can import Keras.
os.environ["KERAS_BACKEND"] = "jax"

__version__ = "0.1.0"
