"""RandAugment on whole clips and random erasing on batches (timm / VideoMAE).

`rand_augment` is timm's `rand_augment_transform` policy (`rand-m9-n2-mstd0.5`,
or VideoMAE's `rand-m7-n4-mstd0.5-inc1` with `ops=INCREASING_OPS`) with one
draw per clip: the ops, the magnitudes and the signs are chosen once and applied
to every frame, as VideoMAE's `AugmentOp` does on its list of frames (per-frame
draws would destroy motion). Ops whose result depends on the image (AutoContrast,
Equalize, Contrast) use each frame's own histogram or mean, as PIL does when
VideoMAE calls it on each frame. Every op reproduces the PIL function timm calls
(`ImageOps`, `ImageEnhance`, `Image.transform`), integer rounding included; the
tests compare them with PIL.

Choices, each where timm/VideoMAE leave one open:
- Geometry fill is 128 in every channel: timm's `_FILL`, which VideoMAE gets
  because its `aa_params` hold no `img_mean` (timm's image `create_transform`
  passes the ImageNet mean, (124, 116, 104); give `fill=` for that).
- Geometry interpolation is bilinear (VideoMAE asks bicubic, timm's default picks
  bilinear or bicubic at random; `ImageProjectiveTransformV3` has no bicubic).
  PIL fills a sample whose centre falls outside the image and clamps its
  neighbours; TF blends the fill into a one-pixel band at the edge instead.
- The magnitude noise, the clip to [0, 10] and the 50% sign flip of Rotate,
  Shear*, Translate* and the *Increasing enhancers follow timm's `AugmentOp`.
- Posterize to 0 bits (Posterize below level 2.5) gives black, as Pillow < 9
  did; Pillow >= 9 raises on 0 bits.

`random_erasing` is timm's `RandomErasing` in SlowFast/VideoMAE's "cube" form
(one box for every frame of a clip, 100 attempts to fit a box, fresh noise for
each frame), on standardized float batches. It draws noise only for the box
pixels, so it costs little more than the copy of the batch.
"""

import math

import tensorflow as tf

FILL = 128  # timm's _FILL = (128, 128, 128)
_LEVEL_DENOM = 10.0  # timm: magnitudes live in [0, 10]


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
    return tf.abs(level) / _LEVEL_DENOM


def _int(x):
    return tf.cast(tf.floor(x), tf.int32)  # Python int() of x >= 0


def _enhance(level):  # [0.1, 1.9], no sign
    return _frac(level) * 1.8 + 0.1


def _enhance_increasing(level):  # 1 -/+ [0, 0.9], at least 0.1
    return tf.maximum(0.1, 1.0 + level / _LEVEL_DENOM * 0.9)


def _width(clip):
    return tf.cast(tf.shape(clip)[2], tf.float32)


def _height(clip):
    return tf.cast(tf.shape(clip)[1], tf.float32)


OPS = {
    "AutoContrast": lambda clip, level, fill: auto_contrast(clip),
    "Equalize": lambda clip, level, fill: equalize(clip),
    "Invert": lambda clip, level, fill: invert(clip),
    "Rotate": lambda clip, level, fill: rotate(  # [-30, 30] degrees
        clip, level / _LEVEL_DENOM * 30.0, fill=fill
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
        clip, level / _LEVEL_DENOM * 0.3, fill=fill
    ),
    "ShearY": lambda clip, level, fill: shear_y(
        clip, level / _LEVEL_DENOM * 0.3, fill=fill
    ),
    "TranslateXRel": lambda clip, level, fill: translate_x(  # [-0.45, 0.45] W
        clip, level / _LEVEL_DENOM * 0.45 * _width(clip), fill=fill
    ),
    "TranslateYRel": lambda clip, level, fill: translate_y(
        clip, level / _LEVEL_DENOM * 0.45 * _height(clip), fill=fill
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


def rand_augment_params(
    seed, *, num_ops, num_layers=2, magnitude=9, magnitude_std=0.5, prob=0.5
):
    """The random choices of one `rand_augment` call (timm's `RandAugment`).

    Ops are drawn uniformly with replacement; each is applied with probability
    `prob`; its magnitude is N(magnitude, magnitude_std) (uniform in [0,
    magnitude] when magnitude_std is inf or > 100, as timm), clipped to [0, 10],
    and negated with probability 0.5 (used by the signed ops only).

    Args:
        seed: int [2]. Stateless: the same seed gives the same choices.
        num_ops: int. Size of the op list.

    Returns:
        dict: "op_index" int32 [num_layers] in [0, num_ops), "apply" bool
        [num_layers], "level" float32 [num_layers] in [-10, 10].
    """
    s_op, s_apply, s_mag, s_sign = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=4)
    )
    shape = [num_layers]
    op_index = tf.random.stateless_uniform(shape, s_op, 0, num_ops, dtype=tf.int32)
    apply = tf.random.stateless_uniform(shape, s_apply) < prob
    if magnitude_std > 100:  # timm: "mstd > 100" means uniform in [0, m]
        mag = tf.random.stateless_uniform(shape, s_mag, 0.0, float(magnitude))
    elif magnitude_std > 0:
        mag = magnitude + magnitude_std * tf.random.stateless_normal(shape, s_mag)
    else:
        mag = tf.fill(shape, float(magnitude))
    mag = tf.clip_by_value(mag, 0.0, _LEVEL_DENOM)
    sign = tf.where(tf.random.stateless_uniform(shape, s_sign) < 0.5, -1.0, 1.0)
    return {"op_index": op_index, "apply": apply, "level": sign * mag}


def rand_augment(
    clip,
    seed,
    *,
    num_layers=2,
    magnitude=9,
    magnitude_std=0.5,
    ops=DEFAULT_OPS,
    prob=0.5,
    fill=FILL,
):
    """RandAugment (Cubuk et al. 2020) as timm's `rand-m{M}-n{N}-mstd{S}`, per clip.

    `num_layers` ops are drawn from `ops` (uniform, with replacement), each
    applied with probability `prob` at a noisy magnitude; the choices are made
    once per call and applied identically to every frame. VideoMAE fine-tuning
    uses `num_layers=4, magnitude=7, magnitude_std=0.5, ops=INCREASING_OPS`.
    Graph-safe: one `tf.switch_case` per layer, no Python randomness.

    Args:
        clip: uint8 (T, H, W, 3).
        seed: int [2]. Stateless: the same seed gives the same augmentation.
        num_layers: int. Ops per clip. Defaults to 2.
        magnitude: float in [0, 10]. Defaults to 9.
        magnitude_std: float. Magnitude noise; inf for uniform. Defaults to 0.5.
        ops: sequence of names from `OPS`. Defaults to `DEFAULT_OPS`.
        prob: float. Probability that a drawn op is applied. Defaults to 0.5.
        fill: int or 3 ints. Fill of the geometry ops. Defaults to 128.

    Returns:
        uint8 (T, H, W, 3).

    Raises:
        ValueError: on an unknown op name, an empty op list or a non-uint8 clip.
    """
    clip = _check_clip(clip)
    ops = (ops,) if isinstance(ops, str) else tuple(ops)
    if not ops or any(name not in OPS for name in ops):
        bad = [name for name in ops if name not in OPS]
        raise ValueError(
            f"`ops` must be a non-empty list of names from {sorted(OPS)}. "
            f"Received: ops={list(ops)!r} (unknown: {bad})"
        )
    if not 0 <= magnitude <= _LEVEL_DENOM:
        raise ValueError(f"`magnitude` must be in [0, 10]. Received: {magnitude=}")
    params = rand_augment_params(
        seed,
        num_ops=len(ops),
        num_layers=num_layers,
        magnitude=magnitude,
        magnitude_std=magnitude_std,
        prob=prob,
    )
    for i in range(num_layers):
        level = params["level"][i]
        # Branch len(ops) is "not applied".
        index = tf.where(params["apply"][i], params["op_index"][i], len(ops))
        branches = [
            (lambda fn=OPS[name], x=clip: fn(x, level, fill)) for name in ops
        ] + [lambda x=clip: x]
        clip = tf.switch_case(index, branches)
    return clip


# --- Random erasing (timm RandomErasing, SlowFast/VideoMAE cube mode) --------

ERASE_MODES = ("pixel", "rand", "const")


def random_erasing(
    clips,
    seed,
    *,
    prob=0.25,
    area=(0.02, 1 / 3),
    aspect=(0.3, 1 / 0.3),
    mode="pixel",
    max_count=1,
    max_attempts=100,
):
    """Erases one box per clip, the same box in every frame (Zhong et al. 2020).

    Per clip, with probability `prob`: count = randint(1, max_count) boxes; for
    each, up to `max_attempts` draws of target area U(area) * H W / count and
    aspect exp(U(log aspect)), h = round(sqrt(area * aspect)), w = round(sqrt(
    area / aspect)); the first draw with h < H and w < W is placed at top ~
    randint(0, H - h), left ~ randint(0, W - w), else that box is skipped. The
    box is filled with N(0, 1) noise per pixel ("pixel"), one N(0, 1) value per
    channel ("rand"; both drawn afresh for each frame, as VideoMAE does) or 0
    ("const"). Meant for standardized clips, where 0 is the mean.

    Args:
        clips: float (B, T, H, W, C).
        seed: int [2]. Stateless: the same seed erases the same boxes.
        prob: float in [0, 1]. Probability that a clip is erased. Defaults to 0.25.
        area: (min, max) fraction of H W per clip. Defaults to (0.02, 1/3).
        aspect: (min, max) h / w. Defaults to (0.3, 1/0.3), timm's.
        mode: "pixel", "rand" or "const". Defaults to "pixel".
        max_count: int >= 1. Most boxes per clip. Defaults to 1.
        max_attempts: int. Draws to fit a box. Defaults to 100 (SlowFast's cube).

    Returns:
        float (B, T, H, W, C), same dtype.
    """
    if mode not in ERASE_MODES:
        raise ValueError(
            f"`mode` must be one of {list(ERASE_MODES)}. Received: mode={mode!r}"
        )
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"`prob` must be in [0, 1]. Received: prob={prob!r}")
    if max_count < 1:
        raise ValueError(f"`max_count` must be >= 1. Received: {max_count=}")
    clips = tf.convert_to_tensor(clips)
    if not clips.dtype.is_floating or clips.shape.rank != 5:
        raise ValueError(
            "`clips` must be float (B, T, H, W, C). "
            f"Received: dtype={clips.dtype.name}, shape={clips.shape}"
        )
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num=8))
    shape = tf.shape(clips)
    b, h_img, w_img = shape[0], shape[2], shape[3]
    hf, wf = tf.cast(h_img, tf.float32), tf.cast(w_img, tf.float32)

    apply = tf.random.stateless_uniform([b], seeds[0]) < prob
    count = tf.random.stateless_uniform([b], seeds[1], 1, max_count + 1, tf.int32)
    draws = [b, max_count, max_attempts]
    target = tf.random.stateless_uniform(draws, seeds[2], area[0], area[1])
    target = target * hf * wf / tf.cast(count, tf.float32)[:, None, None]
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    ratio = tf.exp(tf.random.stateless_uniform(draws, seeds[3], log_lo, log_hi))
    h = tf.cast(tf.round(tf.sqrt(target * ratio)), tf.int32)  # half to even,
    w = tf.cast(tf.round(tf.sqrt(target / ratio)), tf.int32)  # as Python round
    fits = tf.logical_and(h < h_img, w < w_img)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=-1, output_type=tf.int32)
    h = tf.gather(h, first[..., None], batch_dims=2)[..., 0]  # (B, K)
    w = tf.gather(w, first[..., None], batch_dims=2)[..., 0]
    enabled = (
        tf.reduce_any(fits, -1)
        & apply[:, None]
        & (tf.range(max_count)[None, :] < count[:, None])
    )
    u_top = tf.random.stateless_uniform([b, max_count], seeds[4])
    u_left = tf.random.stateless_uniform([b, max_count], seeds[5])
    top = tf.cast(u_top * tf.cast(h_img - h + 1, tf.float32), tf.int32)
    left = tf.cast(u_left * tf.cast(w_img - w + 1, tf.float32), tf.int32)

    boxes = tf.stack([top, left, h, w, tf.cast(enabled, tf.int32)], -1)  # (B, K, 5)

    def erase_clip(args):
        # Noise only for the box pixels (a few % of the batch), not (B, T, H, W, C).
        clip, clip_boxes, index = args
        for k in range(max_count):
            box = clip_boxes[k]
            key = tf.random.experimental.stateless_fold_in(
                seeds[6], index * max_count + k
            )
            clip = tf.cond(
                box[4] > 0, lambda: _fill_box(clip, box, key, mode), lambda: clip
            )
        return clip

    return tf.map_fn(
        erase_clip,
        (clips, boxes, tf.range(b)),
        fn_output_signature=tf.TensorSpec(clips.shape[1:], clips.dtype),
    )


def _fill_box(clip, box, key, mode):
    """Fills box (top, left, h, w, _) of every frame of clip (T, H, W, C)."""
    top, left, h, w = box[0], box[1], box[2], box[3]
    shape = tf.shape(clip)
    size = [shape[0], h, w, shape[3]]
    if mode == "pixel":
        values = tf.random.stateless_normal(size, key, dtype=clip.dtype)
    elif mode == "rand":
        values = tf.random.stateless_normal(
            [shape[0], 1, 1, shape[3]], key, dtype=clip.dtype
        )
        values = tf.broadcast_to(values, size)
    else:
        values = tf.zeros(size, clip.dtype)
    padding = [[0, 0], [top, shape[1] - top - h], [left, shape[2] - left - w], [0, 0]]
    rows = tf.range(shape[1])
    cols = tf.range(shape[2])
    inside = ((rows >= top) & (rows < top + h))[:, None] & (
        (cols >= left) & (cols < left + w)
    )[None, :]
    return tf.where(inside[None, :, :, None], tf.pad(values, padding), clip)
