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
    )
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
