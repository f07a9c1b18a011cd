"""Learning-rate schedules that step per iteration but are stated in epochs."""

import keras
from keras import ops

from klassterfork.registry import Registry

SCHEDULES = Registry("learning-rate schedule")
for _name in (
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "InverseTimeDecay",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
):
    SCHEDULES.add(_name, getattr(keras.optimizers.schedules, _name))


@SCHEDULES.register("EpochPiecewiseConstant")
@keras.saving.register_keras_serializable(package="klassterfork")
class EpochPiecewiseConstant(keras.optimizers.schedules.LearningRateSchedule):
    """Piecewise-constant learning rate with boundaries in epochs.

    lr(step) = values[i] where i = number of boundaries b with
    floor(step / steps_per_epoch) >= b. With boundaries [40, 61] and values
    [1e-3, 1e-4, 1e-5], 0-based epochs 0-39 use 1e-3, 40-60 use 1e-4, 61+ 1e-5
    (the zero-shot recipe's "1e-3 for epochs 1-40, 1e-4 for 41-61, ...").

    Args:
        boundaries: list of int. Epochs (0-based) at which the rate changes,
            strictly increasing.
        values: list of float. One more than `boundaries`.
        steps_per_epoch: int. Filled in by the trainer from the dataset size.
    """

    def __init__(self, boundaries, values, steps_per_epoch):
        boundaries, values = list(boundaries), [float(v) for v in values]
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                "`values` must have one more entry than `boundaries`. "
                f"Received: boundaries={boundaries}, values={values}"
            )
        if any(b1 >= b2 for b1, b2 in zip(boundaries, boundaries[1:])):
            raise ValueError(
                f"`boundaries` must be strictly increasing. Received: {boundaries}"
            )
        if int(steps_per_epoch) < 1:
            raise ValueError(
                f"`steps_per_epoch` must be >= 1. Received: {steps_per_epoch}"
            )
        self.boundaries, self.values = boundaries, values
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        epoch = ops.floor(ops.cast(step, "float32") / self.steps_per_epoch)
        lr = ops.convert_to_tensor(self.values[0], "float32")
        for boundary, value in zip(self.boundaries, self.values[1:]):
            lr = ops.where(epoch >= boundary, value, lr)
        return lr

    def get_config(self):
        return {
            "boundaries": self.boundaries,
            "values": self.values,
            "steps_per_epoch": self.steps_per_epoch,
        }
