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

from klassterfork.data.transforms.augment_ops import (  # noqa: F401
    DEFAULT_OPS,
    FILL,
    INCREASING_OPS,
    LEVEL_DENOM,
    OPS,
    _check_clip,
    affine,
    auto_contrast,
    brightness,
    color,
    contrast,
    equalize,
    invert,
    posterize,
    rotate,
    sharpness,
    shear_x,
    shear_y,
    solarize,
    solarize_add,
    translate_x,
    translate_y,
)


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
    mag = tf.clip_by_value(mag, 0.0, LEVEL_DENOM)
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
    if not 0 <= magnitude <= LEVEL_DENOM:
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
    clips = _check_erasing_args(clips, mode=mode, prob=prob, max_count=max_count)
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num=8))
    shape = tf.shape(clips)
    b = shape[0]
    boxes = _erasing_boxes(seeds, b, shape[2], shape[3], prob=prob, area=area,
                           aspect=aspect, max_count=max_count,
                           max_attempts=max_attempts)

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


def _check_erasing_args(clips, *, mode, prob, max_count):
    """`clips` as a tensor, after checking the `random_erasing` arguments."""
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
    return clips


def _erasing_boxes(seeds, b, h_img, w_img, *, prob, area, aspect, max_count,
                   max_attempts):
    """The boxes of `random_erasing`, drawn from `seeds[0:6]`.

    Returns:
        int32 (B, max_count, 5): top, left, h, w, enabled (0 or 1).
    """
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
    return tf.stack([top, left, h, w, tf.cast(enabled, tf.int32)], -1)


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
