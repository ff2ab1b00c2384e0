"""The Keras family: supervised BirdCLEF-style models (``birdassets birdclef train``) as frozen encoders.

A trained model's penultimate layer (``"embedding"``) embeds mel windows, so the frozen-encoder benchmark scores
it like any checkpoint (:mod:`birdassets.models.keras.family`).
"""
