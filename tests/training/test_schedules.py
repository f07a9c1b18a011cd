import bisect
import math

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.training.schedules import (
    SCHEDULES,
    EpochPiecewiseConstant,
    LinearScaled,
    MultiStepDecay,
    ReduceOnPlateau,
    WarmupCosineDecay,
)

HP = dict(boundaries=[40, 61], values=[1e-3, 1e-4, 1e-5], steps_per_epoch=10)


def reference_lr(step, boundaries, values, steps_per_epoch):
    epoch = step // steps_per_epoch
    index = 0
    while index < len(boundaries) and epoch >= boundaries[index]:
        index += 1
    return values[index]


@pytest.mark.parametrize("step", [0, 9, 399, 400, 401, 609, 610, 611, 10_000])
def test_epoch_piecewise_matches_reference(step):
    got = float(EpochPiecewiseConstant(**HP)(step))
    assert got == pytest.approx(reference_lr(step, **HP), rel=1e-6)


def test_epoch_piecewise_by_hand_and_config_round_trip():
    sched = EpochPiecewiseConstant(**HP)
    # The recipe: 1e-3 for (1-based) epochs 1-40, 1e-4 for 41-61, 1e-5 after.
    assert float(sched(39 * 10 + 9)) == pytest.approx(1e-3)
    assert float(sched(40 * 10)) == pytest.approx(1e-4)
    assert float(sched(60 * 10 + 9)) == pytest.approx(1e-4)
    assert float(sched(61 * 10)) == pytest.approx(1e-5)
    assert EpochPiecewiseConstant.from_config(sched.get_config()).get_config() == HP


def test_epoch_piecewise_rejects_bad_arguments():
    with pytest.raises(ValueError, match="one more entry"):
        EpochPiecewiseConstant(boundaries=[1, 2], values=[1.0], steps_per_epoch=1)
    with pytest.raises(ValueError, match="strictly increasing"):
        EpochPiecewiseConstant(
            boundaries=[3, 2], values=[1.0, 2.0, 3.0], steps_per_epoch=1
        )


# ---- MultiStepDecay ----------------------------------------------------------
MS = dict(
    initial_learning_rate=0.01,
    milestones=[30, 45, 55],
    gamma=0.1,
    unit="epoch",
    steps_per_epoch=7,
)


def reference_multistep(
    step, initial_learning_rate, milestones, gamma, unit, steps_per_epoch
):
    """PyTorch MultiStepLR's closed form: base * gamma ** bisect_right(m, e)."""
    pos = step // steps_per_epoch if unit == "epoch" else step
    return initial_learning_rate * gamma ** bisect.bisect_right(milestones, pos)


@pytest.mark.parametrize("unit", ["epoch", "step"])
@pytest.mark.parametrize("step", [0, 29, 30, 209, 210, 314, 315, 384, 385, 1000])
def test_multistep_matches_reference(step, unit):
    hp = {**MS, "unit": unit}
    got = float(MultiStepDecay(**hp)(step))
    assert got == pytest.approx(reference_multistep(step, **hp), rel=1e-6)


def test_multistep_by_hand_and_config_round_trip():
    sched = MultiStepDecay(**MS)  # TSN SSv2: .01, /10 at epochs 30, 45, 55
    assert float(sched(30 * 7 - 1)) == pytest.approx(0.01)
    assert float(sched(30 * 7)) == pytest.approx(0.001)
    assert float(sched(45 * 7)) == pytest.approx(1e-4)
    assert float(sched(55 * 7)) == pytest.approx(1e-5)
    by_step = MultiStepDecay(0.1, [100, 200], gamma=0.5, unit="step", steps_per_epoch=7)
    assert [float(by_step(s)) for s in (99, 100, 199, 200)] == pytest.approx(
        [0.1, 0.05, 0.05, 0.025]
    )
    assert MultiStepDecay.from_config(sched.get_config()).get_config() == MS


def test_multistep_rejects_bad_arguments():
    with pytest.raises(ValueError, match="strictly increasing"):
        MultiStepDecay(0.1, [5, 5])
    with pytest.raises(ValueError, match="unit"):
        MultiStepDecay(0.1, [5], unit="epochs")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        MultiStepDecay(0.1, [5], steps_per_epoch=0)


# ---- WarmupCosineDecay -------------------------------------------------------
WC = dict(
    peak_lr=1e-3, warmup_epochs=5, total_epochs=40, end_lr=1e-6, steps_per_epoch=10
)


def reference_videomae_cosine(
    peak_lr, warmup_epochs, total_epochs, end_lr, steps_per_epoch
):
    """VideoMAE's utils.cosine_scheduler (numpy), but with the warmup of
    `peak * s / W` (VideoMAE's linspace reaches the peak at s = W - 1)."""
    warmup_iters = warmup_epochs * steps_per_epoch
    warmup = peak_lr * np.arange(warmup_iters) / warmup_iters
    iters = np.arange(total_epochs * steps_per_epoch - warmup_iters)
    cosine = end_lr + 0.5 * (peak_lr - end_lr) * (
        1 + np.cos(np.pi * iters / len(iters))
    )
    return np.concatenate([warmup, cosine])


def test_warmup_cosine_matches_reference_every_step():
    sched = WarmupCosineDecay(**WC)
    reference = reference_videomae_cosine(**WC)
    got = np.array([float(sched(s)) for s in range(len(reference))])
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-10)
    assert float(sched(10_000)) == pytest.approx(1e-6)  # the floor after the end


def test_warmup_cosine_by_hand_and_config_round_trip():
    sched = WarmupCosineDecay(**WC)
    assert float(sched(0)) == 0.0
    assert float(sched(25)) == pytest.approx(0.5e-3)  # half the warmup
    assert float(sched(50)) == pytest.approx(1e-3)  # the peak
    assert float(sched(225)) == pytest.approx((1e-3 + 1e-6) / 2)  # decay midpoint
    assert float(sched(400)) == pytest.approx(1e-6)
    assert WarmupCosineDecay.from_config(sched.get_config()).get_config() == WC
    with pytest.raises(ValueError, match="warmup_epochs"):
        WarmupCosineDecay(1.0, warmup_epochs=5, total_epochs=5)


# ---- LinearScaled ------------------------------------------------------------
def test_linear_scaled_float_and_inner_schedule_from_config_block():
    assert float(LinearScaled(0.1, global_batch=64)(123)) == pytest.approx(0.025)
    sched = LinearScaled(
        {
            "WarmupCosineDecay": {
                "peak_lr": 1e-3,
                "warmup_epochs": 5,
                "total_epochs": 40,
                "end_lr": 1e-6,
            }
        },
        global_batch=512,
        steps_per_epoch=10,
    )
    inner = WarmupCosineDecay(**WC)
    for step in (0, 25, 50, 225, 400):
        assert float(sched(step)) == pytest.approx(2.0 * float(inner(step)))
    assert inner.steps_per_epoch == sched.schedule.steps_per_epoch == 10
    again = LinearScaled.from_config(sched.get_config())
    assert float(again(225)) == pytest.approx(float(sched(225)))
    assert again.get_config() == sched.get_config()
    with pytest.raises(ValueError, match="WarmupCosine"):
        LinearScaled({"WarmupCosine": {}}, global_batch=8)


def test_registered_names_and_injected_arguments():
    for name in (
        "MultiStepDecay",
        "WarmupCosineDecay",
        "LinearScaled",
        "ReduceOnPlateau",
    ):
        assert name in SCHEDULES
    assert "global_batch" in SCHEDULES.accepted_args("LinearScaled")
    assert "steps_per_epoch" in SCHEDULES.accepted_args("WarmupCosineDecay")


# ---- ReduceOnPlateau ---------------------------------------------------------
class ReferencePlateau:
    """keras.callbacks.ReduceLROnPlateau's rule (no cooldown), plus the stop."""

    def __init__(self, lr, factor, patience, min_delta, last_lr):
        self.lr, self.factor, self.patience = lr, factor, patience
        self.min_delta, self.last_lr = min_delta, last_lr
        self.best, self.wait = math.inf, 0

    def update(self, value):
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            return "keep"
        self.wait += 1
        if self.wait >= self.patience:
            self.lr *= self.factor
            self.wait = 0
            return "stop" if self.lr < self.last_lr else "reduce"
        return "keep"


def test_plateau_by_hand():
    plateau = ReduceOnPlateau(
        0.008, factor=0.5, patience=2, min_delta=0.01, last_lr=0.003
    )
    actions = [plateau.update(v) for v in (2.0, 1.5, 1.495, 1.6, 1.4, 1.45, 1.41, 1.5)]
    # 1.495 is within min_delta of 1.5: no improvement; 2 misses -> /2.
    # .004 after the first cut; the second (.002) is below last_lr: stop.
    assert actions == ["keep", "keep", "keep", "reduce", "keep", "keep", "stop", "keep"]
    assert plateau.current_lr == pytest.approx(0.002)
    assert float(plateau(10**6)) == pytest.approx(0.002)


def test_plateau_matches_reference_on_a_noisy_curve():
    rng = np.random.default_rng(0)
    losses = 2.0 * np.exp(-np.arange(60) / 15) + rng.normal(0, 0.05, 60)
    plateau = ReduceOnPlateau(0.008, min_delta=1e-3, last_lr=1e-4)
    reference = ReferencePlateau(0.008, 0.5, 2, 1e-3, 1e-4)
    for value in losses:
        assert plateau.update(value) == reference.update(value)
        assert plateau.current_lr == pytest.approx(reference.lr)
    assert reference.lr < 0.008  # the curve did plateau


def test_plateau_state_checkpoints_and_config_round_trip(tmp_path):
    plateau = ReduceOnPlateau(0.1, patience=1, mode="max", last_lr=0.01)
    assert plateau.update(0.5) == "keep"
    assert plateau.update(0.4) == "reduce"
    path = tf.train.Checkpoint(plateau=plateau).write(str(tmp_path / "ckpt"))
    fresh = ReduceOnPlateau(0.1, patience=1, mode="max", last_lr=0.01)
    tf.train.Checkpoint(plateau=fresh).read(path).assert_consumed()
    assert fresh.current_lr == pytest.approx(0.05)
    assert float(fresh.best.numpy()) == pytest.approx(0.5)
    assert (
        ReduceOnPlateau.from_config(plateau.get_config()).get_config()
        == plateau.get_config()
    )
    with pytest.raises(ValueError, match="factor"):
        ReduceOnPlateau(0.1, factor=1.0)
