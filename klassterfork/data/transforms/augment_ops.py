"""The clip ops of `augment.rand_augment`: timm's RandAugment ops, each
applied alike to every frame of a uint8 (T, H, W, C) clip.

Primitives (`auto_contrast`, `equalize`, ..., `affine`, `rotate`, ...)
reproduce the PIL functions timm calls, integer rounding included; `OPS` maps
timm's op names to `fn(clip, level, fill)` with timm's level -> parameter
formulas; `DEFAULT_OPS` / `INCREASING_OPS` are timm's two op lists. See
`augment.py` for the choices made where timm leaves one open.
"""

import math

import tensorflow as tf

FILL = 128  # timm's _FILL = (128, 128, 128)
LEVEL_DENOM = 10.0  # timm: magnitudes live in [0, 10]


def _check_clip(clip, name="clip"):
    clip = tf.convert_to_tensor(clip)
    if clip.dtype != tf.uint8 or clip.shape.rank != 4:
        raise ValueError(
            f"`{name}` must be uint8 (T, H, W, C). "
            f"Received: {name}.dtype={clip.dtype.name}, shape={clip.shape}"
        )
    return clip


def _to_uint8(x):
    """float -> uint8 by truncation toward zero after clipping, as PIL's casts."""
    return tf.cast(tf.clip_by_value(x, 0.0, 255.0), tf.uint8)


# --- Pixel-wise and histogram ops (PIL.ImageOps) -----------------------------


def _lut_index(clip):
    """uint8 (T, H, W, C) -> int32 (T, H, W, C): (t C + c) 256 + value, the
    position of each pixel in a flat per-frame, per-channel table of 256."""
    shape = tf.shape(clip)
    t = tf.range(shape[0])[:, None, None, None]
    c = tf.range(shape[3])[None, None, None, :]
    return (t * shape[3] + c) * 256 + tf.cast(clip, tf.int32)


def _histogram(index):
    """`_lut_index` (T, H, W, C) -> int32 (T, C, 256) per frame and channel."""
    shape = tf.shape(index)
    size = shape[0] * shape[3] * 256
    counts = tf.math.bincount(tf.reshape(index, [-1]), minlength=size, maxlength=size)
    return tf.reshape(counts, [shape[0], shape[3], 256])


def _apply_lut(index, lut):
    """`_lut_index` (T, H, W, C), int (T, C, 256) -> uint8 (T, H, W, C), as
    PIL's `Image.point`."""
    lut = tf.cast(tf.clip_by_value(tf.reshape(lut, [-1]), 0, 255), tf.uint8)
    return tf.gather(lut, index)


def auto_contrast(clip):
    """Stretches each frame's channels to [0, 255] (`ImageOps.autocontrast`).

    lut(v) = trunc(v * 255 / (hi - lo) - lo * 255 / (hi - lo)), clipped, with
    lo/hi the darkest/lightest values present; identity when hi <= lo. The lut is
    computed in float64 like PIL, so the integer truncation agrees.

    Args:
        clip: uint8 (T, H, W, C).

    Returns:
        uint8 (T, H, W, C).
    """
    index = _lut_index(clip)
    present = _histogram(index) > 0
    values = tf.range(256, dtype=tf.float64)
    lo = tf.reduce_min(tf.where(present, values, 256.0), axis=-1, keepdims=True)
    hi = tf.reduce_max(tf.where(present, values, -1.0), axis=-1, keepdims=True)
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    lut = tf.cast(values * scale + (-lo * scale), tf.int32)  # int() truncates
    lut = tf.where(hi > lo, lut, tf.range(256))
    return _apply_lut(index, lut)


def equalize(clip):
    """Equalizes each frame's channel histograms (`ImageOps.equalize`).

    step = (N - count of the last present value) // 255; lut(i) = (step // 2 +
    #pixels below i) // step; identity when step is 0 or one value is present.

    Args:
        clip: uint8 (T, H, W, C).

    Returns:
        uint8 (T, H, W, C).
    """
    index = _lut_index(clip)
    hist = _histogram(index)
    present = hist > 0
    last = 255 - tf.argmax(tf.reverse(tf.cast(present, tf.int32), [-1]), axis=-1)
    last_count = tf.gather(hist, last[..., None], batch_dims=2)
    step = (tf.reduce_sum(hist, -1, keepdims=True) - last_count) // 255
    below = tf.cumsum(hist, axis=-1, exclusive=True)
    lut = (step // 2 + below) // tf.maximum(step, 1)
    keep = tf.logical_or(
        step == 0, tf.reduce_sum(tf.cast(present, tf.int32), -1, keepdims=True) <= 1
    )
    return _apply_lut(index, tf.where(keep, tf.range(256), lut))


def invert(clip):
    """255 - v (`ImageOps.invert`). uint8 (T, H, W, C) -> same."""
    return 255 - clip


def posterize(clip, bits):
    """Keeps the `bits` high bits (`ImageOps.posterize`); bits >= 8 is identity.

    Args:
        clip: uint8 (T, H, W, C).
        bits: int scalar in [0, 8]. 0 gives a black clip.

    Returns:
        uint8 (T, H, W, C).
    """
    bits = tf.clip_by_value(tf.cast(bits, tf.int32), 0, 8)
    mask = tf.cast(256 - tf.bitwise.left_shift(1, 8 - bits), tf.uint8)
    return tf.bitwise.bitwise_and(clip, mask)


def _at_least(clip, threshold):
    """clip >= threshold for an int threshold in [0, 256], without leaving uint8."""
    threshold = tf.cast(threshold, tf.int32)
    low = tf.cast(tf.clip_by_value(threshold, 0, 255), tf.uint8)
    return tf.logical_and(clip >= low, threshold < 256)


def solarize(clip, threshold):
    """Inverts values >= `threshold` (`ImageOps.solarize`).

    Args:
        clip: uint8 (T, H, W, C).
        threshold: int scalar in [0, 256]; 256 leaves the clip unchanged.

    Returns:
        uint8 (T, H, W, C).
    """
    return tf.where(_at_least(clip, threshold), 255 - clip, clip)


def solarize_add(clip, addition, threshold=128):
    """Adds `addition` to values below `threshold`, saturating at 255 (timm).

    Args:
        clip: uint8 (T, H, W, C).
        addition: int scalar >= 0.
        threshold: int scalar. Defaults to 128.

    Returns:
        uint8 (T, H, W, C).
    """
    addition = tf.cast(tf.clip_by_value(tf.cast(addition, tf.int32), 0, 255), tf.uint8)
    added = clip + tf.minimum(addition, 255 - clip)  # saturates, no overflow
    return tf.where(_at_least(clip, threshold), clip, added)


# --- Enhancers (PIL.ImageEnhance): blend with a degenerate image -------------


def _blend(degenerate, clip, factor):
    """`Image.blend(degenerate, clip, factor)`: d + f (x - d) in float32,
    clipped and truncated like Pillow's C code."""
    d = tf.cast(degenerate, tf.float32)
    x = tf.cast(clip, tf.float32)
    return _to_uint8(d + tf.cast(factor, tf.float32) * (x - d))


def _luma(clip):
    """uint8 RGB (T, H, W, 3) -> int32 (T, H, W, 1): PIL's `convert("L")`,
    (19595 R + 38470 G + 7471 B + 2^15) >> 16."""
    v = tf.cast(clip, tf.int32)
    weights = tf.constant([19595, 38470, 7471], tf.int32)
    return tf.bitwise.right_shift(
        tf.reduce_sum(v * weights, -1, keepdims=True) + 32768, 16
    )


def color(clip, factor):
    """Saturation (`ImageEnhance.Color`): blend with the grey (L) frame.

    Args:
        clip: uint8 (T, H, W, 3).
        factor: float scalar. 0 gives grey, 1 the input.

    Returns:
        uint8 (T, H, W, 3).
    """
    return _blend(_luma(clip), clip, factor)


def contrast(clip, factor):
    """Contrast (`ImageEnhance.Contrast`): blend with the frame's mean grey,
    int(mean(L) + 0.5), one mean per frame.

    Args:
        clip: uint8 (T, H, W, 3).
        factor: float scalar. 0 gives a flat grey frame, 1 the input.

    Returns:
        uint8 (T, H, W, 3).
    """
    mean = tf.reduce_mean(tf.cast(_luma(clip), tf.float64), axis=[1, 2, 3])
    degenerate = tf.floor(mean + 0.5)[:, None, None, None]
    return _blend(degenerate, clip, factor)


def brightness(clip, factor):
    """Brightness (`ImageEnhance.Brightness`): blend with black.

    Args:
        clip: uint8 (T, H, W, C).
        factor: float scalar. 0 gives black, 1 the input.

    Returns:
        uint8 (T, H, W, C).
    """
    return _blend(tf.zeros([], tf.uint8), clip, factor)


def sharpness(clip, factor):
    """Sharpness (`ImageEnhance.Sharpness`): blend with PIL's SMOOTH filter.

    SMOOTH is the 3x3 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, rounded,
    and leaves the one-pixel border unfiltered (as PIL does).

    Args:
        clip: uint8 (T, H, W, C).
        factor: float scalar. 0 gives the smoothed clip, 1 the input, 2 sharper.

    Returns:
        uint8 (T, H, W, C).
    """
    channels = tf.shape(clip)[-1]
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]])
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    x = tf.cast(clip, tf.float32)
    sums = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID")  # exact ints
    # S / 13 is never a tie, so round-half-up is (S + 6) // 13 on integers.
    smooth = (tf.cast(sums, tf.int32) + 6) // 13
    smooth = tf.pad(smooth, [[0, 0], [1, 1], [1, 1], [0, 0]])
    shape = tf.shape(clip)
    inner = tf.pad(tf.ones([shape[1] - 2, shape[2] - 2], tf.bool), [[1, 1], [1, 1]])
    degenerate = tf.where(inner[None, :, :, None], smooth, tf.cast(clip, tf.int32))
    return _blend(degenerate, clip, factor)


# --- Geometry (PIL.Image.transform AFFINE) -----------------------------------


def affine(clip, matrix, *, fill=FILL, interpolation="bilinear"):
    """PIL's `Image.transform(size, AFFINE, matrix)` on every frame.

    `matrix` = (a, b, c, d, e, f) maps an output point to the input point it
    samples, in PIL's continuous coordinates (pixel i spans [i, i + 1)):
    (x, y) -> (a x + b y + c, d x + e y + f). One matrix for the whole clip.

    Args:
        clip: uint8 (T, H, W, C).
        matrix: float [6].
        fill: int or C ints. Value of samples outside the frame. Defaults to 128.
        interpolation: "bilinear" or "nearest". Defaults to "bilinear".

    Returns:
        uint8 (T, H, W, C).
    """
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(
            "`interpolation` must be one of ['bilinear', 'nearest']. "
            f"Received: interpolation={interpolation!r}"
        )
    a, b, c, d, e, f = tf.unstack(tf.cast(matrix, tf.float32))
    # TF samples pixel centres at integers, PIL at i + 0.5: shift both ends.
    transform = tf.stack(
        [a, b, c + (a + b - 1.0) / 2, d, e, f + (d + e - 1.0) / 2, 0.0, 0.0]
    )
    # Transform (x - fill) with fill 0, then add fill back: a per-channel fill
    # that stays exact under bilinear blending at the edges.
    fill = tf.cast(tf.broadcast_to(fill, tf.shape(clip)[-1:]), tf.float32)
    moved = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(clip, tf.float32) - fill,
        transforms=transform[None],
        output_shape=tf.shape(clip)[1:3],
        fill_value=0.0,
        interpolation=interpolation.upper(),
        fill_mode="CONSTANT",
    )
    # Pillow truncates the interpolated value; the 1e-3 guards exact integers
    # that float32 weights land just below.
    return _to_uint8(moved + fill + 1e-3)


def rotate(clip, degrees, **kwargs):
    """Rotates counter-clockwise about the frame centre (`Image.rotate`).

    Args:
        clip: uint8 (T, H, W, C).
        degrees: float scalar.
        **kwargs: `fill`, `interpolation` of `affine`.

    Returns:
        uint8 (T, H, W, C).
    """
    shape = tf.cast(tf.shape(clip), tf.float32)
    cx, cy = shape[2] / 2, shape[1] / 2
    angle = -tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    a, b = tf.cos(angle), tf.sin(angle)
    d, e = -tf.sin(angle), tf.cos(angle)
    c = a * -cx + b * -cy + cx
    f = d * -cx + e * -cy + cy
    return affine(clip, tf.stack([a, b, c, d, e, f]), **kwargs)


def shear_x(clip, factor, **kwargs):
    """Samples (x + factor y, y) (timm `shear_x`). uint8 (T, H, W, C) -> same."""
    factor = tf.cast(factor, tf.float32)
    return affine(clip, tf.stack([1.0, factor, 0.0, 0.0, 1.0, 0.0]), **kwargs)


def shear_y(clip, factor, **kwargs):
    """Samples (x, factor x + y) (timm `shear_y`). uint8 (T, H, W, C) -> same."""
    factor = tf.cast(factor, tf.float32)
    return affine(clip, tf.stack([1.0, 0.0, 0.0, factor, 1.0, 0.0]), **kwargs)


def translate_x(clip, pixels, **kwargs):
    """Samples (x + pixels, y): content moves left for pixels > 0.
    uint8 (T, H, W, C) -> same."""
    pixels = tf.cast(pixels, tf.float32)
    return affine(clip, tf.stack([1.0, 0.0, pixels, 0.0, 1.0, 0.0]), **kwargs)


def translate_y(clip, pixels, **kwargs):
    """Samples (x, y + pixels): content moves up for pixels > 0.
    uint8 (T, H, W, C) -> same."""
    pixels = tf.cast(pixels, tf.float32)
    return affine(clip, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, pixels]), **kwargs)


# --- The op registry: name -> fn(clip, level, fill) --------------------------
# `level` is the signed magnitude in [-10, 10]: rand_augment draws the sign
# (timm's `_randomly_negate`); ops without a direction use |level|. The level
# -> argument maps are timm's LEVEL_TO_ARG, written once here.


def _frac(level):
    return tf.abs(level) / LEVEL_DENOM


def _int(x):
    return tf.cast(tf.floor(x), tf.int32)  # Python int() of x >= 0


def _enhance(level):  # [0.1, 1.9], no sign
    return _frac(level) * 1.8 + 0.1


def _enhance_increasing(level):  # 1 -/+ [0, 0.9], at least 0.1
    return tf.maximum(0.1, 1.0 + level / LEVEL_DENOM * 0.9)


def _width(clip):
    return tf.cast(tf.shape(clip)[2], tf.float32)


def _height(clip):
    return tf.cast(tf.shape(clip)[1], tf.float32)


OPS = {
    "AutoContrast": lambda clip, level, fill: auto_contrast(clip),
    "Equalize": lambda clip, level, fill: equalize(clip),
    "Invert": lambda clip, level, fill: invert(clip),
    "Rotate": lambda clip, level, fill: rotate(  # [-30, 30] degrees
        clip, level / LEVEL_DENOM * 30.0, fill=fill
    ),
    "Posterize": lambda clip, level, fill: posterize(  # keep [0, 4] bits
        clip, _int(_frac(level) * 4)
    ),
    "PosterizeIncreasing": lambda clip, level, fill: posterize(  # keep [4, 0]
        clip, 4 - _int(_frac(level) * 4)
    ),
    "Solarize": lambda clip, level, fill: solarize(  # threshold [0, 256]
        clip, _int(_frac(level) * 256)
    ),
    "SolarizeIncreasing": lambda clip, level, fill: solarize(  # [256, 0]
        clip, 256 - _int(_frac(level) * 256)
    ),
    "SolarizeAdd": lambda clip, level, fill: solarize_add(  # add [0, 110]
        clip, _int(_frac(level) * 110)
    ),
    "Color": lambda clip, level, fill: color(clip, _enhance(level)),
    "ColorIncreasing": lambda clip, level, fill: color(
        clip, _enhance_increasing(level)
    ),
    "Contrast": lambda clip, level, fill: contrast(clip, _enhance(level)),
    "ContrastIncreasing": lambda clip, level, fill: contrast(
        clip, _enhance_increasing(level)
    ),
    "Brightness": lambda clip, level, fill: brightness(clip, _enhance(level)),
    "BrightnessIncreasing": lambda clip, level, fill: brightness(
        clip, _enhance_increasing(level)
    ),
    "Sharpness": lambda clip, level, fill: sharpness(clip, _enhance(level)),
    "SharpnessIncreasing": lambda clip, level, fill: sharpness(
        clip, _enhance_increasing(level)
    ),
    "ShearX": lambda clip, level, fill: shear_x(  # [-0.3, 0.3]
        clip, level / LEVEL_DENOM * 0.3, fill=fill
    ),
    "ShearY": lambda clip, level, fill: shear_y(
        clip, level / LEVEL_DENOM * 0.3, fill=fill
    ),
    "TranslateXRel": lambda clip, level, fill: translate_x(  # [-0.45, 0.45] W
        clip, level / LEVEL_DENOM * 0.45 * _width(clip), fill=fill
    ),
    "TranslateYRel": lambda clip, level, fill: translate_y(
        clip, level / LEVEL_DENOM * 0.45 * _height(clip), fill=fill
    ),
}

# timm's _RAND_TRANSFORMS ("rand-...") and _RAND_INCREASING_TRANSFORMS ("inc1").
DEFAULT_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
    "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness", "ShearX",
    "ShearY", "TranslateXRel", "TranslateYRel",
)  # fmt: skip
INCREASING_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
    "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
    "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)  # fmt: skip
