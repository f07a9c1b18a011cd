import pytest

from klassterfork.training.schedules import EpochPiecewiseConstant

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
        EpochPiecewiseConstant(boundaries=[3, 2], values=[1.0, 2.0, 3.0], steps_per_epoch=1)
