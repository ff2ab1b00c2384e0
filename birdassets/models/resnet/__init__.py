"""The ResNet18 call detector family: the Flax NNX network (:mod:`.network`), its checkpoints (:mod:`.family`) and
the restored model at run time (:mod:`.runtime`)."""
