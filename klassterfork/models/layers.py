"""Layers shared by several model families.

Only `keras.ops` inside layers, so the models run on every Keras backend and
load from `.keras` files in safe mode (no `Lambda`).
"""

import keras
from keras import layers, ops

BN_EPSILON = 1e-5  # torch BatchNorm default
BN_MOMENTUM = 0.9  # Keras: weight of the old statistic (torch momentum 0.1)


@keras.saving.register_keras_serializable(package="klassterfork")
class FoldClips(keras.layers.Layer):
    """Folds the clip axis into the batch axis.

    (B, clips, T, H, W, C) -> (B * clips, T, H, W, C); H and W may be None.
    """

    def call(self, x):
        shape = ops.shape(x)
        return ops.reshape(x, (-1,) + tuple(shape[2:]))

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        clips = input_shape[1]
        folded = None if batch is None or clips is None else batch * clips
        return (folded,) + tuple(input_shape[2:])


@keras.saving.register_keras_serializable(package="klassterfork")
class MeanOverClips(keras.layers.Layer):
    """Averages per-clip vectors back to one per video.

    (B * num_clips, D) -> (B, D), the inverse of `FoldClips` followed by a
    mean over the clips.

    Args:
        num_clips: int. Number of clips folded into the batch.
    """

    def __init__(self, num_clips, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_clips, int) or num_clips < 1:
            raise ValueError(
                f"`num_clips` must be a positive int. Received: num_clips={num_clips!r}"
            )
        self.num_clips = num_clips

    def call(self, x):
        x = ops.reshape(x, (-1, self.num_clips, ops.shape(x)[-1]))
        return ops.mean(x, axis=1)

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        batch = None if batch is None else batch // self.num_clips
        return (batch, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "num_clips": self.num_clips}


def video_input(input_shape, name="video"):
    """Makes the model input; folds clips when `input_shape` has rank 5.

    Args:
        input_shape: tuple. `(T, H, W, C)` for one clip per example or
            `(clips, T, H, W, C)` for several (H, W may be None).
        name: str. Input name. Defaults to "video".

    Returns:
        `(inputs, x, num_clips)`: the `keras.Input`, the tensor to feed the
        backbone, (B * clips, T, H, W, C), and the clip count (None for
        single-clip input).

    Raises:
        ValueError: if `input_shape` is neither rank 4 nor rank 5.
    """
    input_shape = tuple(input_shape)
    if len(input_shape) not in (4, 5):
        raise ValueError(
            "`input_shape` must be (T, H, W, C) or (clips, T, H, W, C). "
            f"Received: input_shape={input_shape}"
        )
    inputs = keras.Input(shape=input_shape, name=name)
    if len(input_shape) == 4:
        return inputs, inputs, None
    if not isinstance(input_shape[0], int):
        raise ValueError(
            "The clip count of a multi-clip `input_shape` must be an int. "
            f"Received: input_shape={input_shape}"
        )
    return inputs, FoldClips(name="fold_clips")(inputs), input_shape[0]


def _triple(v):
    return (v, v, v) if isinstance(v, int) else tuple(v)


def conv3d(x, filters, kernel_size, *, strides=1, padding=0, use_bias=False, name):
    """Conv3D (bias-free by default) with torch's symmetric zero padding.

    A stride-1 conv whose padding is `kernel // 2` convolves `same`; any
    other padding is an explicit `ZeroPadding3D` + `valid` conv (Keras
    `same` pads asymmetrically when strided). So is a `same` conv whose
    kernel is larger than its input along an axis (e.g. the 3x1x1 temporal
    conv of R(2+1)D-18's last stage at 16 frames, T = 2), or whose extent
    is unknown there: TensorFlow 2.21's oneDNN `Conv3DBackpropFilterV2` in
    bfloat16 with `SAME` padding returns garbage (1e37 or NaN, differing per
    call) for the kernel taps when the kernel overhangs both ends of the
    input (T=2, k=3 wrong on every call; T=3 or 4, k=5 too), so
    `mixed_bfloat16` training turned to NaN on CPUs with native bfloat16
    (avx512_bf16; issue 16). Padding explicitly and convolving `valid` is
    the same function (same outputs, same weights) and never reaches that
    kernel path; float32 and `TF_ENABLE_ONEDNN_OPTS=0` are unaffected by
    the bug. That variable is no fallback: on the project's 2-core VM it
    made a train step of a small R(2+1)D (8 x 16 x 56^2) 70x slower in
    bfloat16 (33 s vs 0.46 s) and 18x in float32, while the explicit pads
    (one layer there) cost float32 nothing measurable above that shared
    machine's noise (BENCHMARKS.md, `bench/mixed_precision.py`).
    `tests/models/test_layers_bf16.py` checks the op and the route.

    Args:
        x: (B, T, H, W, C) tensor.
        filters: int. Output channels.
        kernel_size, strides, padding: int or 3-tuple (T, H, W), as in
            `torch.nn.Conv3d`.
        use_bias: bool. Defaults to False.
        name: str. Layer name; the padding layer is `{name}_pad`.

    Returns:
        (B, T', H', W', filters) tensor, T' = (T + 2 pad - k) // stride + 1.
    """
    kernel_size, strides, padding = map(_triple, (kernel_size, strides, padding))
    same = all(s == 1 for s in strides) and all(
        p == k // 2 and k % 2 for p, k in zip(padding, kernel_size)
    ) and not kernel_overhangs(x.shape[1:4], kernel_size)
    if not same and any(padding):
        x = layers.ZeroPadding3D(padding, name=f"{name}_pad")(x)
    return layers.Conv3D(
        filters,
        kernel_size,
        strides=strides,
        padding="same" if same else "valid",
        use_bias=use_bias,
        kernel_initializer=he_fan_out(),
        name=name,
    )(x)


def kernel_overhangs(extents, kernel_size):
    """Whether a kernel is larger than the input along some axis.

    Args:
        extents: tuple of int or None. The input's (T, H, W); None when
            unknown at build time.
        kernel_size: 3-tuple of int.

    Returns:
        bool. True when an axis with kernel > 1 has an unknown extent or
        one smaller than the kernel (see `conv3d`: oneDNN's bfloat16
        filter gradient is wrong there with `same` padding).
    """
    return any(
        k > 1 and (n is None or n < k) for n, k in zip(extents, kernel_size)
    )


def he_fan_out():
    """torchvision's conv init: kaiming_normal_(mode="fan_out", relu)."""
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def batch_norm(x, name):
    return layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name
    )(x)


def choose(value, accepted, arg):
    """Returns `value` if it is in `accepted`, else raises the Keras-worded error."""
    if value not in accepted:
        raise ValueError(
            f"`{arg}` must be one of {list(accepted)}. Received: {arg}={value!r}"
        )
    return value
