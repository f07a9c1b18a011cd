"""Model3D1 / Model3D1_224: the SSv2 baseline's count, shapes and time pool."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from klassterfork import models  # noqa: E402


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("name", ["Model3D1", "Model3D1_224"])
def test_trainable_parameters_match_reference(name):
    # 11 conv3d with bias (23,289,600) + BN gamma/beta (5,568) + Dense 512->174
    # (89,262): 23,384,430, the count of the reference model3D_1.
    convs = [(3, 32, 75), (32, 64, 27), (64, 128, 27), (128, 128, 27),
             (128, 128, 27), (128, 256, 27), (256, 256, 27), (256, 256, 27),
             (256, 512, 27), (512, 512, 27), (512, 512, 27)]
    by_hand = sum(i * o * k + o + 2 * o for i, o, k in convs) + 512 * 174 + 174
    assert by_hand == 23_384_430
    model = models.build(name, num_classes=174)
    assert trainable_count(model) == 23_384_430
    assert len([la for la in model.layers if isinstance(la, keras.layers.Conv3D)]) == 11


def test_feature_map_shapes_at_reference_sizes():
    # 84 -> 42 -> 21 -> 11 -> 6 -> 3, T untouched.
    model = models.build("Model3D1", num_classes=174)
    assert model.get_layer("block5_conv2_relu").output.shape == (None, 72, 3, 3, 512)
    assert model.output_shape == (None, 174)
    # 224 -> 112 -> 56 -> 28 -> 14 -> 7, T 60 -> 30 by the time pool.
    model = models.build("Model3D1_224", num_classes=174)
    assert model.get_layer("block5_conv2_relu").output.shape == (None, 30, 7, 7, 512)


def test_time_pool_counts_padding_like_torch():
    model = models.build("Model3D1_224", num_classes=3, input_shape=(4, 16, 16, 3))
    pad, pool = model.get_layer("time_pool_pad"), model.get_layer("time_pool")
    x = np.arange(1, 5, dtype="float32").reshape(1, 4, 1, 1, 1)
    y = keras.ops.convert_to_numpy(pool(pad(x)))
    # torch AvgPool3d((3,1,1), (2,1,1), (1,0,0)), count_include_pad=True:
    # t0 = (0 + 1 + 2) / 3, t1 = (2 + 3 + 4) / 3.
    np.testing.assert_allclose(y.ravel(), [1.0, 3.0])


def test_forward_multi_clip_and_round_trip(tmp_path):
    model = models.build("Model3D1", num_classes=5, input_shape=(2, 2, 16, 16, 3))
    x = np.random.default_rng(0).normal(size=(2, 2, 2, 16, 16, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 5)
    single = models.build("Model3D1", num_classes=5, input_shape=(2, 16, 16, 3))
    single.set_weights(model.get_weights())
    per_clip = np.stack([single.predict(x[:, c], verbose=0) for c in range(2)], 1)
    np.testing.assert_allclose(y, per_clip.mean(1), rtol=1e-4, atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), y, atol=1e-6)
