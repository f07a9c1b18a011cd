"""Batch-level mixup / cutmix with soft labels (timm's `Mixup`, batch mode)."""

import tensorflow as tf


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
        clips: float or uint8 (B, T, H, W, C).
        labels: int (B,).
        seed: int [2]. Stateless: the same seed mixes the same way.
        num_classes: int.

    Returns:
        (clips (B, T, H, W, C) of the input dtype, soft labels float32
        (B, num_classes)). uint8 clips are mixed in float and rounded.
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
    mixed = lam * tf.cast(clips, tf.float32) + (1.0 - lam) * tf.cast(rev_clips, tf.float32)
    if clips.dtype.is_integer:  # uint8 clips for a model that standardizes
        mixed = tf.round(mixed)
    lam = tf.where(use_cutmix, box_lam, lam)
    out_clips = tf.where(use_cutmix, cut, tf.cast(mixed, clips.dtype))
    out_targets = lam * targets + (1.0 - lam) * rev_targets
    out_clips = tf.where(apply, out_clips, clips)
    out_targets = tf.where(apply, out_targets, targets)
    return out_clips, out_targets
