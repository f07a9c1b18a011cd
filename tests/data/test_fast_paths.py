"""The flip fast path of the pipeline equals the plain reverse it replaces."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from klassterfork.data.reading import clips
from klassterfork.data import pipeline  # noqa: E402


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_flip_left_right_mirrors_every_frame(channels):
    clip = np.random.default_rng(channels).integers(
        0, 256, size=(4, 5, 7, channels), dtype=np.uint8)
    np.testing.assert_array_equal(pipeline.flip_left_right(clip).numpy(),
                                  clip[:, :, ::-1, :])


def test_flow_flip_negates_x_component():
    clip = np.random.default_rng(0).integers(0, 256, size=(2, 3, 4, 2), dtype=np.uint8)
    flipped = clips.flip_clip(tf.constant(clip), "flow").numpy()
    np.testing.assert_array_equal(flipped[..., 0], 255 - clip[:, :, ::-1, 0])
    np.testing.assert_array_equal(flipped[..., 1], clip[:, :, ::-1, 1])

