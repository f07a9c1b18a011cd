"""RandAugment and random erasing inside `train_dataset`: the clip, crop and
flip draws stay those of the plain pipeline, and the augmentation is the one
`augment` defines (checked with ops whose result is known exactly)."""

import numpy as np
import pytest

from klassterfork.data import pipeline
from tests.data.test_pipeline import shards  # noqa: F401  (fixture)

ARGS = dict(clip_len=4, crop_size=32, batch_size=3, seed=5, shuffle_buffer=4)


def first_batch(ds):
    clips, labels = next(iter(ds))
    return clips.numpy(), labels.numpy()


def test_rand_augment_invert_on_every_frame_keeps_the_other_draws(shards):  # noqa: F811
    plain, labels = first_batch(pipeline.train_dataset(shards, standardize="none", **ARGS))
    inverted, labels2 = first_batch(pipeline.train_dataset(
        shards, standardize="none",
        rand_augment={"num_layers": 1, "prob": 1.0, "ops": ["Invert"]}, **ARGS))
    np.testing.assert_array_equal(labels, labels2)
    np.testing.assert_array_equal(inverted, 255 - plain)


def test_rand_augment_draws_one_op_per_clip_for_all_frames(shards):  # noqa: F811
    # Solarize at a fixed magnitude: a clip is either solarized in every frame
    # (pixels >= threshold inverted) or not at all; both occur over clips.
    ops = {"num_layers": 1, "prob": 0.5, "magnitude": 5, "magnitude_std": 0,
           "ops": ["Solarize"]}
    args = {**ARGS, "batch_size": 12}
    plain, _ = first_batch(pipeline.train_dataset(shards, standardize="none", **args))
    aug, _ = first_batch(pipeline.train_dataset(
        shards, standardize="none", rand_augment=ops, **args))
    threshold = int(5 / 10 * 256)  # timm: int(level / 10 * 256) = 128
    solarized = np.where(plain >= threshold, 255 - plain, plain)
    states = []
    for b in range(len(plain)):
        if np.array_equal(aug[b], plain[b]):
            states.append("same")
        else:
            np.testing.assert_array_equal(aug[b], solarized[b])
            states.append("solarized")
    assert set(states) == {"same", "solarized"}, states


def test_random_erasing_const_box_is_one_rectangle_on_all_frames(shards):  # noqa: F811
    plain, _ = first_batch(pipeline.train_dataset(shards, standardize="unit", **ARGS))
    erased, _ = first_batch(pipeline.train_dataset(
        shards, standardize="unit", random_erasing={"prob": 1.0, "mode": "const"}, **ARGS))
    for b in range(len(plain)):
        changed = (erased[b] != plain[b]).any(axis=-1)  # (T, H, W)
        box = changed[0]
        assert box.any()
        for t in range(1, len(changed)):
            np.testing.assert_array_equal(changed[t] | box, box)
        rows, cols = np.nonzero(box)
        inside = erased[b][:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        np.testing.assert_array_equal(inside, 0.0)
        outside = np.ones(box.shape, bool)
        outside[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = False
        np.testing.assert_array_equal(erased[b][:, outside], plain[b][:, outside])


def test_augment_options_are_checked(shards):  # noqa: F811
    with pytest.raises(ValueError, match="RGB clips only"):
        pipeline.train_dataset(shards, modality="flow", rand_augment={}, **ARGS)
    with pytest.raises(ValueError, match="standardize='none'"):
        pipeline.train_dataset(shards, standardize="none", random_erasing={}, **ARGS)
    with pytest.raises(ValueError, match="rand_augment.ops"):
        pipeline.train_dataset(shards, rand_augment={"ops": "strong"}, **ARGS)
    with pytest.raises(ValueError, match="rand_augment"):
        pipeline.train_dataset(shards, rand_augment={"magnitudes": 3}, **ARGS)
    with pytest.raises(ValueError, match="random_erasing"):
        pipeline.train_dataset(shards, random_erasing=0.25, **ARGS)


def test_uint8_mixup_through_the_pipeline(shards):  # noqa: F811
    clips, labels = first_batch(pipeline.train_dataset(
        shards, standardize="none", mixup_alpha=0.8, num_classes=3, **ARGS))
    assert clips.dtype == np.uint8 and labels.shape == (3, 3)
    np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-6)
