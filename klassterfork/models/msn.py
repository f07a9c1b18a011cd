"""MSN: the MotionSqueeze module (Kwon et al., ECCV 2020), without
deformable / custom-kernel sampling.

MotionSqueeze estimates motion between the features of adjacent segments and
feeds it back into the backbone. In `TSN(temporal="msn")` it sits after
stage 2 (torchvision `layer2`, C = 512, 28x28 at 224 input) of a TSM
ResNet-50 (the shifts of `temporal="tsm"` stay in every block), as MSNet
places it:

1. reduce: 1x1 conv C -> 64 (no bias) -> BN -> ReLU; L2-normalise each
   pixel's vector (eps 1e-6).
2. correlation (`local_correlation`): for segment t and each displacement
   (dy, dx) in a (2r+1)^2 window, r = 7 (15x15 = 225), the cosine
   corr[t, y, x, (dy+r)(2r+1) + dx+r] = <f_t(y, x), f_{t+1}(y+dy, x+dx)>,
   0 where (y+dy, x+dx) falls outside the map.
3. displacement (`MotionSqueeze`): kernel soft-argmax. A Gaussian (sigma 5
   displacement cells) centred on each pixel's argmax multiplies the
   correlation, a softmax with temperature 1/beta (beta = 50) turns it into
   weights, and (u, v) = sum weights * (dx, dy) / r, in [-1, 1]; the
   confidence is the maximum correlation. (u, v, confidence) of the pair
   (t, t+1) is the motion of segment t; the last segment repeats the
   previous one's (S - 1 pairs for S segments).
4. feed back: four depthwise-separable blocks (3x3 depthwise -> BN -> ReLU ->
   1x1 -> BN -> ReLU), 3 -> 16 -> 32 -> 64 -> C channels, added to the
   stage-2 output.

Deviation from the reference (precisely): MSNet computes step 2 with the
CUDA `spatial_correlation_sampler` op; here it is the same sum of products
written with `keras.ops` (zero-padded shifted slices), so it runs on every
backend and loads in safe mode, at O((2r+1)^2) slices of cost. No
deformable convolution and no bilinear sampling of features at the
estimated displacement are used: the motion reaches the backbone only as
the refined (u, v, confidence) map added in step 4, never by resampling
features at fractional offsets. sigma, beta, r and the 64 reduced
channels are this module's constants (`PATCH_RADIUS`, `REDUCED`, `SIGMA`,
`BETA`); they were not checked against a released MSNet checkpoint, and no
MSNet checkpoint imports.
"""

import keras
from keras import layers, ops

from klassterfork.models.layers import BN_EPSILON, BN_MOMENTUM

PATCH_RADIUS = 7
REDUCED = 64
SIGMA = 5.0
BETA = 50.0
REFINE_WIDTHS = (16, 32, 64)


def local_correlation(f1, f2, radius):
    """Cosine-style correlation of f1 with f2 over a displacement window.

    Args:
        f1, f2: (N, H, W, C) tensors (normalise them first for cosines).
        radius: int. r; displacements -r..r in y and x.

    Returns:
        (N, H, W, (2r+1)^2) tensor: out[..., (dy+r)(2r+1) + (dx+r)] =
        sum_c f1[n, y, x, c] f2[n, y+dy, x+dx, c], 0 outside the map.
    """
    h, w = ops.shape(f1)[1], ops.shape(f1)[2]
    padded = ops.pad(f2, [(0, 0), (radius, radius), (radius, radius), (0, 0)])
    out = []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            window = ops.slice(padded, (0, dy + radius, dx + radius, 0),
                               (ops.shape(f1)[0], h, w, ops.shape(f1)[3]))
            out.append(ops.sum(f1 * window, axis=-1))
    return ops.stack(out, axis=-1)


@keras.saving.register_keras_serializable(package="klassterfork")
class MotionSqueeze(keras.layers.Layer):
    """Steps 2-3 of the module docstring: (B * S, H, W, C) L2-normalised
    features -> (B * S, H, W, 3) (u, v, confidence) per segment.

    Args:
        num_segments: int. Segments per video (S >= 2).
        radius: int. Displacement window radius r. Defaults to 7.
        sigma: float. Gaussian kernel width in displacement cells.
            Defaults to 5.0.
        beta: float. Softmax inverse temperature. Defaults to 50.0.
    """

    def __init__(self, num_segments, radius=PATCH_RADIUS, sigma=SIGMA, beta=BETA,
                 **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_segments, int) or num_segments < 2:
            raise ValueError("`num_segments` must be an int >= 2 (motion needs two "
                             f"segments). Received: num_segments={num_segments!r}")
        self.num_segments, self.radius = num_segments, radius
        self.sigma, self.beta = sigma, beta

    def call(self, x):
        s, r = self.num_segments, self.radius
        shape = ops.shape(x)
        v = ops.reshape(x, (-1, s) + tuple(shape[1:]))
        pre = ops.reshape(v[:, :-1], (-1,) + tuple(shape[1:]))
        post = ops.reshape(v[:, 1:], (-1,) + tuple(shape[1:]))
        corr = local_correlation(pre, post, r)  # (B (S-1), H, W, K)
        side = 2 * r + 1
        offsets = ops.cast(ops.arange(side), corr.dtype) - r
        dy = ops.reshape(ops.repeat(offsets, side), (1, 1, 1, -1))
        dx = ops.reshape(ops.tile(offsets, side), (1, 1, 1, -1))
        best = ops.argmax(corr, axis=-1)[..., None]
        by = ops.cast(best // side, corr.dtype) - r
        bx = ops.cast(best % side, corr.dtype) - r
        kernel = ops.exp(-((dy - by) ** 2 + (dx - bx) ** 2) / (2 * self.sigma**2))
        weights = ops.softmax(self.beta * corr * kernel, axis=-1)
        u = ops.sum(weights * dx, axis=-1) / r
        vv = ops.sum(weights * dy, axis=-1) / r
        conf = ops.max(corr, axis=-1)
        flow = ops.stack([u, vv, conf], axis=-1)  # (B (S-1), H, W, 3)
        flow = ops.reshape(flow, (-1, s - 1) + tuple(ops.shape(flow)[1:]))
        flow = ops.concatenate([flow, flow[:, -1:]], axis=1)
        return ops.reshape(flow, (-1,) + tuple(ops.shape(flow)[2:]))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (3,)

    def get_config(self):
        return {**super().get_config(), "num_segments": self.num_segments,
                "radius": self.radius, "sigma": self.sigma, "beta": self.beta}


@keras.saving.register_keras_serializable(package="klassterfork")
class L2Normalize(keras.layers.Layer):
    """x / sqrt(sum_c x^2 + 1e-6) over the last axis (MSNet's eps)."""

    def call(self, x):
        return x / ops.sqrt(ops.sum(x * x, axis=-1, keepdims=True) + 1e-6)


def _bn(x, name):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                     name=name)(x)


def ms_module(x, *, num_segments, name):
    """MotionSqueeze (module docstring): (B * S, H, W, C) -> same, x + motion."""
    y = layers.Conv2D(REDUCED, 1, use_bias=False, name=f"{name}_reduce")(x)
    y = layers.ReLU(name=f"{name}_reduce_relu")(_bn(y, f"{name}_reduce_bn"))
    y = L2Normalize(name=f"{name}_l2")(y)
    flow = MotionSqueeze(num_segments, name=f"{name}_squeeze")(y)
    for i, width in enumerate(REFINE_WIDTHS + (x.shape[-1],), 1):
        flow = layers.DepthwiseConv2D(3, padding="same", use_bias=False,
                                      name=f"{name}_refine{i}_dw")(flow)
        flow = layers.ReLU(name=f"{name}_refine{i}_dw_relu")(
            _bn(flow, f"{name}_refine{i}_dw_bn"))
        flow = layers.Conv2D(width, 1, use_bias=False,
                             name=f"{name}_refine{i}_pw")(flow)
        flow = layers.ReLU(name=f"{name}_refine{i}_pw_relu")(
            _bn(flow, f"{name}_refine{i}_pw_bn"))
    return layers.Add(name=f"{name}_out")([x, flow])
