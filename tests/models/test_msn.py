"""MSN (MotionSqueeze): correlation and displacement by hand, shapes, count."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from klassterfork import models  # noqa: E402
from klassterfork.models import msn  # noqa: E402


def np_(x):
    return keras.ops.convert_to_numpy(x)


def test_local_correlation_by_hand():
    # 1 pair, 3x3 map, 2 channels, radius 1 (3x3 = 9 displacements).
    f1 = np.zeros((1, 3, 3, 2), "float32")
    f2 = np.zeros((1, 3, 3, 2), "float32")
    f1[0, 1, 1] = [1, 2]
    f2[0, 2, 1] = [3, 1]   # one row down: displacement (dy, dx) = (1, 0)
    f2[0, 1, 0] = [0, 5]   # one column left: (0, -1)
    f2[0, 0, 0] = [1, 1]   # (-1, -1)
    corr = np_(msn.local_correlation(f1, f2, 1))
    assert corr.shape == (1, 3, 3, 9)
    # k = (dy + 1) * 3 + (dx + 1); <(1, 2), f2[1 + dy, 1 + dx]>
    want = np.zeros(9)
    want[(1 + 1) * 3 + 1] = 1 * 3 + 2 * 1   # = 5
    want[1 * 3 + 0] = 2 * 5                 # = 10
    want[0 * 3 + 0] = 1 + 2                 # = 3
    np.testing.assert_allclose(corr[0, 1, 1], want)
    # Corner (0, 0): displacements leaving the map read zeros, not wraps.
    f1c = np.zeros_like(f1)
    f1c[0, 0, 0] = [1, 1]
    corner = np_(msn.local_correlation(f1c, f2, 1))[0, 0, 0]
    assert corner[1 * 3 + 1] == 2.0                  # f2[0, 0] itself
    assert corner[1 * 3 + 2] == 0.0                  # f2[0, 1] is zero
    assert corner[2 * 3 + 1] == 5.0                  # f2[1, 0] = (0, 5)
    np.testing.assert_array_equal(corner[:3], 0.0)   # dy = -1: outside
    np.testing.assert_array_equal(corner[[3, 6]], 0.0)  # dx = -1: outside


def test_motion_squeeze_recovers_a_translation():
    # Segment 1 is segment 0 moved by (dy, dx) = (+1, -2) on a random texture.
    rng = np.random.default_rng(0)
    base = rng.normal(size=(12, 12, 8)).astype("float32")
    nxt = np.roll(base, (1, -2), axis=(0, 1))
    x = np.stack([base, nxt, nxt])  # 1 video, 3 segments (last pair: no motion)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    layer = msn.MotionSqueeze(3, radius=3, beta=1000.0)
    out = np_(layer(x))
    assert out.shape == (3, 12, 12, 3)
    inner = (slice(3, 9), slice(3, 9))  # away from the borders
    np.testing.assert_allclose(out[0][inner][..., 0], -2 / 3, atol=1e-3)  # u = dx / r
    np.testing.assert_allclose(out[0][inner][..., 1], 1 / 3, atol=1e-3)   # v = dy / r
    np.testing.assert_allclose(out[0][inner][..., 2], 1.0, atol=1e-5)     # cosine 1
    np.testing.assert_allclose(out[1][inner][..., :2], 0.0, atol=1e-3)
    np.testing.assert_array_equal(out[2], out[1])  # the last segment repeats


def test_msn_tsn_shapes_count_and_round_trip(tmp_path):
    model = models.build("TSN", num_classes=4, temporal="msn", num_segments=3,
                         depth=26, input_shape=(3, 32, 32, 3))
    tsm = models.build("TSN", num_classes=4, temporal="tsm", num_segments=3,
                       depth=26, input_shape=(3, 32, 32, 3))
    def count(m):
        return sum(int(np.prod(w.shape)) for w in m.trainable_weights)

    refine, c_in = 0, 3
    for c_out in (16, 32, 64, 512):
        refine += 9 * c_in + 2 * c_in + c_in * c_out + 2 * c_out
        c_in = c_out
    assert count(model) == count(tsm) + 512 * 64 + 2 * 64 + refine
    assert model.get_layer("msn_squeeze").output.shape == (None, 4, 4, 3)
    assert model.get_layer("stage1_block1_shift") is not None  # TSM shifts kept
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 4)
    model.save(tmp_path / "msn.keras")
    loaded = keras.saving.load_model(tmp_path / "msn.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), y, atol=1e-5)
    with pytest.raises(ValueError, match="num_segments"):
        msn.MotionSqueeze(1)
