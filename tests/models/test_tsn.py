"""TSN / TSM / TDN: counts against the references, temporal layers by hand."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from klassterfork import models  # noqa: E402
from klassterfork.models import temporal  # noqa: E402
from klassterfork.training.optimizers import SGD, AdamW  # noqa: E402


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def np_out(layer, *args):
    return keras.ops.convert_to_numpy(layer(*args))


def test_backbone_and_head_counts():
    # torchvision resnet50 without fc: 23,508,032; head 2048 * 174 + 174.
    features = models.build("TSN", num_classes=None)
    assert trainable_count(features) == 23_508_032
    for name in ("none", "tsm"):
        model = models.build("TSN", num_classes=174, temporal=name)
        assert trainable_count(model) == 23_508_032 + 2048 * 174 + 174
    assert model.get_layer("stage2_block1_conv2").strides == (2, 2)  # on the 3x3


def test_tdn_count_matches_reference_with_its_unused_conv():
    model = models.build("TSN", num_classes=174, temporal="tdn")
    # TDN's tdn_net.py registers `conv1_temp` (Conv2d 3->64 k7 + bias: 9,472)
    # that forward() never uses; kept, so the count is the reference's.
    assert trainable_count(model) == 24_420_046
    unused = model.get_layer("conv1_temp")
    assert [tuple(w.shape) for w in unused.trainable_weights] == [(7, 7, 3, 64), (64,)]
    assert model.input_shape == (None, 40, 224, 224, 3)
    assert model.get_layer("stage2_block1_mse_conv1").filters == 8  # 128 / 16


def test_tdn_unused_conv_gets_no_gradient_and_stays_put():
    """conv1_temp is the only weight without a gradient (None, not zeros);
    Keras optimizers drop it, so neither SGD nor AdamW's decoupled decay
    (which shrinks every variable it updates) changes it; the rest trains."""
    model = models.build("TSN", num_classes=3, temporal="tdn", num_segments=2,
                         depth=26, input_shape=(10, 64, 64, 3))
    x = np.random.default_rng(0).normal(size=(1, 10, 64, 64, 3)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True) ** 2)
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    assert sorted(v.path for v, g in zip(variables, grads) if g is None) == [
        "conv1_temp/bias", "conv1_temp/kernel"]
    unused = [w.numpy() for w in model.get_layer("conv1_temp").weights]
    logits = model.get_layer("logits").kernel.numpy()
    for optimizer in (SGD(learning_rate=0.1, momentum=0.9, weight_decay=0.1),
                      AdamW(learning_rate=0.1, weight_decay=0.1, global_clipnorm=1.0)):
        with pytest.warns(UserWarning, match="conv1_temp/kernel"):
            optimizer.apply_gradients(zip(grads, variables))
    for before, w in zip(unused, model.get_layer("conv1_temp").weights):
        np.testing.assert_array_equal(w.numpy(), before)
    assert np.abs(model.get_layer("logits").kernel.numpy() - logits).max() > 1e-3


def test_temporal_shift_by_hand():
    # 1 video, 4 segments, 8 channels: x[t, c] = 10 t + c; fold = 1.
    x = (10 * np.arange(4)[:, None] + np.arange(8)[None]).astype("float32")
    x = x.reshape(4, 1, 1, 8)
    out = np_out(temporal.TemporalShift(4), x).reshape(4, 8)
    np.testing.assert_array_equal(out[:, 0], [10, 20, 30, 0])  # from t + 1
    np.testing.assert_array_equal(out[:, 1], [0, 1, 11, 21])  # from t - 1
    np.testing.assert_array_equal(out[:, 2:], x.reshape(4, 8)[:, 2:])
    learnable = np_out(temporal.LearnableShift(4), x).reshape(4, 8)
    np.testing.assert_array_equal(learnable, out)  # starts as the TSM shift


def test_temporal_difference_and_resize_by_hand():
    f = np.arange(3, dtype="float32").reshape(3, 1, 1, 1)  # f[t] = t
    g = 10 * f  # g[t] = 10 t
    fwd = np_out(temporal.TemporalDifference(3, "forward"), [f, g]).ravel()
    bwd = np_out(temporal.TemporalDifference(3, "backward"), [f, g]).ravel()
    np.testing.assert_array_equal(fwd, [10 - 0, 20 - 1, 0])  # g[t+1] - f[t]
    np.testing.assert_array_equal(bwd, [0, 0 - 1, 10 - 2])  # g[t-1] - f[t]
    x = np.arange(3, dtype="float32").reshape(1, 3, 1, 1)
    ref = np.zeros((1, 7, 7, 1), "float32")
    up = np_out(temporal.ResizeNearestLike(), [x, ref])
    # torch F.interpolate(size=7, mode="nearest"): floor(i * 3 / 7).
    np.testing.assert_array_equal(up[0, :, 0, 0], [0, 0, 0, 1, 1, 2, 2])


def test_fold_segments_and_frame_views():
    # 2 segments x 5 frames; pixel value = frame index in the video, channel c.
    v = np.arange(10, dtype="float32")[None, :, None, None, None] + np.zeros(
        (1, 10, 1, 1, 3), "float32") + np.array([0, 100, 200], "float32")
    folded = np_out(temporal.FoldSegments(2), v)
    assert folded.shape == (2, 1, 1, 15)
    np.testing.assert_array_equal(folded[1, 0, 0, :6], [5, 105, 205, 6, 106, 206])
    centre = np_out(temporal.SegmentFrames("centre"), folded)
    np.testing.assert_array_equal(centre[:, 0, 0], [[2, 102, 202], [7, 107, 207]])
    diff = np_out(temporal.SegmentFrames("difference"), folded)
    np.testing.assert_array_equal(diff, np.ones((2, 1, 1, 12)))


# "none" is the "tsm" graph without the shift layers; TDN's mSE average-pools
# layer4's 2x2 map, so it needs 64x64 inputs.
@pytest.mark.parametrize(
    "name", ["tsm", pytest.param("tdn", marks=pytest.mark.slow)]  # tdn: ~25 s
)
def test_forward_shapes_and_round_trip(name, tmp_path):
    frames, size = (5, 64) if name == "tdn" else (1, 32)
    shape = (2, 2 * frames, size, size, 3)
    model = models.build("TSN", num_classes=4, temporal=name, num_segments=2,
                         input_shape=shape)
    x = np.random.default_rng(0).normal(size=(1,) + shape).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (1, 4)
    model.save(tmp_path / "tsn.keras")
    loaded = keras.saving.load_model(tmp_path / "tsn.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), y, atol=1e-6)


def test_segment_count_is_checked():
    with pytest.raises(ValueError, match="num_segments"):
        models.build("TSN", num_classes=4, temporal="tdn", input_shape=(8, 64, 64, 3))
    with pytest.raises(ValueError, match="temporal"):
        models.build("TSN", num_classes=4, temporal="tsn")
