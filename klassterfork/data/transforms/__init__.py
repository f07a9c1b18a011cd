"""Clip transforms: the one import for sampling, crops, flips, mixing and
standardization.

Pure tensor functions with shape contracts (the dmvr / mmaction2 way): they
know nothing about record keys; `data/pipeline.py` wires them. They live in
modules by role and are re-exported here, so `transforms.<name>` is the
stable spelling for configs, the pipeline and users:

- `sampling`: frame indices of a clip (random, evenly spaced, fps jitter,
  TSN segments).
- `crops`: crop windows `[y, x, h, w]` (random, multi-scale, random-resized,
  centre / three crops) and resizing.
- `label_maps`: flips and time reversal with label maps (SSv2 policies).
- `mixing`: batch mixup / cutmix with soft labels.
- `augment`: RandAugment applied alike to every frame, random erasing.
- this module: standardization.

All randomness is stateless: every random function takes an int `seed` of
shape [2] and the same seed gives the same result. Shapes: `(T, H, W, C)` is
one clip, `T` frames in time order.
"""

import tensorflow as tf

from klassterfork.data.transforms.checks import check_choice
from klassterfork.data.transforms.crops import (  # noqa: F401
    FIXED_OFFSETS,
    MULTI_SCALES,
    check_scale,
    crop_and_resize,
    multi_scale_crop_window,
    random_crop_window,
    random_resized_crop_window,
    resize,
    spatial_crop_windows,
)
from klassterfork.data.transforms.label_maps import (  # noqa: F401
    AUGMENT_POLICIES,
    choose_augmentations,
    flip_label_lookup,
    load_ssv2_label_maps,
    random_flip,
    tdn_flip_label_map,
)
from klassterfork.data.transforms.mixing import mix_batch, soft_labels  # noqa: F401
from klassterfork.data.transforms.sampling import (  # noqa: F401
    SHORT_VIDEO_MODES,
    even_clip_indices,
    fit_indices,
    random_clip_indices,
    random_frame_step,
    segment_indices,
    stepped_clip_indices,
    train_clip_indices,
)

# Above this many frames (a big static batch of clips) per-frame sums of
# squares are one reduction, not one op per frame.
MAX_UNROLLED_FRAMES = 256
STANDARDIZE_MODES = ("per_frame", "per_clip", "mean_std", "unit", "symmetric", "none")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def _per_frame_standardization(frames):
    """`tf.image.per_image_standardization` of float [..., H, W, C] frames.

    The same formula, (x - mean) / max(std, 1 / sqrt(N)), in fewer passes:
    TF's version computes the mean twice and |x - mean| before squaring.
    With a static number of frames (a clip), each frame's sum of squares is
    one `l2_loss` over a view of it, not a reduction of a squared copy of
    the clip (0.51 -> 0.47 ms CPU per 16x112^2 clip; BENCHMARKS.md). Agrees
    with TF's to ~1e-6 (tested).
    """
    axes = [-3, -2, -1]
    shape = tf.shape(frames)
    count = tf.cast(tf.reduce_prod(shape[-3:]), tf.float32)
    centred = frames - tf.reduce_mean(frames, axis=axes, keepdims=True)
    leading = frames.shape[:-3]
    if leading.is_fully_defined() and 0 < leading.num_elements() <= MAX_UNROLLED_FRAMES:
        num = leading.num_elements()
        views = tf.unstack(tf.reshape(centred, tf.concat([[num], shape[-3:]], 0)), num=num)
        squares = tf.stack([tf.nn.l2_loss(view) for view in views]) * 2.0
        variance = tf.reshape(squares / count, leading.as_list() + [1, 1, 1])
    else:
        variance = tf.reduce_mean(tf.square(centred), axis=axes, keepdims=True)
    # 1 / max(std, 1/sqrt(N)) = min(1/std, sqrt(N)); rsqrt(0) = inf.
    return centred * tf.minimum(tf.math.rsqrt(variance), tf.sqrt(count))


def check_standardize(mode, mean=None, std=None):
    """Raises ValueError unless `standardize(clip, mode, mean=, std=)` can
    run (pure Python: usable before TensorFlow's runtime starts)."""
    check_choice(mode, STANDARDIZE_MODES, "standardize")
    if mode != "mean_std" and (mean is not None or std is not None):
        raise ValueError(
            "`mean` and `std` are only used with standardize='mean_std'. "
            f"Received: standardize={mode!r}, mean={mean!r}, std={std!r}"
        )
    if mode != "mean_std":
        return
    if mean is None or std is None:
        raise ValueError(
            "standardize='mean_std' needs `mean` and `std` (per channel, in [0, 1] "
            f"units, e.g. KINETICS_MEAN / KINETICS_STD). Received: mean={mean!r}, "
            f"std={std!r}"
        )
    if min(std) <= 0:
        raise ValueError(f"`std` must be positive. Received: std={std!r}")


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
    check_standardize(mode, mean, std)
    if mode == "none":
        clip = tf.convert_to_tensor(clip)
        if clip.dtype == tf.uint8:
            return clip
        return tf.cast(
            tf.clip_by_value(tf.round(tf.cast(clip, tf.float32)), 0, 255), tf.uint8
        )
    clip = tf.cast(clip, tf.float32)
    if mode == "per_frame":
        return _per_frame_standardization(clip)
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
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    return (clip / 255.0 - mean) / std
