"""Transforms on `tf.range` "videos" (outputs are indices) and hand-made pixels."""

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.data import transforms as tr


def seed(i):
    return tf.constant([i, 0], tf.int64)


@pytest.mark.parametrize(
    "num_frames,clip_len,step", [(30, 8, 1), (30, 8, 3), (22, 8, 3)]
)
def test_random_clip_indices_cover_every_start(num_frames, clip_len, step):
    span = (clip_len - 1) * step + 1
    starts = set()
    for i in range(200):
        idx = tr.random_clip_indices(
            num_frames, seed(i), clip_len=clip_len, frame_step=step
        ).numpy()
        np.testing.assert_array_equal(idx, idx[0] + step * np.arange(clip_len))
        starts.add(idx[0])
    assert starts == set(range(num_frames - span + 1))  # uniform start, all reached


def test_random_clip_indices_same_seed_same_clip():
    a = tr.random_clip_indices(100, seed(5), clip_len=4).numpy()
    b = tr.random_clip_indices(100, seed(5), clip_len=4).numpy()
    np.testing.assert_array_equal(a, b)


def test_short_videos_repeat_or_loop():
    video = tf.range(5)  # indices are the frames
    repeat = tr.random_clip_indices(5, seed(0), clip_len=4, frame_step=2)
    np.testing.assert_array_equal(tf.gather(video, repeat), [0, 2, 4, 4])
    loop = tr.random_clip_indices(
        5, seed(0), clip_len=4, frame_step=2, short_video="loop"
    )
    np.testing.assert_array_equal(tf.gather(video, loop), [0, 2, 4, 1])
    with pytest.raises(ValueError, match="short_video"):
        tr.fit_indices(tf.range(3), 2, short_video="mirror")


def test_even_clip_indices_hand_computed():
    # T = 100, span 16: room 85, part 42.5 -> starts floor(21.25), floor(63.75).
    idx = tr.even_clip_indices(100, clip_len=16, num_clips=2).numpy()
    np.testing.assert_array_equal(idx[:, 0], [21, 63])
    np.testing.assert_array_equal(idx[1], 63 + np.arange(16))
    # One clip: the centre. T = 32, span (8 - 1) * 2 + 1 = 15: room 18 -> 9.
    np.testing.assert_array_equal(
        tr.even_clip_indices(32, clip_len=8, num_clips=1, frame_step=2)[0],
        9 + 2 * np.arange(8),
    )
    # Short video: every clip from 0, last frame repeated.
    np.testing.assert_array_equal(
        tr.even_clip_indices(3, clip_len=4, num_clips=2), [[0, 1, 2, 2]] * 2
    )


def test_random_crop_window_fixed_and_scaled():
    seen = set()
    for i in range(100):
        y, x, h, w = tr.random_crop_window(
            [48, 64, 3], seed(i), crop_size=32, scale=None
        ).numpy()
        assert (h, w) == (32, 32) and 0 <= y <= 16 and 0 <= x <= 32
        seen.add((y, x))
    assert len(seen) > 50
    sides = []
    for i in range(200):
        y, x, h, w = tr.random_crop_window(
            [100, 150], seed(i), scale=(0.5, 0.9)
        ).numpy()
        assert h == w and 50 <= h <= 90 and y + h <= 100 and x + w <= 150
        sides.append(h)
    assert min(sides) <= 53 and max(sides) >= 87  # the whole range is used
    # Smaller frames than the fixed crop: the window is the short side.
    np.testing.assert_array_equal(
        tr.random_crop_window([20, 30], seed(0), crop_size=32, scale=None)[2:], [20, 20]
    )
    with pytest.raises(ValueError, match="scale"):
        tr.random_crop_window([20, 30], seed(0), scale=(0.9, 0.5))


def test_spatial_crop_windows_hand_computed():
    np.testing.assert_array_equal(
        tr.spatial_crop_windows([128, 171], crop_size=112), [[8, 29, 112, 112]]
    )
    np.testing.assert_array_equal(  # landscape: left / centre / right
        tr.spatial_crop_windows([128, 171], crop_size=112, num_crops=3),
        [[8, 0, 112, 112], [8, 29, 112, 112], [8, 59, 112, 112]],
    )
    np.testing.assert_array_equal(  # portrait: top / centre / bottom
        tr.spatial_crop_windows([171, 128], crop_size=112, num_crops=3),
        [[0, 8, 112, 112], [29, 8, 112, 112], [59, 8, 112, 112]],
    )
    # As if resized to short side 256 first: 224 * 128 / 256 = 112 px.
    np.testing.assert_array_equal(
        tr.spatial_crop_windows([128, 200], crop_size=224, resize_short_side=256),
        [[8, 44, 112, 112]],
    )


def test_resize_keeps_dtype_and_skips_same_size():
    frames = tf.random.uniform([2, 8, 8, 3], 0, 256, tf.int32)
    frames = tf.cast(frames, tf.uint8)
    np.testing.assert_array_equal(tr.resize(frames, crop_size=8), frames)
    # 2x upsample of a constant and of a ramp (bilinear, half-pixel centres).
    ramp = tf.cast(
        tf.tile(tf.reshape(tf.range(0, 200, 50), [1, 1, 4, 1]), [1, 4, 1, 3]), tf.uint8
    )
    out = tr.resize(ramp, crop_size=8)
    assert out.dtype == tf.uint8
    np.testing.assert_array_equal(out[0, 0, :, 0], [0, 12, 38, 62, 88, 112, 138, 150])


def test_crop_and_resize_takes_the_window():
    video = tf.cast(tf.reshape(tf.range(2 * 6 * 6 * 1) % 256, [2, 6, 6, 1]), tf.uint8)
    out = tr.crop_and_resize(video, tf.constant([1, 2, 3, 3]), crop_size=3)
    np.testing.assert_array_equal(out, video[:, 1:4, 2:5])


def test_flip_label_map_and_pixels():
    clip = tf.reshape(tf.range(2 * 1 * 3 * 1), [2, 1, 3, 1])
    table = [1, 0, -1]
    flipped, label, did = tr.random_flip(
        clip, 0, seed(0), flip_label_map=table, prob=1.0
    )
    assert bool(did) and int(label) == 1
    np.testing.assert_array_equal(flipped[:, 0, :, 0], [[2, 1, 0], [5, 4, 3]])
    kept, label, did = tr.random_flip(clip, 2, seed(0), flip_label_map=table, prob=1.0)
    assert not bool(did) and int(label) == 2
    np.testing.assert_array_equal(kept, clip)
    # Labels outside the map (unlabelled -1, or too large) never flip.
    assert int(tr.flip_label_lookup(-1, table)) == -1
    assert int(tr.flip_label_lookup(7, table)) == -1
    assert int(tr.flip_label_lookup(4, None)) == 4
    never = [bool(tr.random_flip(clip, 0, seed(i), prob=0.0)[2]) for i in range(20)]
    assert not any(never)
    rate = np.mean(
        [bool(tr.random_flip(clip, 0, seed(i), prob=0.3)[2]) for i in range(400)]
    )
    assert 0.22 < rate < 0.38


def test_standardize_modes_against_numpy():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (3, 4, 5, 3)).astype(np.uint8)
    x = clip.astype(np.float64)
    np.testing.assert_allclose(tr.standardize(clip, "unit"), x / 255, atol=1e-6)
    np.testing.assert_allclose(
        tr.standardize(clip, "symmetric"), x / 127.5 - 1, atol=1e-6
    )
    frame_mean = x.mean(axis=(1, 2, 3), keepdims=True)
    frame_std = x.std(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(
        tr.standardize(clip, "per_frame"), (x - frame_mean) / frame_std, atol=1e-4
    )
    np.testing.assert_allclose(
        tr.standardize(clip, "per_clip"), (x - x.mean()) / x.std(), atol=1e-4
    )
    batch = np.stack([clip, 255 - clip])
    np.testing.assert_allclose(
        tr.standardize(batch, "per_clip")[1],
        ((255 - x) - (255 - x).mean()) / x.std(),
        atol=1e-4,
    )
    got = tr.standardize(clip, "mean_std", mean=tr.KINETICS_MEAN, std=tr.KINETICS_STD)
    want = (x / 255 - np.array([0.43216, 0.394666, 0.37645])) / np.array(
        [0.22803, 0.22145, 0.216989]
    )
    np.testing.assert_allclose(got, want, atol=1e-5)
    # Constant frame: per_image_standardization's 1/sqrt(N) floor, no NaN.
    flat = tr.standardize(np.full((1, 2, 2, 3), 7, np.uint8), "per_frame")
    np.testing.assert_array_equal(flat, np.zeros((1, 2, 2, 3)))
    assert tr.standardize(x, "none").dtype == tf.uint8


def test_per_frame_matches_per_image_standardization():
    # Our fewer-pass version against TensorFlow's: random frames, a constant
    # one, and one whose std (0.276) is under the 1/sqrt(N) floor (0.289).
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (4, 2, 2, 3)).astype(np.float32)
    frames[1] = 200.0
    frames[2] = 7.0
    frames[2, 0, 0, 0] = 8.0
    frames[3] = rng.normal(120.0, 0.5, (2, 2, 3)).round()
    want = tf.image.per_image_standardization(frames).numpy()
    np.testing.assert_allclose(tr.standardize(frames, "per_frame"), want, atol=2e-6)
    clips = rng.integers(0, 256, (2, 8, 56, 56, 3)).astype(np.uint8)
    want = tf.image.per_image_standardization(tf.cast(clips, tf.float32))
    np.testing.assert_allclose(tr.standardize(clips, "per_frame"), want, atol=2e-6)
    # Frames unknown when traced (one sum of squares for all), and more than
    # the per-frame ops are unrolled for: the same values.
    dynamic = tf.function(lambda x: tr.standardize(x, "per_frame"),
                          input_signature=[tf.TensorSpec([None, 8, 56, 56, 3], tf.uint8)])
    np.testing.assert_allclose(dynamic(clips), want, atol=2e-6)
    many = rng.integers(0, 256, (tr.MAX_UNROLLED_FRAMES + 1, 4, 4, 3)).astype(np.uint8)
    np.testing.assert_allclose(
        tr.standardize(many, "per_frame"),
        tf.image.per_image_standardization(tf.cast(many, tf.float32)), atol=2e-6)


def test_standardize_errors():
    with pytest.raises(ValueError, match="Received: standardize='imagenet'"):
        tr.standardize(tf.zeros([1, 1, 1, 3]), "imagenet")
    with pytest.raises(ValueError, match="needs `mean` and `std`"):
        tr.standardize(tf.zeros([1, 1, 1, 3]), "mean_std")
    with pytest.raises(ValueError, match="only used with"):
        tr.standardize(tf.zeros([1, 1, 1, 3]), "unit", mean=(0.5, 0.5, 0.5))


# --- issue 3: samplers --------------------------------------------------------

SHARED = (
    __import__("pathlib").Path(__file__).resolve().parents[2].parent / "shared" / "data"
)
SSV2 = SHARED / "annotations" / "ssv2"


def test_random_frame_step_and_fractional_steps():
    picks = {float(tr.random_frame_step(seed(i), (1, 2))) for i in range(50)}
    assert picks == {1.0, 2.0}
    # fps x 0.75 = step 4/3: offsets floor(i * 4/3) = 0, 1, 2, 4, 5, 6.
    for i in range(20):
        idx = tr.stepped_clip_indices(40, seed(i), clip_len=6, frame_step=4 / 3).numpy()
        np.testing.assert_array_equal(idx - idx[0], [0, 1, 2, 4, 5, 6])
        assert 0 <= idx[0] <= 40 - 7
    np.testing.assert_array_equal(  # short: the last frame repeats
        tr.stepped_clip_indices(5, seed(0), clip_len=4, frame_step=2.0), [0, 2, 4, 4]
    )
    with pytest.raises(ValueError, match="positive"):
        tr.random_frame_step(seed(0), (1, 0))


def test_segment_indices_eval_is_tsn_centre():
    # TSN _get_test_indices: tick = 100 / 8 = 12.5, int(6.25 + 12.5 i).
    np.testing.assert_array_equal(
        tr.segment_indices(100, num_segments=8), [6, 18, 31, 43, 56, 68, 81, 93]
    )
    # TDN new_length 5: tick = 96 / 8 = 12 -> 6 + 12 i, then 5 frames each.
    idx = tr.segment_indices(100, num_segments=8, new_length=5).numpy().reshape(8, 5)
    np.testing.assert_array_equal(idx[:, 0], 6 + 12 * np.arange(8))
    np.testing.assert_array_equal(idx[3], [42, 43, 44, 45, 46])
    # Two eval clips shift by tick / 4 and 3 tick / 4: 3.125 -> 3, 9.375 -> 9.
    np.testing.assert_array_equal(
        tr.segment_indices(100, num_segments=8, clip=0, num_clips=2)[:2], [3, 15]
    )
    np.testing.assert_array_equal(
        tr.segment_indices(100, num_segments=8, clip=1, num_clips=2)[:2], [9, 21]
    )
    # Short video: snippets run past the end and repeat the last frame.
    np.testing.assert_array_equal(
        tr.segment_indices(3, num_segments=2, new_length=3), [0, 1, 2, 0, 1, 2]
    )


def test_segment_indices_train_one_random_frame_per_segment():
    seen = [set() for _ in range(8)]
    for i in range(300):
        idx = tr.segment_indices(100, seed(i), num_segments=8).numpy()
        for s, value in enumerate(idx):
            assert 12 * s <= value < 12 * s + 12  # duration 100 // 8 = 12
            seen[s].add(value)
    assert all(len(v) == 12 for v in seen)  # every frame of a segment reachable
    # d = 0 and T > num_segments: sorted offsets in [0, T - new_length + 1).
    for i in range(30):
        idx = tr.segment_indices(10, seed(i), num_segments=8, new_length=5).numpy()
        starts = idx.reshape(8, 5)[:, 0]
        assert np.all(np.diff(starts) >= 0) and starts.max() <= 5
    np.testing.assert_array_equal(
        tr.segment_indices(6, seed(0), num_segments=8), [0] * 8
    )


# --- issue 3: crops -----------------------------------------------------------


def test_multi_scale_crop_matches_tsn_candidates():
    # 128 x 171, crop 112: int(128 * s) = 128, 112, 96, 84; pairs |i - j| <= 1.
    sizes = [128, 112, 96, 84]
    want_pairs = {
        (sizes[i], sizes[j]) for i in range(4) for j in range(4) if abs(i - j) <= 1
    }
    pairs = set()
    for i in range(300):
        y, x, h, w = tr.multi_scale_crop_window(
            [128, 171, 3], seed(i), crop_size=112
        ).numpy()
        pairs.add((h, w))
        step_w, step_h = (171 - w) // 4, (128 - h) // 4
        assert x % max(step_w, 1) == 0 and y % max(step_h, 1) == 0
        assert x <= 4 * step_w and y <= 4 * step_h
    assert pairs == want_pairs
    # One scale (0.75 -> 96 x 96): steps (171 - 96) // 4 = 18, (128 - 96) // 4 = 8.
    # TSN `fill_fix_offset(more_fix_crop=True, 171, 128, 96, 96)`, written out
    # in pixels (x, y) from the reference's 13 appends, in its order: corners
    # UL, UR, LL, LR, centre; centre-left, centre-right, lower-centre,
    # upper-centre; quarters UL, UR, LL, LR.
    tsn = [(0, 0), (72, 0), (0, 32), (72, 32), (36, 16),
           (0, 16), (72, 16), (36, 32), (36, 0),
           (18, 8), (54, 8), (18, 24), (54, 24)]
    counts = {}
    for i in range(300):
        y, x, h, w = tr.multi_scale_crop_window(
            [128, 171], seed(i), crop_size=112, scales=(0.75,)
        ).numpy()
        assert (h, w) == (96, 96)
        counts[int(x), int(y)] = counts.get((int(x), int(y)), 0) + 1
    assert sorted(counts) == sorted(tsn)  # the 13 TSN positions, all reached
    assert min(counts.values()) >= 8  # uniform: 300 / 13 = 23 each (sd 4.6)
    # Within 3 px of the crop size snaps to it: int(114 * .875) = 99 -> 112? no;
    # int(128 * .875) = 112 exactly; 130 -> 113 snaps to 112.
    h_set = {
        int(tr.multi_scale_crop_window([130, 200], seed(i), crop_size=112)[2])
        for i in range(200)
    }
    assert h_set == {130, 112, 97, 85}


def test_random_resized_crop_ranges_and_fallback():
    for i in range(100):
        y, x, h, w = tr.random_resized_crop_window([120, 160], seed(i)).numpy()
        assert 0 <= y and y + h <= 120 and 0 <= x and x + w <= 160
        assert 0.08 * 0.9 <= h * w / (120 * 160) <= 1.0
        assert 0.75 * 0.9 <= w / h <= 4 / 3 * 1.1
    # 10 x 1000: no window of >= 8 % area fits -> centre crop, w = 10 * 4/3.
    np.testing.assert_array_equal(
        tr.random_resized_crop_window([10, 1000], seed(0)), [0, 493, 10, 13]
    )


# --- issue 3: SSv2 flip / reverse policies on the real files ---------------------


@pytest.fixture(scope="module")
def ssv2_maps():
    mappings = SSV2 / "augmentation_mappings.json"
    if not mappings.exists():
        pytest.skip("../shared/data is absent")
    return tr.load_ssv2_label_maps(
        mappings, SSV2 / "something-something-v2-labels.json"
    )


def test_ssv2_label_maps_from_the_real_file(ssv2_maps):
    flip = ssv2_maps["flip_label_map"]
    assert len(flip) == 174
    for a, b in ((86, 87), (93, 94), (166, 167)):  # left/right pairs
        assert flip[a] == b and flip[b] == a
    assert flip[0] == 0  # "Approaching something with your camera": agnostic
    # In neither list (Digging something out of ..., Moving something and
    # something closer ...): never flipped.
    assert [i for i, v in enumerate(flip) if v == -1] == [7, 37]
    assert sum(v == i for i, v in enumerate(flip)) == 166
    rev = ssv2_maps["reverse_label_map"]
    assert rev[5] == 46 and rev[46] == 5  # Closing <-> Opening something
    assert rev[1] == -1  # "Attaching ...": reverse time false class
    holding = 16  # "Holding something": reverse time agnostic
    assert rev[holding] == holding
    assert sum(v >= 0 for v in rev) == 35 + 37


def test_tdn_policy_flips_half_and_swaps_three_pairs():
    table = tr.tdn_flip_label_map()
    assert [table[i] for i in (86, 87, 93, 94, 166, 167)] == [87, 86, 94, 93, 167, 166]
    assert sum(v != i for i, v in enumerate(table)) == 6
    flips = []
    for i in range(400):
        flip, rev, label = tr.choose_augmentations(
            86, seed(i), flip_label_map=table, flip_prob=0.5
        )
        flips.append(bool(flip))
        assert not bool(rev)
        assert int(label) == (87 if bool(flip) else 86)
    assert 0.42 < np.mean(flips) < 0.58


def test_baseline_policy_uniform_over_applicable(ssv2_maps):
    def rates(label, with_reverse):
        outcomes = []
        for i in range(600):
            flip, rev, new = tr.choose_augmentations(
                label,
                seed(i),
                flip_label_map=ssv2_maps["flip_label_map"],
                reverse_label_map=ssv2_maps["reverse_label_map"]
                if with_reverse
                else None,
                policy="uniform",
            )
            outcomes.append((bool(flip), bool(rev), int(new)))
        return outcomes

    # 86 "Pulling something from left to right": flip -> 87; reverse -> 94.
    out = rates(86, with_reverse=True)
    counts = {o: out.count(o) for o in set(out)}
    assert set(counts) == {(False, False, 86), (True, False, 87), (False, True, 94)}
    assert all(150 < c < 250 for c in counts.values())  # 1/3 each
    # Flip-only baseline: agnostic class 0 flips half the time, label kept.
    out = rates(0, with_reverse=False)
    assert {o[2] for o in out} == {0} and 0.42 < np.mean([o[0] for o in out]) < 0.58
    # A class in neither flip list never flips.
    never = ssv2_maps["flip_label_map"].index(-1)
    assert not any(o[0] for o in rates(never, with_reverse=False))


# ---- mixup / cutmix -------------------------------------------------------------------


def _mix_inputs():
    clips = tf.reshape(tf.range(4 * 2 * 6 * 8 * 1, dtype=tf.float32), (4, 2, 6, 8, 1))
    return clips, tf.constant([0, 1, 2, 1])


def test_mixup_matches_the_formula():
    from klassterfork.data.transforms import mix_batch, soft_labels

    clips, labels = _mix_inputs()
    out, y = mix_batch(clips, labels, tf.constant([3, 4], tf.int64), num_classes=3,
                       mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1)
    x, xr = clips.numpy(), clips.numpy()[::-1]
    # Recover lam from one pixel, then every pixel and label must obey it.
    lam = (out.numpy()[0, 0, 0, 1, 0] - xr[0, 0, 0, 1, 0]) / (x[0, 0, 0, 1, 0] - xr[0, 0, 0, 1, 0])
    assert 0.0 < lam < 1.0
    np.testing.assert_allclose(out.numpy(), lam * x + (1 - lam) * xr, rtol=1e-5, atol=1e-3)
    t = soft_labels(labels, 3, 0.1).numpy()
    np.testing.assert_allclose(t[0], [1 - 0.1 + 0.1 / 3, 0.1 / 3, 0.1 / 3], rtol=1e-6)
    np.testing.assert_allclose(y.numpy(), lam * t + (1 - lam) * t[::-1], rtol=1e-5)
    np.testing.assert_allclose(y.numpy().sum(-1), 1.0, rtol=1e-6)


def test_cutmix_pastes_one_box_on_every_frame_and_weights_labels_by_area():
    from klassterfork.data.transforms import mix_batch

    clips, labels = _mix_inputs()
    for s in range(6):
        out, y = mix_batch(clips, labels, tf.constant([s, 9], tf.int64), num_classes=3,
                           mixup_alpha=0.0, cutmix_alpha=1.0)
        x, xr, o = clips.numpy(), clips.numpy()[::-1], out.numpy()
        from_rev = (o == xr) & (x != xr)
        box = from_rev[0, 0, :, :, 0]
        for b in range(4):  # the same box in every clip and frame
            for t in range(2):
                differs = x[b, t, :, :, 0] != xr[b, t, :, :, 0]
                np.testing.assert_array_equal(from_rev[b, t, :, :, 0], box & differs)
        area = box.mean()
        lam = 1.0 - area
        one = np.eye(3)[labels.numpy()]
        np.testing.assert_allclose(y.numpy(), lam * one + (1 - lam) * one[::-1], atol=1e-6)
        if area:  # the box is a rectangle
            rows, cols = np.nonzero(box)
            assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()


def test_mixing_is_seeded_and_train_dataset_yields_soft_labels(tmp_path):
    from klassterfork.data.transforms import mix_batch

    clips, labels = _mix_inputs()
    a = mix_batch(clips, labels, tf.constant([1, 2], tf.int64), num_classes=3)
    b = mix_batch(clips, labels, tf.constant([1, 2], tf.int64), num_classes=3)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    with pytest.raises(ValueError, match="mixup_alpha"):
        mix_batch(clips, labels, tf.constant([1, 2], tf.int64), num_classes=3,
                  mixup_alpha=0.0, cutmix_alpha=0.0)


def test_mixup_of_uint8_clips_rounds_the_float_blend():
    from klassterfork.data.transforms import mix_batch

    clips, labels = _mix_inputs()
    clips8 = tf.cast(clips % 256, tf.uint8)
    key = tf.constant([3, 4], tf.int64)
    out8, y8 = mix_batch(clips8, labels, key, num_classes=3, mixup_alpha=0.8, cutmix_alpha=0.0)
    out, y = mix_batch(tf.cast(clips8, tf.float32), labels, key, num_classes=3,
                       mixup_alpha=0.8, cutmix_alpha=0.0)
    assert out8.dtype == tf.uint8
    np.testing.assert_array_equal(out8.numpy(), np.round(out.numpy()).astype(np.uint8))
    np.testing.assert_allclose(y8.numpy(), y.numpy())


def _mix_draws(n, **kwargs):
    """(applied, cutmix, lam) of `n` seeded `mix_batch` draws on a 4-clip batch
    of distinct 32 x 32 frames. lam is read from the soft label of clip 0
    (class 0, mixed with clip 3 of class 1): y[0, 0] = lam. Mixup blends
    every pixel; cutmix copies a box from the mirrored clip."""
    from klassterfork.data.transforms import mix_batch

    clips = tf.reshape(tf.range(4 * 32 * 32, dtype=tf.float32), (4, 1, 32, 32, 1))
    labels = tf.constant([0, 1, 2, 1])
    draw = tf.function(lambda key: mix_batch(clips, labels, key, num_classes=3, **kwargs))
    x, xr = clips.numpy(), clips.numpy()[::-1]
    applied, cutmix, lam = [], [], []
    for i in range(n):
        out, y = (a.numpy() for a in draw(tf.constant([i, 77], tf.int64)))
        copied = (out == xr) & (x != xr)
        blended = (out != x) & ~copied
        applied.append(bool(copied.any() or blended.any()))
        cutmix.append(bool(copied.any() and not blended.any()))
        lam.append(float(y[0, 0]))
    return np.array(applied), np.array(cutmix), np.array(lam)


@pytest.mark.parametrize("alpha", [0.2, 0.8])
def test_mixup_lambda_is_beta_alpha_alpha(alpha):
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)) = 0.1786 (a = .2),
    # 0.0962 (a = .8). 1500 draws: standard errors <= 0.011 (mean) and
    # <= 0.004 (variance); Beta(1, 1) would give variance 0.0833.
    # (At a = .2 some lam round to 0 or 1 in float32, so not every batch
    # visibly changes; none is a cutmix.)
    applied, cutmix, lam = _mix_draws(1500, mixup_alpha=alpha, cutmix_alpha=0.0)
    assert applied.mean() > 0.9 and not cutmix.any()
    assert 0.0 <= lam.min() and lam.max() <= 1.0
    assert abs(lam.mean() - 0.5) <= 0.035
    assert abs(lam.var() - 1.0 / (4 * (2 * alpha + 1))) <= 0.012


def test_mix_prob_and_switch_prob_rates():
    # prob .3 of mixing a batch; of those, cutmix with switch_prob .25.
    # 2000 draws: 600 +- 20 mixed (sd), 150 +- 11 of them cutmix.
    applied, cutmix, lam = _mix_draws(2000, mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.3,
                                      switch_prob=0.25)
    assert abs(applied.mean() - 0.3) <= 0.04
    assert abs(cutmix[applied].mean() - 0.25) <= 0.06
    assert (lam[~applied] == 1.0).all()  # an unmixed batch keeps its one-hots
    # Cutmix's lam is 1 - the clipped box's area share (timm `rand_bbox`):
    # numpy Monte Carlo of lam ~ Beta(1, 1), side int(sqrt(1 - lam) * 32),
    # centre uniform in [0, 32), clipped to the frame.
    rng = np.random.default_rng(0)
    lam0 = rng.beta(1.0, 1.0, 200_000)
    cut = (np.sqrt(1 - lam0) * 32).astype(int)
    cy, cx = rng.integers(0, 32, (2, lam0.size))
    side_y = np.clip(cy + cut // 2, 0, 32) - np.clip(cy - cut // 2, 0, 32)
    side_x = np.clip(cx + cut // 2, 0, 32) - np.clip(cx - cut // 2, 0, 32)
    want = np.mean(1 - side_y * side_x / 1024)
    assert abs(lam[cutmix].mean() - want) <= 0.05, (lam[cutmix].mean(), want)
