"""`layers.conv3d` routes around oneDNN's broken bfloat16 filter gradient
(issue 16).

TensorFlow 2.21's oneDNN `Conv3DBackpropFilterV2` in bfloat16 with `SAME`
padding returns garbage (1e37 or NaN) when the kernel overhangs both ends of
the input, e.g. T = 2 under a 3x1x1 temporal conv, on CPUs with avx512_bf16;
`conv3d` pads explicitly there. The reference is numpy: the zero-padded
correlation and its kernel gradient, computed in float64 from the same
bfloat16-rounded inputs. On a CPU without native bfloat16 these tests pass
with or without the route; on one with it (the project's VM) they fail
without it.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from klassterfork.models.layers import conv3d, kernel_overhangs


def test_kernel_overhangs_by_hand():
    assert kernel_overhangs((2, 8, 8), (3, 1, 1))
    assert kernel_overhangs((4, 2, 8), (1, 3, 3))
    assert kernel_overhangs((None, 8, 8), (3, 1, 1))  # unknown T: pad to be safe
    assert not kernel_overhangs((3, 8, 8), (3, 1, 1))
    assert not kernel_overhangs((1, None, None), (1, 1, 1))  # 1x1x1 never pads
    assert not kernel_overhangs((16, 56, 56), (3, 3, 3))


def one_conv(shape, name="c"):
    inputs = keras.Input(shape)
    return keras.Model(inputs, conv3d(inputs, 5, (3, 1, 1), padding=(1, 0, 0), name=name))


def test_conv3d_pads_explicitly_only_where_the_kernel_overhangs():
    short, long = one_conv((2, 4, 4, 6)), one_conv((4, 4, 4, 6))
    assert [l.name for l in short.layers[1:]] == ["c_pad", "c"]
    assert short.get_layer("c").padding == "valid"
    assert [l.name for l in long.layers[1:]] == ["c"]
    assert long.get_layer("c").padding == "same"
    assert short.output.shape == (None, 2, 4, 4, 5)  # same function, same shapes


def reference(x, kernel, dy):
    """numpy float64: output and kernel gradient of the zero-padded 3x1x1 conv."""
    x, kernel, dy = (np.asarray(a, np.float64) for a in (x, kernel, dy))
    padded = np.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
    taps = [padded[:, k:k + x.shape[1]] for k in range(3)]  # (B, T, H, W, C) each
    out = sum(np.einsum("bthwc,cf->bthwf", taps[k], kernel[k, 0, 0]) for k in range(3))
    grad = np.stack([np.einsum("bthwc,bthwf->cf", taps[k], dy) for k in range(3)])
    return out, grad[:, None, None]


@pytest.mark.parametrize("frames", [2, 4])
def test_bfloat16_kernel_gradient_matches_numpy(frames):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = one_conv((frames, 4, 4, 6))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, frames, 4, 4, 6)).astype(np.float32)
    dy = rng.normal(size=(3, frames, 4, 4, 5)).astype(np.float32)
    kernel = model.get_layer("c").kernel

    @tf.function
    def forward_backward(x, dy):
        with tf.GradientTape() as tape:
            out = model(x)
            loss = tf.reduce_sum(tf.cast(out, tf.float32) * dy)
        return out, tape.gradient(loss, kernel)

    out, grad = forward_backward(x, dy)
    assert out.dtype == tf.bfloat16
    # The inputs the bf16 kernels see: x, dy and the kernel rounded to bfloat16.
    def rounded(a):
        return tf.cast(tf.cast(a, tf.bfloat16), tf.float32).numpy()
    want_out, want_grad = reference(rounded(x), rounded(kernel.value), rounded(dy))
    got = grad.numpy()
    assert np.isfinite(got).all()
    # 5 % of the largest value: oneDNN accumulates in float32 (<= 0.5 % off
    # here), Eigen's bfloat16 kernels (TF_ENABLE_ONEDNN_OPTS=0) round the
    # sums too (2.4 %); the broken kernel is 60 % to 1e37 off, or NaN.
    np.testing.assert_allclose(got, want_grad, rtol=0, atol=5e-2 * np.abs(want_grad).max())
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), want_out, rtol=0,
                               atol=5e-2 * np.abs(want_out).max())
