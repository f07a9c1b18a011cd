"""Optimizers by their Keras names."""

import keras

from klassterfork.registry import Registry

OPTIMIZERS = Registry("optimizer")
for _name in ("Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adamax", "Nadam", "Lion", "Lamb"):
    OPTIMIZERS.add(_name, getattr(keras.optimizers, _name))
