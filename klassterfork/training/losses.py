"""Per-example losses. The train loop averages over the GLOBAL batch itself,
so every loss here is built with `reduction=None`."""

import keras

from klassterfork.registry import Registry

LOSSES = Registry("loss")
for _name in (
    "SparseCategoricalCrossentropy",
    "CategoricalCrossentropy",
    "MeanSquaredError",
    "CosineSimilarity",
):
    LOSSES.add(_name, getattr(keras.losses, _name))
