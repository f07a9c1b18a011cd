"""Horizontal flips and time reversal with label maps (SSv2 policies).

A label map says what a class becomes when its clip is flipped (or played
backwards); -1 means the class must never be flipped (reversed).
"""

import tensorflow as tf

from klassterfork.data.transforms.checks import check_choice

AUGMENT_POLICIES = ("independent", "uniform")


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
    check_choice(policy, AUGMENT_POLICIES, "augment_policy")
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
