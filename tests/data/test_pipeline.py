"""Pipelines on real records whose pixels encode (frame, x, y).

Frame t of a test video has R = 4 * x, G = 5 * y, B = 5 * t (JPEG quality
100, no chroma subsampling), so a decoded pixel tells where it came from:
crop offsets, flips and frame indices are read back from the values.
"""

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.data import pipeline, records

H, W = 48, 64  # landscape frames
TOL = 6.0  # JPEG error (colour conversion at quality 100), in pixel levels


def frame(t, height=H, width=W):
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([4 * x, 5 * y, np.full_like(x, 5 * t)], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def jpeg(image):
    return tf.io.encode_jpeg(image, quality=100, chroma_downsampling=False).numpy()


def video_record(video_id, num_frames, label, *, bad=(), height=H, width=W):
    frames = [
        b"not a jpeg" if t in bad else jpeg(frame(t, height, width))
        for t in range(num_frames)
    ]
    return records.write(
        video_id=video_id,
        frames=frames,
        labels=[label],
        fps=12.0,
        height=height,
        width=width,
    )


def write_shards(directory, videos, num_shards=2):
    """videos: list of record bytes; returns the shard paths."""
    paths = []
    for s in range(num_shards):
        path = str(directory / records.shard_name("train", s, num_shards))
        with tf.io.TFRecordWriter(path) as writer:
            for v in videos[s::num_shards]:
                writer.write(v)
        paths.append(path)
    return paths


@pytest.fixture
def shards(tmp_path):
    videos = [video_record(f"v{i}", 20 + i, i % 3) for i in range(6)]
    return write_shards(tmp_path, videos)


def take(ds, n):
    return [tuple(x.numpy() for x in batch) for batch in ds.take(n)]


def frame_index(clip):
    """clip: [T, h, w, 3] in [0, 255] -> the frame index of each frame."""
    return np.round(clip[..., 2].mean(axis=(1, 2)) / 5).astype(int)


def window_offset(image):
    """image: [h, w, 3] of an unresized crop -> (y0, x0), from every pixel."""
    ii, jj = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    return (
        round(np.mean(image[..., 1] / 5 - ii)),
        round(np.mean(image[..., 0] / 4 - jj)),
    )


def test_train_shapes_dtypes_and_ranges(shards):
    ds = pipeline.train_dataset(
        shards, clip_len=4, crop_size=24, batch_size=3, seed=1, standardize="unit"
    )
    assert ds.element_spec[0].shape == (3, 4, 24, 24, 3)
    assert ds.element_spec[0].dtype == tf.float32
    assert ds.element_spec[1].shape == (3,) and ds.element_spec[1].dtype == tf.int32
    for clips, labels in take(ds, 4):
        assert clips.min() >= 0.0 and clips.max() <= 1.0 and clips.max() > 0.5
        assert set(labels) <= {0, 1, 2}
    per_frame = pipeline.train_dataset(
        shards, clip_len=4, crop_size=24, batch_size=2, seed=1
    )
    clips, _ = take(per_frame, 1)[0]
    np.testing.assert_allclose(clips.mean(axis=(2, 3, 4)), 0.0, atol=1e-4)
    np.testing.assert_allclose(clips.std(axis=(2, 3, 4)), 1.0, atol=1e-3)


def test_fixed_crop_same_window_on_every_frame(shards):
    ds = pipeline.train_dataset(
        shards,
        clip_len=5,
        crop_size=32,
        batch_size=4,
        seed=3,
        crop_scale=None,
        flip_prob=0.0,
        frame_step=2,
        standardize="none",
    )
    offsets = set()
    for clips, _ in take(ds, 6):
        assert clips.dtype == np.uint8
        for clip in clips.astype(np.float64):
            jj, ii = np.meshgrid(np.arange(32), np.arange(32))
            # Offsets from all 1024 pixels: exact despite JPEG noise.
            x0 = round(np.mean(clip[0, ..., 0] / 4 - jj))
            y0 = round(np.mean(clip[0, ..., 1] / 5 - ii))
            offsets.add((y0, x0))
            assert 0 <= x0 <= W - 32 and 0 <= y0 <= H - 32
            for t in range(5):  # every frame: the same window
                assert round(np.mean(clip[t, ..., 0] / 4 - jj)) == x0
                assert round(np.mean(clip[t, ..., 1] / 5 - ii)) == y0
                np.testing.assert_allclose(clip[t, ..., 0], 4 * (x0 + jj), atol=TOL)
                np.testing.assert_allclose(clip[t, ..., 1], 5 * (y0 + ii), atol=TOL)
            steps = np.diff(frame_index(clip))
            np.testing.assert_array_equal(steps, 2)
    assert len(offsets) > 5  # the window is random from clip to clip


def test_scaled_crop_same_window_on_every_frame(shards):
    ds = pipeline.train_dataset(
        shards,
        clip_len=4,
        crop_size=16,
        batch_size=4,
        seed=5,
        crop_scale=(0.5, 1.0),
        flip_prob=0.0,
        standardize="unit",
    )
    sides = set()
    for clips, _ in take(ds, 4):
        clips = clips * 255.0
        for clip in clips:
            # Bilinear resizing keeps a linear ramp linear: slope = side / 16.
            first = np.broadcast_to(clip[:1, ..., :2], clip[..., :2].shape)
            np.testing.assert_allclose(clip[..., :2], first, atol=TOL)
            # A window 1 px off would move the mean of R by 4 or of G by 5.
            means = clip[..., :2].mean(axis=(1, 2))
            np.testing.assert_allclose(
                means, np.broadcast_to(means[:1], means.shape), atol=1.0
            )
            slope_x = (clip[:, :, -1, 0] - clip[:, :, 0, 0]).mean() / 4 / 15
            side = slope_x * 16
            assert 0.5 * H - 2 <= side <= H + 1
            sides.add(round(side))
    assert len(sides) > 3


def test_flip_swaps_labels_by_map_and_mirrors(tmp_path):
    videos = [video_record(f"v{c}", 10, c) for c in range(3)]
    paths = write_shards(tmp_path, videos, num_shards=1)
    ds = pipeline.train_dataset(
        paths,
        clip_len=2,
        crop_size=32,
        batch_size=3,
        seed=0,
        crop_scale=None,
        flip_prob=1.0,
        flip_label_map=[1, 0, -1],
        standardize="none",
        shuffle_buffer=0,
    )
    clips, labels = take(ds, 1)[0]
    clips = clips.astype(np.float64)
    # Unshuffled single shard: videos 0, 1, 2 in order; 0 <-> 1, 2 never flips.
    np.testing.assert_array_equal(labels, [1, 0, 2])
    ramp = np.diff(clips[..., 0], axis=-1).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(ramp, [-4, -4, 4], atol=0.5)  # R = 4x mirrored


def test_flip_probability_half(shards):
    ds = pipeline.train_dataset(
        shards,
        clip_len=1,
        crop_size=16,
        batch_size=50,
        seed=2,
        flip_prob=0.5,
        standardize="unit",
    )
    clips, _ = take(ds, 1)[0]
    mirrored = np.diff(clips[..., 0], axis=-1).mean(axis=(1, 2, 3)) < 0
    assert 12 <= mirrored.sum() <= 38  # Binomial(50, .5): P(outside) < 1e-3


def test_same_seed_same_batches_different_seed_different(shards):
    def run(seed):
        return take(
            pipeline.train_dataset(
                shards, clip_len=3, crop_size=16, batch_size=4, seed=seed
            ),
            5,
        )

    a, b, c = run(7), run(7), run(8)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_short_video_repeats_last_frame(tmp_path):
    paths = write_shards(tmp_path, [video_record("short", 3, 0)], num_shards=1)
    ds = pipeline.train_dataset(
        paths, clip_len=6, crop_size=16, batch_size=2, seed=0, standardize="none"
    )
    for clips, _ in take(ds, 2):
        for clip in clips.astype(np.float64):
            np.testing.assert_array_equal(frame_index(clip), [0, 1, 2, 2, 2, 2])
    loop = pipeline.train_dataset(
        paths,
        clip_len=6,
        crop_size=16,
        batch_size=1,
        seed=0,
        standardize="none",
        short_video="loop",
    )
    clip = take(loop, 1)[0][0][0].astype(np.float64)
    np.testing.assert_array_equal(frame_index(clip), [0, 1, 2, 0, 1, 2])


def test_only_the_clip_frames_are_decoded(tmp_path):
    # span (4 - 1) * 2 + 1 = 7 = T: the only clip is frames 0, 2, 4, 6.
    record = video_record("holes", 7, 1, bad={1, 3, 5})
    paths = write_shards(tmp_path, [record], num_shards=1)
    ds = pipeline.train_dataset(
        paths,
        clip_len=4,
        frame_step=2,
        crop_size=16,
        batch_size=2,
        seed=0,
        standardize="none",
    )
    clips, labels = take(ds, 1)[0]
    np.testing.assert_array_equal(frame_index(clips[0].astype(float)), [0, 2, 4, 6])
    np.testing.assert_array_equal(labels, [1, 1])
    # The naive way (decode every frame) fails on the same record.
    with pytest.raises(tf.errors.InvalidArgumentError):
        frames = records.parse(record)["frames"]
        tf.map_fn(tf.io.decode_jpeg, frames, fn_output_signature=tf.uint8)


def test_iterator_checkpoint_resumes_exactly(shards, tmp_path):
    def make():
        return pipeline.train_dataset(
            shards, clip_len=3, crop_size=16, batch_size=2, seed=11, shuffle_buffer=4
        )

    it = iter(make())
    for _ in range(3):
        next(it)
    ckpt = tf.train.Checkpoint(iterator=it)
    path = ckpt.write(str(tmp_path / "ckpt" / "it"))
    expected = [tuple(x.numpy() for x in next(it)) for _ in range(4)]

    fresh = iter(make())
    tf.train.Checkpoint(iterator=fresh).read(path).assert_consumed()
    got = [tuple(x.numpy() for x in next(fresh)) for _ in range(4)]
    for (xe, ye), (xg, yg) in zip(expected, got):
        np.testing.assert_array_equal(xe, xg)
        np.testing.assert_array_equal(ye, yg)
    restart = [tuple(x.numpy() for x in b) for b in make().take(4)]
    assert not np.array_equal(restart[0][0], expected[0][0])


def test_eval_clips_evenly_spaced_and_three_crops(tmp_path):
    videos = [video_record(f"e{i}", 50, i) for i in range(5)]
    paths = write_shards(tmp_path, videos, num_shards=1)
    ds = pipeline.eval_dataset(
        paths,
        clip_len=4,
        crop_size=32,
        num_clips=3,
        num_crops=3,
        batch_size=2,
        standardize="unit",
        with_ids=True,
    )
    batches = take(ds, 10)
    assert [len(b[1]) for b in batches] == [2, 2, 1]  # the partial batch is kept
    clips, labels, ids = (np.concatenate(parts) for parts in zip(*batches))
    assert clips.shape == (5, 9, 4, 32, 32, 3)
    np.testing.assert_array_equal(labels, [0, 1, 2, 3, 4])
    assert [i.decode() for i in ids] == ["e0", "e1", "e2", "e3", "e4"]
    # room = 50 - 4 + 1 = 47, part = 47 / 3: starts floor(47/3 * (i + .5)).
    starts = [7, 23, 39]
    clips = clips * 255.0
    for v in range(9):
        clip, crop = divmod(v, 3)
        np.testing.assert_array_equal(
            frame_index(clips[0, v]), starts[clip] + np.arange(4)
        )
        # Landscape 64x48, side 32: x = 0, 16, 32 (left/centre/right), y = 8.
        for t in range(4):
            assert window_offset(clips[0, v, t]) == (8, [0, 16, 32][crop])


def test_eval_centre_crop_flat_views_and_resize_short_side(tmp_path):
    paths = write_shards(
        tmp_path, [video_record("p", 8, 2, height=64, width=40)], num_shards=1
    )
    ds = pipeline.eval_dataset(
        paths,
        clip_len=8,
        crop_size=20,
        num_clips=2,
        num_crops=1,
        batch_size=4,
        standardize="unit",
        resize_short_side=20,
        flatten_views=True,
    )
    clips, labels = take(ds, 1)[0]
    assert clips.shape == (2, 8, 20, 20, 3)
    np.testing.assert_array_equal(labels, [2, 2])
    # resize_short_side 20 = the short side 40 halved: window 40x40 at y = 12.
    clip = clips[0] * 255.0
    np.testing.assert_allclose(
        clip[0, :, -1, 0] - clip[0, :, 0, 0], 4 * 38, atol=2 * TOL + 4
    )
    assert abs(clip[0, 0, 0, 1] / 5 - (12 + 0.5)) < 1.0


def test_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="files"):
        pipeline.train_dataset(
            str(tmp_path / "*.tfrecord"), clip_len=2, crop_size=8, batch_size=1
        )
    paths = write_shards(tmp_path, [video_record("x", 3, 0)], num_shards=1)
    with pytest.raises(ValueError, match="standardize"):
        pipeline.train_dataset(
            paths, clip_len=2, crop_size=8, batch_size=1, standardize="imagenet"
        )
    with pytest.raises(ValueError, match="mean"):
        pipeline.train_dataset(
            paths, clip_len=2, crop_size=8, batch_size=1, standardize="mean_std"
        )
    with pytest.raises(ValueError, match="num_crops"):
        pipeline.eval_dataset(
            paths, clip_len=2, crop_size=8, batch_size=1, num_clips=1, num_crops=2
        )


# --- issue 3 options, wired through train_dataset / eval_dataset ---------------


def test_time_reversal_with_label_map(tmp_path):
    paths = write_shards(tmp_path, [video_record("r", 30, 0)], num_shards=1)
    ds = pipeline.train_dataset(
        paths,
        clip_len=4,
        crop_size=16,
        batch_size=4,
        seed=0,
        flip_prob=0.0,
        reverse_prob=1.0,
        reverse_label_map=[2, -1, 0],
        standardize="none",
    )
    clips, labels = take(ds, 1)[0]
    np.testing.assert_array_equal(labels, [2] * 4)
    for clip in clips.astype(float):
        np.testing.assert_array_equal(np.diff(frame_index(clip)), [-1, -1, -1])


def test_segments_frame_step_choices_and_crops(tmp_path):
    paths = write_shards(tmp_path, [video_record("s", 40, 1)], num_shards=1)
    ds = pipeline.train_dataset(
        paths,
        clip_len=8,
        crop_size=16,
        batch_size=6,
        seed=1,
        num_segments=4,
        new_length=2,
        crop="multi_scale",
        standardize="none",
    )
    clips, _ = take(ds, 1)[0]
    assert clips.shape == (6, 8, 16, 16, 3)
    for clip in clips.astype(float):
        idx = frame_index(clip).reshape(4, 2)
        np.testing.assert_array_equal(idx[:, 1] - idx[:, 0], 1)  # snippets
        for s in range(4):  # duration (40 - 2 + 1) // 4 = 9
            assert 9 * s <= idx[s, 0] < 9 * s + 9
    jitter = pipeline.train_dataset(
        paths,
        clip_len=4,
        crop_size=16,
        batch_size=40,
        seed=2,
        frame_step=(1, 2),
        crop="random_resized",
        standardize="none",
    )
    clips, _ = take(jitter, 1)[0]
    steps = {tuple(np.diff(frame_index(c.astype(float)))) for c in clips}
    assert steps == {(1, 1, 1), (2, 2, 2)}
    with pytest.raises(ValueError, match="num_segments"):
        pipeline.train_dataset(
            paths, clip_len=7, crop_size=16, batch_size=1, num_segments=4, new_length=2
        )
    with pytest.raises(ValueError, match="crop"):
        pipeline.train_dataset(
            paths, clip_len=4, crop_size=16, batch_size=1, crop="five"
        )


def test_eval_segments_are_centres(tmp_path):
    paths = write_shards(tmp_path, [video_record("c", 48, 0)], num_shards=1)
    ds = pipeline.eval_dataset(
        paths,
        clip_len=4,
        crop_size=16,
        num_clips=2,
        num_crops=1,
        batch_size=1,
        num_segments=4,
        standardize="unit",
    )
    clips, _ = take(ds, 1)[0]
    # tick 12: clip 0 at floor(12 (i + 1/4)) = 3 + 12 i, clip 1 at 9 + 12 i.
    np.testing.assert_array_equal(frame_index(clips[0, 0] * 255), [3, 15, 27, 39])
    np.testing.assert_array_equal(frame_index(clips[0, 1] * 255), [9, 21, 33, 45])
