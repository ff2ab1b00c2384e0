"""Names of the supervised Keras models: their families and the checkpoint key each trained model goes by."""

from __future__ import annotations

MODEL_FAMILIES = ("cnn", "rnn", "vit")
"""The supervised model families (``birdassets birdclef train --model``)."""

SERIALIZABLE_PACKAGE = "birdassets"
"""Package under which the supervised models' custom layers are registered with Keras (``load_model`` needs no
``custom_objects`` once their modules are imported: :func:`birdassets.models.keras.family.register_layers`)."""

MODEL_RECORD = "model.json"
"""The record of a trained model's folder (``models/<task>/<model>/``), published with it, atomically."""


def model_key(model: str, task: str) -> str:
    """The checkpoint key of a supervised model: ``"birdclef-<model>.<task>"``, e.g. ``"birdclef-rnn.demo-clear"``.

    It names the model's score rows in DuckDB (``checkpoint`` column) and its penultimate layer as an encoder
    the frozen-encoder benchmark can score on any task.
    """
    return f"birdclef-{model}.{task}"


def parse_model_key(key: str) -> tuple[str, str] | None:
    """``(model, task)`` of a :func:`model_key`, or None when ``key`` is not one."""
    prefix, _, rest = key.partition("-")
    model, dot, task = rest.partition(".")
    if prefix != "birdclef" or not dot or model not in MODEL_FAMILIES or not task:
        return None
    return model, task


ENCODER_SUFFIX = ":embedding"
"""What turns a model key into the key of its penultimate layer as a frozen encoder."""


def encoder_key(model: str, task: str) -> str:
    """The checkpoint key of a supervised model's penultimate layer as a frozen encoder:
    ``"birdclef-<model>.<task>:embedding"``. A key of its own, so the model's own score rows (probe
    ``supervised``) and the probes fitted on its embeddings never replace each other in DuckDB."""
    return model_key(model, task) + ENCODER_SUFFIX


def parse_encoder_key(key: str) -> tuple[str, str] | None:
    """``(model, task)`` of an :func:`encoder_key`, or None when ``key`` is not one."""
    stem, suffix = key[: -len(ENCODER_SUFFIX)], key[-len(ENCODER_SUFFIX):]
    return parse_model_key(stem) if suffix == ENCODER_SUFFIX else None
