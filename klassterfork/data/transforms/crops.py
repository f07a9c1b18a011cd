"""Crop windows and resizing.

Crop functions return *windows* `[y, x, h, w]` (int32) computed from the
image size alone, so that the pipeline keeps only the window of each decoded
frame (`pipeline.decode_frames`); `crop_and_resize` / `resize` then bring
frames to the output size. Shapes: `(T, H, W, C)` is one clip.
"""

import math

import tensorflow as tf

from klassterfork.data.transforms.checks import check_choice, check_positive


def random_crop_window(image_size, seed, *, crop_size=None, scale=(0.8, 1.0)):
    """A random square crop window; one per clip, shared by all its frames.

    With `scale`, the window side is `s * min(H, W)` with `s` uniform in
    `scale` (aspect preserved: square window, square output); the pipeline
    then resizes the window to the crop size. With `scale=None`, the window is
    `crop_size` x `crop_size` (clamped to the frame), the plain random crop
    of C3D / R(2+1)D.

    Args:
        image_size: int [2] or [3]. `(H, W[, C])` of the frames, e.g. from
            `tf.image.extract_jpeg_shape`.
        seed: int [2]. Stateless seed.
        crop_size: int. Window side when `scale` is None.
        scale: pair of floats in (0, 1], or None. Defaults to (0.8, 1.0).

    Returns:
        int32 [4], `[y, x, h, w]` with the window inside the frame.
    """
    height = tf.cast(image_size[0], tf.int32)
    width = tf.cast(image_size[1], tf.int32)
    short = tf.minimum(height, width)
    seed_size, seed_y, seed_x = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3)
    )
    if scale is None:
        if crop_size is None:
            raise ValueError("`crop_size` is required when `scale` is None.")
        side = tf.minimum(tf.constant(crop_size, tf.int32), short)
    else:
        low, high = check_scale(scale)
        factor = tf.random.stateless_uniform([], seed_size, minval=low, maxval=high)
        side = tf.cast(tf.round(factor * tf.cast(short, tf.float32)), tf.int32)
        side = tf.clip_by_value(side, 1, short)
    y = tf.random.stateless_uniform(
        [], seed_y, minval=0, maxval=height - side + 1, dtype=tf.int32
    )
    x = tf.random.stateless_uniform(
        [], seed_x, minval=0, maxval=width - side + 1, dtype=tf.int32
    )
    return tf.stack([y, x, side, side])


def check_scale(scale):
    try:
        low, high = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(
            f"`scale` must be a pair (low, high). Received: scale={scale!r}"
        ) from None
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(
            f"`scale` must satisfy 0 < low <= high <= 1. Received: scale={scale!r}"
        )
    return low, high


def spatial_crop_windows(image_size, *, crop_size, num_crops=1, resize_short_side=None):
    """Deterministic evaluation windows: centre crop or three crops.

    The window side is `crop_size` in the frame resized so its short side is
    `resize_short_side` (i.e. `crop_size * min(H, W) / resize_short_side` in
    stored pixels), or `min(crop_size, min(H, W))` when `resize_short_side` is
    None. Three crops lie along the long side: left / centre / right for
    landscape frames, top / centre / bottom for portrait ones.

    Args:
        image_size: int [2] or [3]. `(H, W[, C])` of the frames.
        crop_size: int. Output side.
        num_crops: int. 1 (centre) or 3. Defaults to 1.
        resize_short_side: int or None. Defaults to None.

    Returns:
        int32 [num_crops, 4], rows `[y, x, h, w]`.
    """
    check_choice(num_crops, (1, 3), "num_crops")
    height = tf.cast(image_size[0], tf.int32)
    width = tf.cast(image_size[1], tf.int32)
    short = tf.minimum(height, width)
    if resize_short_side is None:
        side = tf.minimum(tf.constant(crop_size, tf.int32), short)
    else:
        check_positive(resize_short_side, "resize_short_side")
        side = tf.cast(
            tf.round(tf.cast(short, tf.float32) * crop_size / resize_short_side),
            tf.int32,
        )
        side = tf.clip_by_value(side, 1, short)
    centre_y = (height - side) // 2
    centre_x = (width - side) // 2
    if num_crops == 1:
        return tf.stack([centre_y, centre_x, side, side])[None]
    landscape = width >= height
    along = tf.where(landscape, width, height) - side
    offsets = tf.stack([0, along // 2, along])
    ys = tf.where(landscape, tf.fill([3], centre_y), offsets)
    xs = tf.where(landscape, offsets, tf.fill([3], centre_x))
    sides = tf.fill([3], side)
    return tf.stack([ys, xs, sides, sides], axis=1)


def crop_and_resize(frames, window, *, crop_size):
    """Crops decoded frames to `window` and resizes to `crop_size` (bilinear).

    Args:
        frames: uint8 [T, H, W, C].
        window: int32 [4], `[y, x, h, w]`.
        crop_size: int.

    Returns:
        uint8 [T, crop_size, crop_size, C].
    """
    cropped = frames[
        :, window[0] : window[0] + window[2], window[1] : window[1] + window[3]
    ]
    return resize(cropped, crop_size=crop_size)


def resize(frames, *, crop_size):
    """Bilinear resize of [T, h, w, C] frames to [T, crop_size, crop_size, C].

    Frames already at the target size are returned unchanged. uint8 input
    gives uint8 output (rounded): clips stay 4x smaller than float32 until
    they are batched and standardized.

    Args:
        frames: uint8 or float32 [T, h, w, C].
        crop_size: int.

    Returns:
        [T, crop_size, crop_size, C], the dtype of `frames`.
    """
    frames = tf.convert_to_tensor(frames)

    def interpolate():
        out = tf.image.resize(frames, [crop_size, crop_size], method="bilinear")
        if frames.dtype == tf.uint8:
            out = tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
        return tf.cast(out, frames.dtype)

    shape = tf.shape(frames)
    same = tf.logical_and(tf.equal(shape[1], crop_size), tf.equal(shape[2], crop_size))
    out = tf.cond(same, lambda: frames, interpolate)
    return tf.ensure_shape(
        out, [frames.shape[0], crop_size, crop_size, frames.shape[-1]]
    )


MULTI_SCALES = (1.0, 0.875, 0.75, 0.66)


def multi_scale_crop_window(
    image_size,
    seed,
    *,
    crop_size,
    scales=MULTI_SCALES,
    max_distort=1,
    fixed_offsets=True,
):
    """TSN/TDN `GroupMultiScaleCrop`: a window of random scale and offset.

    Side candidates are `int(min(H, W) * s)` for s in `scales`, snapped to
    `crop_size` when within 3 px; the (height, width) pair is drawn
    uniformly among pairs of candidates at most `max_distort` apart in the
    list (so the aspect ratio may change). With `fixed_offsets` the window
    sits at one of 13 positions on a 4 x 4 grid of steps ((W - w) // 4,
    (H - h) // 4): 4 corners, centre, 4 edge midpoints and 4 quarter
    points (`more_fix_crop`); otherwise anywhere. The window is then
    resized to `crop_size` (the pipeline decodes only it).

    Args:
        image_size: int [2] or [3], `(H, W[, C])`.
        seed: int [2].
        crop_size: int. Output side.
        scales: sequence of floats. Defaults to (1, .875, .75, .66).
        max_distort: int. Defaults to 1.
        fixed_offsets: bool. Defaults to True.

    Returns:
        int32 [4], `[y, x, h, w]`.
    """
    num = len(scales)
    pairs = [
        (i, j) for i in range(num) for j in range(num) if abs(i - j) <= max_distort
    ]
    height = tf.cast(image_size[0], tf.int32)
    width = tf.cast(image_size[1], tf.int32)
    base = tf.cast(tf.minimum(height, width), tf.float32)
    sizes = tf.cast(base * tf.constant(scales, tf.float32), tf.int32)  # int() truncates
    sizes = tf.where(tf.abs(sizes - crop_size) < 3, crop_size, sizes)
    seed_pair, seed_pos = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    pick = tf.random.stateless_uniform([], seed_pair, 0, len(pairs), dtype=tf.int32)
    pair = tf.gather(tf.constant(pairs, tf.int32), pick)
    # TSN pairs (w, h) = (crop_sizes[i], crop_sizes[j]).
    crop_w = tf.minimum(tf.gather(sizes, pair[0]), width)
    crop_h = tf.minimum(tf.gather(sizes, pair[1]), height)
    if fixed_offsets:
        step_w = (width - crop_w) // 4
        step_h = (height - crop_h) // 4
        grid = tf.constant(FIXED_OFFSETS, tf.int32)  # rows (x, y) in steps
        choice = tf.random.stateless_uniform([], seed_pos, 0, 13, dtype=tf.int32)
        x = grid[choice, 0] * step_w
        y = grid[choice, 1] * step_h
    else:
        seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed_pos, 2))
        y = tf.random.stateless_uniform(
            [], seed_y, 0, height - crop_h + 1, dtype=tf.int32
        )
        x = tf.random.stateless_uniform(
            [], seed_x, 0, width - crop_w + 1, dtype=tf.int32
        )
    return tf.stack([y, x, crop_h, crop_w])


# TSN `fill_fix_offset(more_fix_crop=True)`, (x, y) in units of the steps.
FIXED_OFFSETS = (
    (0, 0),
    (4, 0),
    (0, 4),
    (4, 4),
    (2, 2),
    (0, 2),
    (4, 2),
    (2, 4),
    (2, 0),
    (1, 1),
    (3, 1),
    (1, 3),
    (3, 3),
)


def random_resized_crop_window(
    image_size, seed, *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts=10
):
    """Inception-style random-resized crop (torchvision `RandomResizedCrop`).

    Up to `attempts` draws of area fraction uniform in `scale` and aspect
    ratio w / h log-uniform in `ratio`; the first window that fits is used,
    else the centre crop with the ratio clamped to `ratio`.

    Args:
        image_size: int [2] or [3], `(H, W[, C])`.
        seed: int [2].
        scale: (low, high) area fractions. Defaults to (0.08, 1.0).
        ratio: (low, high) aspect ratios w / h. Defaults to (3/4, 4/3).
        attempts: int. Defaults to 10.

    Returns:
        int32 [4], `[y, x, h, w]`.
    """
    check_positive(attempts, "attempts")
    height = tf.cast(image_size[0], tf.int32)
    width = tf.cast(image_size[1], tf.int32)
    h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 4)
    area = (
        h_f
        * w_f
        * tf.random.stateless_uniform([attempts], seeds[0], scale[0], scale[1])
    )
    log_ratio = tf.random.stateless_uniform(
        [attempts], seeds[1], math.log(ratio[0]), math.log(ratio[1])
    )
    aspect = tf.exp(log_ratio)
    crop_w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    crop_h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (crop_w > 0) & (crop_h > 0) & (crop_w <= width) & (crop_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    # Fallback: centre crop, aspect clamped into `ratio`.
    in_ratio = w_f / h_f
    fallback_w = tf.where(
        in_ratio < ratio[0],
        width,
        tf.where(
            in_ratio > ratio[1], tf.cast(tf.round(h_f * ratio[1]), tf.int32), width
        ),
    )
    fallback_h = tf.where(
        in_ratio < ratio[0], tf.cast(tf.round(w_f / ratio[0]), tf.int32), height
    )
    any_fit = tf.reduce_any(fits)
    crop_w = tf.where(any_fit, crop_w[first], fallback_w)
    crop_h = tf.where(any_fit, crop_h[first], fallback_h)
    y_rand = tf.random.stateless_uniform(
        [], seeds[2], 0, height - crop_h + 1, dtype=tf.int32
    )
    x_rand = tf.random.stateless_uniform(
        [], seeds[3], 0, width - crop_w + 1, dtype=tf.int32
    )
    y = tf.where(any_fit, y_rand, (height - crop_h) // 2)
    x = tf.where(any_fit, x_rand, (width - crop_w) // 2)
    return tf.stack([y, x, crop_h, crop_w])
