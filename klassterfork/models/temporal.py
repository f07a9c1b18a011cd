"""Temporal layers for 2D backbones that see a video as (B * S, H, W, C).

The segments of a video sit next to each other in the batch axis (TSN
layout); these layers reshape to (B, S, H, W, C) internally with `keras.ops`
only, so they run on every backend and load in safe mode.
"""

import keras
from keras import ops


def _split(x, num_segments):
    """(B * S, H, W, C) -> (B, S, H, W, C); H, W may be dynamic."""
    shape = ops.shape(x)
    return ops.reshape(x, (-1, num_segments) + tuple(shape[1:]))


def _merge(x):
    shape = ops.shape(x)
    return ops.reshape(x, (-1,) + tuple(shape[2:]))


def _neighbours(x):
    """x (B, S, ...) -> (x[t - 1], x[t + 1]) with zeros outside the clip."""
    zeros = ops.zeros_like(x[:, :1])
    previous = ops.concatenate([zeros, x[:, :-1]], axis=1)
    following = ops.concatenate([x[:, 1:], zeros], axis=1)
    return previous, following


class _SegmentLayer(keras.layers.Layer):
    def __init__(self, num_segments, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_segments, int) or num_segments < 1:
            raise ValueError(
                "`num_segments` must be a positive int. "
                f"Received: num_segments={num_segments!r}"
            )
        self.num_segments = num_segments

    def compute_output_shape(self, input_shape):
        # Explicit, so symbolic tracing never reshapes a placeholder batch
        # that `num_segments` does not divide (the torch backend's does not).
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_segments": self.num_segments}


@keras.saving.register_keras_serializable(package="klassterfork")
class FoldSegments(_SegmentLayer):
    """(B, S * F, H, W, C) -> (B * S, H, W, F * C): frames of a segment stacked
    on channels, frame-major (torch's `x.view(-1, F * C, H, W)` order)."""

    def call(self, x):
        shape = ops.shape(x)
        frames = x.shape[1] // self.num_segments
        x = ops.reshape(x, (-1, self.num_segments, frames) + tuple(shape[2:]))
        x = ops.transpose(x, (0, 1, 3, 4, 2, 5))
        return ops.reshape(x, (-1, shape[2], shape[3], frames * x.shape[-1]))

    def compute_output_shape(self, input_shape):
        b, t, h, w, c = input_shape
        batch = None if b is None else b * self.num_segments
        return (batch, h, w, (t // self.num_segments) * c)


@keras.saving.register_keras_serializable(package="klassterfork")
class TemporalShift(_SegmentLayer):
    """TSM (Lin et al., ICCV 2019): shifts 1/`shift_div` of the channels one
    segment back and 1/`shift_div` one segment forward, zero-filled.

    out[t, :fold] = x[t + 1, :fold]; out[t, fold:2 fold] = x[t - 1, ...];
    the other channels are unchanged. (B * S, H, W, C) -> same.

    Args:
        num_segments: int. Segments per video (S).
        shift_div: int. `fold = C // shift_div`. Defaults to 8.
    """

    def __init__(self, num_segments, shift_div=8, **kwargs):
        super().__init__(num_segments, **kwargs)
        self.shift_div = shift_div

    def call(self, x):
        fold = x.shape[-1] // self.shift_div
        v = _split(x, self.num_segments)
        # Shift only the 2 * fold moving channels (not whole neighbour
        # tensors): one copy of the activations instead of four.
        back, forward = v[..., :fold], v[..., fold : 2 * fold]
        zeros = ops.zeros_like(back[:, :1])
        following = ops.concatenate([back[:, 1:], zeros], axis=1)  # x[t + 1]
        previous = ops.concatenate([zeros, forward[:, :-1]], axis=1)  # x[t - 1]
        v = ops.concatenate([following, previous, v[..., 2 * fold :]], axis=-1)
        return _merge(v)

    def get_config(self):
        return {**super().get_config(), "shift_div": self.shift_div}


@keras.saving.register_keras_serializable(package="klassterfork")
class LearnableShift(_SegmentLayer):
    """TDN's channel shift: a depthwise temporal conv (kernel 3, pad 1) whose
    kernel starts as TSM's shift and is trained.

    out[t, c] = k[0, c] x[t - 1, c] + k[1, c] x[t, c] + k[2, c] x[t + 1, c]
    (torch `Conv1d(groups=C)` cross-correlation); initially k[2, :fold] = 1
    (shift left), k[0, fold:2 fold] = 1 (shift right), k[1, 2 fold:] = 1.
    (B * S, H, W, C) -> same.

    Args:
        num_segments: int. Segments per video (S).
        shift_div: int. `fold = C // shift_div`. Defaults to 8.
    """

    def __init__(self, num_segments, shift_div=8, **kwargs):
        super().__init__(num_segments, **kwargs)
        self.shift_div = shift_div

    def build(self, input_shape):
        channels = input_shape[-1]
        fold = channels // self.shift_div

        def shift_init(shape, dtype=None):
            taps = ops.concatenate(
                [ops.full((fold,), 2), ops.zeros((fold,)), ops.ones((channels - 2 * fold,))]
            )
            kernel = ops.transpose(ops.one_hot(ops.cast(taps, "int32"), 3))
            return ops.cast(ops.reshape(kernel, shape), dtype or "float32")

        self.kernel = self.add_weight(
            shape=(3, channels), initializer=shift_init, name="kernel"
        )

    def call(self, x):
        v = _split(x, self.num_segments)
        previous, following = _neighbours(v)
        k = ops.cast(self.kernel, v.dtype)
        v = previous * k[0] + v * k[1] + following * k[2]
        return _merge(v)

    def get_config(self):
        return {**super().get_config(), "shift_div": self.shift_div}


@keras.saving.register_keras_serializable(package="klassterfork")
class TemporalDifference(_SegmentLayer):
    """TDN's long-term differences between a feature and its neighbour's
    transformed feature, zero where the neighbour is missing.

    inputs [f, g], both (B * S, H, W, C):
    "forward": out[t] = g[t + 1] - f[t] (out[S - 1] = 0);
    "backward": out[t] = g[t - 1] - f[t] (out[0] = 0).

    Args:
        num_segments: int. Segments per video (S).
        direction: str. "forward" or "backward".
    """

    def __init__(self, num_segments, direction, **kwargs):
        super().__init__(num_segments, **kwargs)
        if direction not in ("forward", "backward"):
            raise ValueError(
                "`direction` must be 'forward' or 'backward'. "
                f"Received: direction={direction!r}"
            )
        self.direction = direction

    def call(self, inputs):
        f, g = (_split(v, self.num_segments) for v in inputs)
        zeros = ops.zeros_like(f[:, :1])
        if self.direction == "forward":
            diff = ops.concatenate([g[:, 1:] - f[:, :-1], zeros], axis=1)
        else:
            diff = ops.concatenate([zeros, g[:, :-1] - f[:, 1:]], axis=1)
        return _merge(diff)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "direction": self.direction}


@keras.saving.register_keras_serializable(package="klassterfork")
class ResizeNearestLike(keras.layers.Layer):
    """Nearest-neighbour resize of x to ref's H, W with torch's
    `F.interpolate(mode="nearest")` rule: src = floor(dst * in / out).

    (TF's nearest uses half-pixel centres, which differs for non-integer
    ratios, e.g. 3 -> 7.) inputs [x (B, h, w, C), ref (B, H, W, *)] ->
    (B, H, W, C).
    """

    def call(self, inputs):
        x, ref = inputs
        for axis in (1, 2):
            size_in = ops.cast(ops.shape(x)[axis], "float32")
            size_out = ops.shape(ref)[axis]
            scale = size_in / ops.cast(size_out, "float32")
            src = ops.floor(ops.cast(ops.arange(size_out), "float32") * scale)
            x = ops.take(x, ops.cast(src, "int32"), axis=axis)
        return x

    def compute_output_shape(self, input_shape):
        (b, _, _, c), ref = input_shape
        return (b, ref[1], ref[2], c)


@keras.saving.register_keras_serializable(package="klassterfork")
class SegmentFrames(keras.layers.Layer):
    """Views of the F frames stacked on channels by `FoldSegments`.

    (B * S, H, W, F * C) -> "centre": the middle frame, (B * S, H, W, C);
    "difference": consecutive differences [x2 - x1, ..., xF - xF-1],
    (B * S, H, W, (F - 1) * C), TDN's short-term input.

    Args:
        mode: str. "centre" or "difference".
        channels: int. Channels per frame (C). Defaults to 3.
    """

    def __init__(self, mode, channels=3, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("centre", "difference"):
            raise ValueError(
                f"`mode` must be 'centre' or 'difference'. Received: mode={mode!r}"
            )
        self.mode, self.channels = mode, channels

    def call(self, x):
        c = self.channels
        if self.mode == "difference":
            return x[..., c:] - x[..., :-c]
        middle = (x.shape[-1] // c) // 2
        return x[..., middle * c : (middle + 1) * c]

    def compute_output_shape(self, input_shape):
        c = self.channels
        out = input_shape[-1] - c if self.mode == "difference" else c
        return tuple(input_shape[:-1]) + (out,)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "channels": self.channels}
