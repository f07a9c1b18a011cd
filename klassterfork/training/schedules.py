"""Learning-rate schedules that step per iteration but are stated in epochs."""

import math

import keras
import tensorflow as tf
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


def _check_steps_per_epoch(steps_per_epoch):
    if int(steps_per_epoch) < 1:
        raise ValueError(
            "`steps_per_epoch` must be >= 1. "
            f"Received: steps_per_epoch={steps_per_epoch}"
        )
    return int(steps_per_epoch)


UNITS = ("epoch", "step")


@SCHEDULES.register("MultiStepDecay")
@keras.saving.register_keras_serializable(package="klassterfork")
class MultiStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Step decay by `gamma` at each milestone (PyTorch `MultiStepLR`).

    lr(step) = initial_learning_rate * gamma ** n, n = number of milestones
    m with pos >= m, where pos = floor(step / steps_per_epoch) for
    `unit="epoch"` (TSN/TDN: milestones [30, 45, 55]) and pos = step for
    `unit="step"` (two-stream recipes decay by iteration).

    Args:
        initial_learning_rate: float. The rate before the first milestone.
        milestones: list of int. Strictly increasing, in `unit`s.
        gamma: float. Factor per milestone. Defaults to 0.1.
        unit: str. "epoch" or "step". Defaults to "epoch".
        steps_per_epoch: int. Filled in by the trainer; unused for "step".
    """

    def __init__(
        self,
        initial_learning_rate,
        milestones,
        gamma=0.1,
        unit="epoch",
        steps_per_epoch=1,
    ):
        milestones = [int(m) for m in milestones]
        if any(m1 >= m2 for m1, m2 in zip(milestones, milestones[1:])):
            raise ValueError(
                "`milestones` must be strictly increasing. "
                f"Received: milestones={milestones}"
            )
        if unit not in UNITS:
            raise ValueError(
                f"`unit` must be one of {list(UNITS)}. Received: unit={unit!r}"
            )
        self.initial_learning_rate = float(initial_learning_rate)
        self.milestones, self.gamma, self.unit = milestones, float(gamma), unit
        self.steps_per_epoch = _check_steps_per_epoch(steps_per_epoch)

    def __call__(self, step):
        pos = ops.cast(step, "float32")
        if self.unit == "epoch":
            pos = ops.floor(pos / self.steps_per_epoch)
        count = ops.zeros((), "float32")
        for milestone in self.milestones:
            count = count + ops.cast(pos >= milestone, "float32")
        return self.initial_learning_rate * ops.power(self.gamma, count)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "milestones": self.milestones,
            "gamma": self.gamma,
            "unit": self.unit,
            "steps_per_epoch": self.steps_per_epoch,
        }


@SCHEDULES.register("WarmupCosineDecay")
@keras.saving.register_keras_serializable(package="klassterfork")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup 0 -> `peak_lr`, then cosine decay to `end_lr`, per step.

    With W = warmup_epochs * steps_per_epoch and T = total_epochs *
    steps_per_epoch (rounded to steps):
    lr(s) = peak_lr * s / W                                       if s < W
    lr(s) = end_lr + (peak_lr - end_lr) * (1 + cos(pi * p)) / 2   otherwise,
    p = min((s - W) / (T - W), 1). VideoMAE fine-tuning: 5 warmup epochs,
    `end_lr` 1e-6 (its `cosine_scheduler`; it reaches the peak one step
    earlier, at W - 1, a difference of peak_lr / W for one step). For a
    schedule in steps, pass `steps_per_epoch: 1` and steps as "epochs".

    Args:
        peak_lr: float. The rate at the end of the warmup.
        warmup_epochs: float. Warmup length, >= 0.
        total_epochs: float. Length of warmup + decay, > warmup_epochs.
        end_lr: float. The floor reached at `total_epochs`. Defaults to 0.
        steps_per_epoch: int. Filled in by the trainer.
    """

    def __init__(
        self, peak_lr, warmup_epochs, total_epochs, end_lr=0.0, steps_per_epoch=1
    ):
        self.steps_per_epoch = _check_steps_per_epoch(steps_per_epoch)
        warmup = round(float(warmup_epochs) * self.steps_per_epoch)
        total = round(float(total_epochs) * self.steps_per_epoch)
        if not 0 <= warmup < total:
            raise ValueError(
                "`warmup_epochs` and `total_epochs` must satisfy 0 <= warmup_epochs "
                f"< total_epochs. Received: warmup_epochs={warmup_epochs}, "
                f"total_epochs={total_epochs} ({warmup} and {total} steps)"
            )
        self.peak_lr, self.end_lr = float(peak_lr), float(end_lr)
        self.warmup_epochs, self.total_epochs = warmup_epochs, total_epochs
        self.warmup_steps, self.total_steps = warmup, total

    def __call__(self, step):
        step = ops.cast(step, "float32")
        p = ops.clip(
            (step - self.warmup_steps) / (self.total_steps - self.warmup_steps),
            0.0,
            1.0,
        )
        cosine = self.end_lr + 0.5 * (self.peak_lr - self.end_lr) * (
            1.0 + ops.cos(math.pi * p)
        )
        warmup = self.peak_lr * step / max(self.warmup_steps, 1)
        return ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return {
            "peak_lr": self.peak_lr,
            "warmup_epochs": self.warmup_epochs,
            "total_epochs": self.total_epochs,
            "end_lr": self.end_lr,
            "steps_per_epoch": self.steps_per_epoch,
        }


def _is_keras_serialized(value):
    return isinstance(value, dict) and "class_name" in value and "config" in value


@SCHEDULES.register("LinearScaled")
@keras.saving.register_keras_serializable(package="klassterfork")
class LinearScaled(keras.optimizers.schedules.LearningRateSchedule):
    """The linear scaling rule: lr = schedule(step) * global_batch / base_batch.

    Goyal et al. 2017; VideoMAE and TSN state `lr` for a batch of 256 and
    scale it by the real global batch.

    Args:
        schedule: float, a `LearningRateSchedule`, or a config block
            `{Name: {kwargs}}` of a registered schedule (built here, with
            `steps_per_epoch` filled in when it accepts it).
        global_batch: int. Examples per step over all replicas. Filled in
            by the trainer.
        base_batch: int. The batch `schedule` is stated for. Defaults to 256.
        steps_per_epoch: int. Filled in by the trainer; passed to the inner
            schedule.
    """

    def __init__(self, schedule, global_batch, base_batch=256, steps_per_epoch=1):
        if int(global_batch) < 1 or int(base_batch) < 1:
            raise ValueError(
                "`global_batch` and `base_batch` must be >= 1. Received: "
                f"global_batch={global_batch}, base_batch={base_batch}"
            )
        self.global_batch, self.base_batch = int(global_batch), int(base_batch)
        self.steps_per_epoch = _check_steps_per_epoch(steps_per_epoch)
        if _is_keras_serialized(schedule):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        elif isinstance(schedule, dict):
            if len(schedule) != 1:
                raise ValueError(
                    "`schedule` must be a float or a one-key dict {Name: {kwargs}}. "
                    f"Received: schedule={schedule!r}"
                )
            ((name, kwargs),) = schedule.items()
            kwargs = dict(kwargs or {})
            if name in SCHEDULES and "steps_per_epoch" in SCHEDULES.accepted_args(name):
                kwargs.setdefault("steps_per_epoch", self.steps_per_epoch)
            try:
                schedule = SCHEDULES.build(name, **kwargs)
            except KeyError as err:
                raise ValueError(f"schedule: {err.args[0]}") from None
        elif not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = float(schedule)
        self.schedule = schedule

    @property
    def factor(self):
        return self.global_batch / self.base_batch

    def __call__(self, step):
        if isinstance(self.schedule, float):
            return ops.convert_to_tensor(self.schedule * self.factor, "float32")
        return ops.cast(self.schedule(step), "float32") * self.factor

    def get_config(self):
        schedule = self.schedule
        if not isinstance(schedule, float):
            schedule = keras.optimizers.schedules.serialize(schedule)
        return {
            "schedule": schedule,
            "global_batch": self.global_batch,
            "base_batch": self.base_batch,
            "steps_per_epoch": self.steps_per_epoch,
        }


MODES = ("min", "max")


@SCHEDULES.register("ReduceOnPlateau")
@keras.saving.register_keras_serializable(package="klassterfork")
class ReduceOnPlateau(keras.optimizers.schedules.LearningRateSchedule, tf.Module):
    """Learning rate `initial_learning_rate * scale`, `scale` cut on plateaus.

    Not a function of the step: the trainer calls `update(value)` once per
    evaluation with the monitored metric, and acts on the answer. The state
    (`scale`, `best`, `wait`) lives in `tf.Variable`s, and this object is a
    `tf.Module`, so it is saved with the optimizer that holds it (Keras
    optimizers track their `_learning_rate`) or with any `tf.train.Checkpoint`
    naming it. The optimizer reads `scale` every step, inside the graph.

    update(value): if value improves on `best` by more than `min_delta`,
    `best = value`, `wait = 0`, "keep". Otherwise `wait += 1`; when `wait`
    reaches `patience`, `scale *= factor`, `wait = 0`, and the answer is
    "stop" if the new rate is below `last_lr` (the SSv2 baseline ends there),
    else "reduce". Like `keras.callbacks.ReduceLROnPlateau` without cooldown.

    Args:
        initial_learning_rate: float. The rate before any reduction.
        factor: float. In (0, 1). Defaults to 0.5.
        patience: int. Evaluations without improvement before a cut,
            >= 1. Defaults to 2.
        min_delta: float. Smallest change that counts as improvement.
            Defaults to 1e-4.
        monitor: str. Name of the metric the trainer passes. Defaults to
            "val_loss".
        mode: str. "min" (losses) or "max" (accuracies). Defaults to "min".
        last_lr: float or None. Stop once the rate falls below it. Defaults
            to None (never stop).
    """

    def __init__(
        self,
        initial_learning_rate,
        factor=0.5,
        patience=2,
        min_delta=1e-4,
        monitor="val_loss",
        mode="min",
        last_lr=None,
    ):
        tf.Module.__init__(self, name="reduce_on_plateau")
        if not 0 < float(factor) < 1:
            raise ValueError(f"`factor` must be in (0, 1). Received: factor={factor}")
        if int(patience) < 1:
            raise ValueError(f"`patience` must be >= 1. Received: patience={patience}")
        if mode not in MODES:
            raise ValueError(
                f"`mode` must be one of {list(MODES)}. Received: mode={mode!r}"
            )
        self.initial_learning_rate = float(initial_learning_rate)
        self.factor, self.patience = float(factor), int(patience)
        self.min_delta, self.monitor, self.mode = abs(float(min_delta)), monitor, mode
        self.last_lr = None if last_lr is None else float(last_lr)
        worst = math.inf if mode == "min" else -math.inf
        self.scale = tf.Variable(1.0, dtype=tf.float64, trainable=False, name="scale")
        self.best = tf.Variable(worst, dtype=tf.float64, trainable=False, name="best")
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="wait")

    @property
    def current_lr(self):
        """The rate now, a Python float."""
        return self.initial_learning_rate * float(self.scale.numpy())

    def update(self, value):
        """Records one evaluation of the monitored metric.

        Args:
            value: float. The metric (e.g. the epoch's validation loss).

        Returns:
            str: "keep", "reduce" (the rate was multiplied by `factor`) or
            "stop" (it was, and is now below `last_lr`).
        """
        value, best = float(value), float(self.best.numpy())
        if self.mode == "min":
            improved = value < best - self.min_delta
        else:
            improved = value > best + self.min_delta
        if improved:  # NaN never improves
            self.best.assign(value)
            self.wait.assign(0)
            return "keep"
        self.wait.assign_add(1)
        if int(self.wait.numpy()) < self.patience:
            return "keep"
        self.wait.assign(0)
        self.scale.assign(self.scale * self.factor)
        if self.last_lr is not None and self.current_lr < self.last_lr:
            return "stop"
        return "reduce"

    def __call__(self, step):
        del step  # the rate changes only through `update`
        return ops.cast(
            self.initial_learning_rate * ops.convert_to_tensor(self.scale), "float32"
        )

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "factor": self.factor,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "monitor": self.monitor,
            "mode": self.mode,
            "last_lr": self.last_lr,
        }
