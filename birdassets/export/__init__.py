"""Exported model folders: a trained model someone else can run with the folder alone.

* :mod:`~birdassets.export.weights`: ``model.safetensors`` (nested arrays <-> flat safetensors);
* :mod:`~birdassets.export.bundle`: the folder's files, written whole (:func:`write_bundle`) and read back
  (:func:`read_bundle`);
* :mod:`~birdassets.export.model_card`: its ``README.md``;
* :mod:`~birdassets.export.tflite`: the forward pass as TFLite, and a runtime for it;
* :mod:`~birdassets.export.from_checkpoint`: a ResNet18 detector checkpoint -> its folder.
"""
