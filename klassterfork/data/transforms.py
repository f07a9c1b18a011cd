"""Clip sampling, crop windows, flips with label maps and standardization.

Pure tensor functions with shape contracts (the dmvr / mmaction2 way): they
know nothing about record keys; `data/pipeline.py` wires them. Samplers return
frame *indices* so that the pipeline gathers and decodes only the JPEGs a clip
needs; crop functions return *windows* `[y, x, h, w]` so that the pipeline
decodes only the window (`tf.image.decode_and_crop_jpeg`). All randomness is
stateless: every random function takes an int `seed` of shape [2] and the same
seed gives the same result.

Shapes: `(T, H, W, C)` is one clip, `T` frames in time order.
"""

import math

import tensorflow as tf

# Short videos: "repeat" repeats the last frame, "loop" wraps to the start.
SHORT_VIDEO_MODES = ("repeat", "loop")
STANDARDIZE_MODES = ("per_frame", "per_clip", "mean_std", "unit", "symmetric", "none")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def _check_choice(value, accepted, name):
    if value not in accepted:
        raise ValueError(
            f"`{name}` must be one of {', '.join(map(repr, accepted))}. "
            f"Received: {name}={value!r}"
        )


def _check_positive(value, name):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")


def fit_indices(indices, num_frames, *, short_video="repeat"):
    """Maps indices that may run past the end of a video onto its frames.

    Args:
        indices: int32 [...]. Non-negative frame indices.
        num_frames: int32 scalar. Frames in the video (>= 1).
        short_video: str. "repeat": indices past the end take the last frame;
            "loop": they wrap around to the start. Defaults to "repeat".

    Returns:
        int32 [...], every value in [0, num_frames).
    """
    _check_choice(short_video, SHORT_VIDEO_MODES, "short_video")
    num_frames = tf.cast(num_frames, tf.int32)
    if short_video == "repeat":
        return tf.minimum(indices, num_frames - 1)
    return indices % num_frames


def random_clip_indices(
    num_frames, seed, *, clip_len, frame_step=1, short_video="repeat"
):
    """Indices of a clip of `clip_len` frames, `frame_step` apart, random start.

    The start is uniform over every position where the whole clip fits; a
    video shorter than the clip's span starts at 0 and its missing frames are
    filled as `short_video` says (see `fit_indices`).

    Args:
        num_frames: int scalar. Frames in the video.
        seed: int [2]. Stateless seed.
        clip_len: int. Frames per clip.
        frame_step: int or int32 scalar. Distance between sampled frames.
            Defaults to 1.
        short_video: str. "repeat" (last frame) or "loop". Defaults to "repeat".

    Returns:
        int32 [clip_len].
    """
    _check_positive(clip_len, "clip_len")
    num_frames = tf.cast(num_frames, tf.int32)
    frame_step = tf.cast(frame_step, tf.int32)
    span = (clip_len - 1) * frame_step + 1
    max_start = tf.maximum(num_frames - span, 0)
    start = tf.random.stateless_uniform(
        [], seed, minval=0, maxval=max_start + 1, dtype=tf.int32
    )
    indices = start + tf.range(clip_len, dtype=tf.int32) * frame_step
    return fit_indices(indices, num_frames, short_video=short_video)


def even_clip_indices(
    num_frames, *, clip_len, num_clips, frame_step=1, short_video="repeat"
):
    """Indices of `num_clips` clips evenly spaced over the video (evaluation).

    The video's valid start range `[0, num_frames - span]` (span =
    (clip_len - 1) * frame_step + 1) is cut into `num_clips` equal parts and
    each clip starts at the centre of its part (mmaction2 `SampleFrames`
    test mode): start_i = floor(d * (i + 0.5)), d = (num_frames - span + 1) /
    num_clips. Short videos start every clip at 0.

    Args:
        num_frames: int scalar. Frames in the video.
        clip_len: int. Frames per clip.
        num_clips: int. Clips per video.
        frame_step: int. Distance between sampled frames. Defaults to 1.
        short_video: str. "repeat" or "loop". Defaults to "repeat".

    Returns:
        int32 [num_clips, clip_len].
    """
    _check_positive(clip_len, "clip_len")
    _check_positive(num_clips, "num_clips")
    _check_positive(frame_step, "frame_step")
    num_frames = tf.cast(num_frames, tf.int32)
    span = (clip_len - 1) * frame_step + 1
    room = tf.cast(tf.maximum(num_frames - span + 1, 1), tf.float64)
    part = room / num_clips
    starts = tf.cast(
        tf.floor(part * (tf.range(num_clips, dtype=tf.float64) + 0.5)), tf.int32
    )
    indices = starts[:, None] + tf.range(clip_len, dtype=tf.int32)[None, :] * frame_step
    return fit_indices(indices, num_frames, short_video=short_video)


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
        low, high = _check_scale(scale)
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


def _check_scale(scale):
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
    _check_choice(num_crops, (1, 3), "num_crops")
    height = tf.cast(image_size[0], tf.int32)
    width = tf.cast(image_size[1], tf.int32)
    short = tf.minimum(height, width)
    if resize_short_side is None:
        side = tf.minimum(tf.constant(crop_size, tf.int32), short)
    else:
        _check_positive(resize_short_side, "resize_short_side")
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


def flip_label_lookup(label, flip_label_map):
    """The label after a horizontal flip, or -1 when the class must never flip.

    Args:
        label: int32 scalar.
        flip_label_map: sequence of int, or None. `flip_label_map[label]` is
            the label of the flipped video, -1 = never flip that class. None:
            every class flips and keeps its label.

    Returns:
        int32 scalar.
    """
    label = tf.cast(label, tf.int32)
    if flip_label_map is None:
        return label
    table = tf.constant(list(flip_label_map), tf.int32)
    inside = tf.logical_and(label >= 0, label < tf.size(table))
    # Labels the map does not cover (e.g. -1 for unlabelled videos) never flip.
    return tf.where(
        inside, tf.gather(table, tf.clip_by_value(label, 0, tf.size(table) - 1)), -1
    )


def random_flip(clip, label, seed, *, flip_label_map=None, prob=0.5):
    """Flips the whole clip left-right with probability `prob`, relabelling.

    Args:
        clip: [T, H, W, C] any dtype.
        label: int32 scalar.
        seed: int [2]. Stateless seed.
        flip_label_map: see `flip_label_lookup`. Defaults to None.
        prob: float in [0, 1]. Defaults to 0.5.

    Returns:
        (clip [T, H, W, C], label int32 scalar, flipped bool scalar).
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"`prob` must be in [0, 1]. Received: prob={prob!r}")
    label = tf.cast(label, tf.int32)
    new_label = flip_label_lookup(label, flip_label_map)
    draw = tf.random.stateless_uniform([], seed)
    flipped = tf.logical_and(draw < prob, new_label >= 0)
    clip = tf.cond(flipped, lambda: tf.reverse(clip, axis=[2]), lambda: clip)
    return clip, tf.where(flipped, new_label, label), flipped


def standardize(clip, mode="per_frame", *, mean=None, std=None):
    """Turns pixel values in [0, 255] into model inputs.

    Modes:
        "per_frame": `tf.image.per_image_standardization` of each frame
            (zero mean, unit variance per frame).
        "per_clip": the same over the whole clip.
        "mean_std": `(x / 255 - mean) / std`, mean/std per channel in [0, 1]
            RGB units (e.g. `IMAGENET_MEAN`, `KINETICS_MEAN`).
        "unit": `x / 255`, in [0, 1].
        "symmetric": `x / 127.5 - 1`, in [-1, 1].
        "none": values unchanged, cast to uint8 (the model standardizes).

    Works on one clip [T, H, W, C] or a batch [B, T, H, W, C] ("per_clip"
    reduces over the last four axes, "per_frame" over the last three).

    Args:
        clip: [..., T, H, W, C] uint8 or float in [0, 255].
        mode: str. Defaults to "per_frame".
        mean, std: sequences of C floats; required by "mean_std" only.

    Returns:
        float32, the shape of `clip` (uint8 for "none").
    """
    _check_choice(mode, STANDARDIZE_MODES, "standardize")
    if mode != "mean_std" and (mean is not None or std is not None):
        raise ValueError(
            "`mean` and `std` are only used with standardize='mean_std'. "
            f"Received: standardize={mode!r}, mean={mean!r}, std={std!r}"
        )
    if mode == "none":
        clip = tf.convert_to_tensor(clip)
        if clip.dtype == tf.uint8:
            return clip
        return tf.cast(
            tf.clip_by_value(tf.round(tf.cast(clip, tf.float32)), 0, 255), tf.uint8
        )
    clip = tf.cast(clip, tf.float32)
    if mode == "per_frame":
        return tf.image.per_image_standardization(clip)
    if mode == "per_clip":
        axes = [-4, -3, -2, -1]
        centred = clip - tf.reduce_mean(clip, axis=axes, keepdims=True)
        count = tf.cast(tf.reduce_prod(tf.shape(clip)[-4:]), tf.float32)
        deviation = tf.math.reduce_std(clip, axis=axes, keepdims=True)
        return centred / tf.maximum(deviation, tf.math.rsqrt(count))
    if mode == "unit":
        return clip / 255.0
    if mode == "symmetric":
        return clip / 127.5 - 1.0
    if mean is None or std is None:
        raise ValueError(
            "standardize='mean_std' needs `mean` and `std` (per channel, in [0, 1] "
            f"units, e.g. KINETICS_MEAN / KINETICS_STD). Received: mean={mean!r}, "
            f"std={std!r}"
        )
    if min(std) <= 0:
        raise ValueError(f"`std` must be positive. Received: std={std!r}")
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    return (clip / 255.0 - mean) / std


# --- Issue 3: more samplers -------------------------------------------------


def random_frame_step(seed, choices):
    """One frame step drawn uniformly from `choices` (fps jitter).

    `choices=(1, 2)` samples at the stored rate or half of it; fractional
    steps resample the frame rate, e.g. fps x {1, .75, .5} is
    `choices=(1, 4 / 3, 2)` (frames taken at floor(i * step)).

    Args:
        seed: int [2]. Stateless seed.
        choices: non-empty sequence of positive numbers.

    Returns:
        float32 scalar.
    """
    values = [float(c) for c in choices]
    if not values or min(values) <= 0:
        raise ValueError(
            f"`frame_step` choices must be positive numbers. Received: {choices!r}"
        )
    pick = tf.random.stateless_uniform([], seed, 0, len(values), dtype=tf.int32)
    return tf.gather(tf.constant(values, tf.float32), pick)


def stepped_clip_indices(
    num_frames, seed, *, clip_len, frame_step, short_video="repeat"
):
    """`random_clip_indices` for a float step: frames start + floor(i * step).

    Args:
        num_frames: int scalar.
        seed: int [2].
        clip_len: int.
        frame_step: float32 scalar > 0.
        short_video: "repeat" or "loop".

    Returns:
        int32 [clip_len].
    """
    _check_positive(clip_len, "clip_len")
    num_frames = tf.cast(num_frames, tf.int32)
    offsets = tf.cast(
        tf.floor(
            tf.range(clip_len, dtype=tf.float32) * tf.cast(frame_step, tf.float32)
        ),
        tf.int32,
    )
    max_start = tf.maximum(num_frames - offsets[-1] - 1, 0)
    start = tf.random.stateless_uniform(
        [], seed, minval=0, maxval=max_start + 1, dtype=tf.int32
    )
    return fit_indices(start + offsets, num_frames, short_video=short_video)


def segment_indices(
    num_frames, seed=None, *, num_segments, new_length=1, clip=0, num_clips=1
):
    """TSN segment sampling: `new_length` consecutive frames per segment.

    The video (less the `new_length - 1` frames a snippet needs) is split
    into `num_segments` equal segments (Wang et al., ECCV 2016; TDN uses
    new_length=5). Train (`seed` given), as TSN's `_sample_indices`: with
    d = (T - new_length + 1) // num_segments, d > 0: offset_i = i * d +
    uniform[0, d); else if T > num_segments: sorted uniform offsets; else 0.
    Eval (`seed=None`), as TSN's `_get_test_indices`: offset_i =
    floor(tick / 2 + tick * i), tick = (T - new_length + 1) / num_segments.
    With `num_clips` > 1 (eval only), clip k shifts every offset to
    floor(tick * (i + (k + 0.5) / num_clips)); k = 0 of 1 is TSN's centre.
    Snippet frames past the end repeat the last frame.

    Args:
        num_frames: int scalar.
        seed: int [2] for random (train) offsets, None for segment centres.
        num_segments: int.
        new_length: int. Consecutive frames per segment. Defaults to 1.
        clip, num_clips: ints, eval only. Which of `num_clips` evenly
            shifted clips. Defaults to 0 of 1.

    Returns:
        int32 [num_segments * new_length], segment-major.
    """
    _check_positive(num_segments, "num_segments")
    _check_positive(new_length, "new_length")
    num_frames = tf.cast(num_frames, tf.int32)
    usable = num_frames - new_length + 1
    segments = tf.range(num_segments, dtype=tf.int32)
    if seed is None:
        tick = tf.cast(tf.maximum(usable, 1), tf.float64) / num_segments
        shift = (clip + 0.5) / num_clips
        offsets = tf.cast(
            tf.floor(tick * (tf.cast(segments, tf.float64) + shift)), tf.int32
        )
        offsets = tf.where(usable > 0, offsets, 0)
    else:
        duration = usable // num_segments
        seed_a, seed_b = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        jitter = tf.random.stateless_uniform(
            [num_segments], seed_a, 0, tf.maximum(duration, 1), dtype=tf.int32
        )
        regular = segments * duration + jitter
        scattered = tf.sort(
            tf.random.stateless_uniform(
                [num_segments], seed_b, 0, tf.maximum(usable, 1), dtype=tf.int32
            )
        )
        offsets = tf.where(
            duration > 0,
            regular,
            tf.where(num_frames > num_segments, scattered, tf.zeros_like(segments)),
        )
    indices = offsets[:, None] + tf.range(new_length, dtype=tf.int32)[None, :]
    return tf.minimum(tf.reshape(indices, [-1]), num_frames - 1)


# --- Issue 3: more crops -----------------------------------------------------

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
    _check_positive(attempts, "attempts")
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


# --- Issue 3: label-mapped flips and time reversal ---------------------------

AUGMENT_POLICIES = ("independent", "uniform")


def load_ssv2_label_maps(mappings_path, labels_path):
    """Flip and time-reversal label maps from the 20BN SSv2 files.

    Args:
        mappings_path: `augmentation_mappings.json` ("left/right", "left/right
            agnostic", "reverse time", "reverse time agnostic", "reverse
            time false class").
        labels_path: `something-something-v2-labels.json` (template ->
            index).

    Returns:
        dict with `flip_label_map` and `reverse_label_map`, lists of int
        (one entry per class): the label after the augmentation, the label
        itself for agnostic classes, -1 where the augmentation does not
        apply ("reverse time false class" and classes in no list).

    Raises:
        ValueError: a template in the mappings is not in the labels file.
    """
    import json

    with open(labels_path, encoding="utf-8") as f:
        index = {name: int(i) for name, i in json.load(f).items()}
    with open(mappings_path, encoding="utf-8") as f:
        mappings = json.load(f)

    def lookup(name, key):
        if name not in index:
            raise ValueError(
                f"{mappings_path}: {key}: template {name!r} is not in {labels_path}"
            )
        return index[name]

    def table(pairs_key, agnostic_key):
        out = [-1] * len(index)
        for name in mappings.get(agnostic_key, []):
            out[lookup(name, agnostic_key)] = lookup(name, agnostic_key)
        for name, target in mappings.get(pairs_key, {}).items():
            out[lookup(name, pairs_key)] = lookup(target, pairs_key)
        return out

    return {
        "flip_label_map": table("left/right", "left/right agnostic"),
        "reverse_label_map": table("reverse time", "reverse time agnostic"),
    }


def tdn_flip_label_map(num_classes=174, swaps=((86, 87), (93, 94), (166, 167))):
    """TDN's SSv2 flip: every class flips, swapped pairs change label.

    TDN (`GroupRandomHorizontalFlip_sth`) flips each sample with p = 0.5
    and swaps 86 <-> 87, 93 <-> 94, 166 <-> 167 (pulling/pushing left/right
    and turning the camera left/right).

    Returns:
        list of int, `num_classes` entries.
    """
    out = list(range(num_classes))
    for a, b in swaps:
        out[a], out[b] = b, a
    return out


def choose_augmentations(
    label,
    seed,
    *,
    flip_label_map=None,
    flip_prob=0.5,
    reverse_label_map=None,
    reverse_prob=0.0,
    policy="independent",
):
    """Decides flip and time reversal for one sample and its new label.

    "independent": flip with `flip_prob` where `flip_label_map` allows it,
    then reverse with `reverse_prob` where `reverse_label_map` allows it
    (applied to the flipped label). "uniform" (the 20BN SSv2 baseline):
    choose uniformly among "same" and each augmentation that applies to the
    label (flip if `flip_label_map[label] >= 0`, reverse if
    `reverse_label_map[label] >= 0`, given the maps that are not None).

    Args:
        label: int32 scalar.
        seed: int [2].
        flip_label_map, reverse_label_map: sequences of int or None (see
            `flip_label_lookup`; None: the class keeps its label). A None
            reverse map with reverse_prob 0 means no reversal.
        flip_prob, reverse_prob: floats in [0, 1]; "independent" only.
        policy: "independent" or "uniform". Defaults to "independent".

    Returns:
        (flip bool scalar, reverse bool scalar, label int32 scalar).
    """
    _check_choice(policy, AUGMENT_POLICIES, "augment_policy")
    label = tf.cast(label, tf.int32)
    seed_flip, seed_reverse = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2)
    )
    flip_to = flip_label_lookup(label, flip_label_map)
    if policy == "independent":
        flip = (tf.random.stateless_uniform([], seed_flip) < flip_prob) & (flip_to >= 0)
        label = tf.where(flip, flip_to, label)
        reverse_to = flip_label_lookup(label, reverse_label_map)
        use_reverse = reverse_prob > 0
        reverse = (
            (tf.random.stateless_uniform([], seed_reverse) < reverse_prob)
            & (reverse_to >= 0)
            & use_reverse
        )
        return flip, reverse, tf.where(reverse, reverse_to, label)
    can_flip = flip_to >= 0
    if reverse_label_map is None:
        reverse_to, can_reverse = label, tf.constant(False)
    else:
        reverse_to = flip_label_lookup(label, reverse_label_map)
        can_reverse = reverse_to >= 0
    # Options: 0 = same, 1 = flip (if allowed), 2 = reverse (if allowed).
    count = 1 + tf.cast(can_flip, tf.int32) + tf.cast(can_reverse, tf.int32)
    pick = tf.random.stateless_uniform([], seed_flip, 0, count, dtype=tf.int32)
    flip = can_flip & tf.equal(pick, 1)
    reverse = can_reverse & tf.equal(pick, 1 + tf.cast(can_flip, tf.int32))
    label = tf.where(flip, flip_to, tf.where(reverse, reverse_to, label))
    return flip, reverse, label


def _stateless_beta(seed, alpha):
    """Beta(alpha, alpha) from two stateless gammas."""
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    a = tf.random.stateless_gamma([], seeds[0], alpha=alpha)
    b = tf.random.stateless_gamma([], seeds[1], alpha=alpha)
    return a / tf.maximum(a + b, 1e-12)


def soft_labels(labels, num_classes, label_smoothing=0.0):
    """int (B,) -> float32 (B, num_classes) one-hot, smoothed as timm does:
    off = smoothing / C, on = 1 - smoothing + off."""
    off = label_smoothing / num_classes
    return tf.one_hot(labels, num_classes, on_value=1.0 - label_smoothing + off,
                      off_value=off)


def mix_batch(clips, labels, seed, *, num_classes, mixup_alpha=0.8, cutmix_alpha=1.0,
              switch_prob=0.5, prob=1.0, label_smoothing=0.0):
    """Batch mixup / cutmix (timm's `Mixup` in batch mode), one box for all frames.

    Each clip is mixed with the clip at the mirrored batch position. With
    probability `prob` the batch is mixed; then cutmix is chosen with
    `switch_prob` when both alphas are > 0. Mixup: x = lam x + (1 - lam)
    x_rev. Cutmix: one box of area (1 - lam) H W (centre uniform, clipped to
    the frame) is pasted from x_rev into every frame, and lam is recomputed
    from the clipped area. Labels: lam y + (1 - lam) y_rev of smoothed
    one-hots.

    Args:
        clips: float (B, T, H, W, C).
        labels: int (B,).
        seed: int [2]. Stateless: the same seed mixes the same way.
        num_classes: int.

    Returns:
        (clips float (B, T, H, W, C), soft labels float32 (B, num_classes)).
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        raise ValueError("mix_batch needs `mixup_alpha` or `cutmix_alpha` > 0. Received: "
                         f"mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}")
    s_apply, s_switch, s_lam, s_box = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=4))
    targets = soft_labels(labels, num_classes, label_smoothing)
    rev_clips, rev_targets = tf.reverse(clips, [0]), tf.reverse(targets, [0])
    apply = tf.random.stateless_uniform([], s_apply) < prob
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = tf.random.stateless_uniform([], s_switch) < switch_prob
    else:
        use_cutmix = tf.constant(cutmix_alpha > 0)
    alpha = tf.where(use_cutmix, float(max(cutmix_alpha, 1e-6)), float(max(mixup_alpha, 1e-6)))
    lam = _stateless_beta(s_lam, alpha)

    shape = tf.shape(clips)
    h, w = shape[2], shape[3]
    ratio = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(ratio * tf.cast(h, tf.float32), tf.int32)
    cut_w = tf.cast(ratio * tf.cast(w, tf.float32), tf.int32)
    cy = tf.random.stateless_uniform([], s_box, 0, h, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], s_box + 1, 0, w, dtype=tf.int32)
    y0, y1 = tf.clip_by_value(cy - cut_h // 2, 0, h), tf.clip_by_value(cy + cut_h // 2, 0, h)
    x0, x1 = tf.clip_by_value(cx - cut_w // 2, 0, w), tf.clip_by_value(cx + cut_w // 2, 0, w)
    rows = tf.logical_and(tf.range(h) >= y0, tf.range(h) < y1)
    cols = tf.logical_and(tf.range(w) >= x0, tf.range(w) < x1)
    box = tf.logical_and(rows[:, None], cols[None, :])[None, None, :, :, None]
    box_lam = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / tf.cast(h * w, tf.float32)

    cut = tf.where(box, rev_clips, clips)
    mixed = lam * clips + (1.0 - lam) * rev_clips
    lam = tf.where(use_cutmix, box_lam, lam)
    out_clips = tf.where(use_cutmix, cut, tf.cast(mixed, clips.dtype))
    out_targets = lam * targets + (1.0 - lam) * rev_targets
    out_clips = tf.where(apply, out_clips, clips)
    out_targets = tf.where(apply, out_targets, targets)
    return out_clips, out_targets
