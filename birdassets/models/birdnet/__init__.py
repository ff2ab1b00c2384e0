"""The BirdNET V2.4 encoder family: the TFLite model (:mod:`.encoder`), its family entry (:mod:`.family`) and
embedding whole recordings to ``.npz`` (:mod:`.recordings`).

``from birdassets.models.birdnet import BirdNetEncoder, ...`` gives the model's names.
"""

from birdassets.models.birdnet.encoder import (
    BIRDNET_INPUT,
    BIRDNET_INSTALL,
    BIRDNET_WINDOWS,
    DEFAULT_BATCH_SIZE,
    EMBEDDING_TENSOR,
    LABELS_FILE,
    MODEL_FILE,
    BirdNetEncoder,
    BirdNetError,
    BirdNetFiles,
    locate_birdnet,
    model_with_embedding_output,
    read_labels,
)

__all__ = [
    "BIRDNET_INPUT",
    "BIRDNET_INSTALL",
    "BIRDNET_WINDOWS",
    "DEFAULT_BATCH_SIZE",
    "EMBEDDING_TENSOR",
    "LABELS_FILE",
    "MODEL_FILE",
    "BirdNetEncoder",
    "BirdNetError",
    "BirdNetFiles",
    "locate_birdnet",
    "model_with_embedding_output",
    "read_labels",
]
