"""The fast paths of the pipeline equal the plain TF ops they replace."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from klassterfork.data import pipeline, transforms  # noqa: E402


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_flip_left_right_mirrors_every_frame(channels):
    clip = np.random.default_rng(channels).integers(
        0, 256, size=(4, 5, 7, channels), dtype=np.uint8)
    np.testing.assert_array_equal(pipeline.flip_left_right(clip).numpy(),
                                  clip[:, :, ::-1, :])


def test_flow_flip_negates_x_component():
    clip = np.random.default_rng(0).integers(0, 256, size=(2, 3, 4, 2), dtype=np.uint8)
    flipped = pipeline._flip(tf.constant(clip), "flow").numpy()
    np.testing.assert_array_equal(flipped[..., 0], 255 - clip[:, :, ::-1, 0])
    np.testing.assert_array_equal(flipped[..., 1], clip[:, :, ::-1, 1])


def test_per_frame_standardization_equals_tf_image():
    rng = np.random.default_rng(1)
    clips = rng.integers(0, 256, size=(2, 3, 16, 16, 3)).astype(np.uint8)
    clips[0, 1] = 200  # a constant frame: the 1/sqrt(N) floor, no NaN
    clips[1, 2] = np.clip(clips[1, 2], 250, 255)  # tiny variance near 255
    expected = tf.image.per_image_standardization(tf.cast(clips, tf.float32)).numpy()
    got = transforms.standardize(clips, "per_frame").numpy()
    np.testing.assert_allclose(got, expected, atol=2e-5)
    np.testing.assert_array_equal(got[0, 1], 0.0)
