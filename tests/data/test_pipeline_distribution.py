"""Input sharding over several pipelines, per-pipeline seeds, repeated views.

Video i carries label i (so labels identify videos) and frames whose pixels
encode (frame, x, y): R = 4 * x, G = 5 * y, B = 5 * t, so a clip tells its
crop offset and frame indices. Shard s of n holds videos s, s + n, ...
"""

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.data import pipeline, records
from tests.data.test_pipeline import write_shards

H, W, T = 24, 32, 10


def frame(t):
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([4 * x, 5 * y, np.full_like(x, 5 * t)], axis=-1).astype(np.uint8)


FRAMES = [
    tf.io.encode_jpeg(frame(t), quality=100, chroma_downsampling=False).numpy()
    for t in range(T)
]


def record(label, *, bad=False):
    frames = [b"not a jpeg"] * T if bad else FRAMES
    return records.write(
        video_id=f"v{label}", frames=frames, labels=[label], fps=12.0, height=H, width=W
    )


def make(paths, **kwargs):
    args = dict(
        clip_len=2, crop_size=16, batch_size=4, seed=5, shuffle_buffer=8,
        standardize="none", cycle_length=4,
    )
    args.update(kwargs)
    return pipeline.train_dataset(paths, **args)


def take(ds, n):
    return [tuple(x.numpy() for x in batch) for batch in ds.take(n)]


def labels_of(batches):
    return [int(v) for _, labels in batches for v in labels]


def describe(clip):
    """uint8 [T, S, S, 3] unflipped crop -> (y0, x0, first frame index)."""
    clip = clip.astype(np.float64)
    ii, jj = np.mgrid[0 : clip.shape[1], 0 : clip.shape[2]]
    return (
        round(np.mean(clip[0, ..., 1] / 5 - ii)),
        round(np.mean(clip[0, ..., 0] / 4 - jj)),
        round(clip[0, ..., 2].mean() / 5),
    )


@pytest.mark.parametrize(
    "files, pipes, policy, expected",
    [
        (4, 2, "auto", "file"),  # even split
        (1, 2, "auto", "data"),  # a pipeline would get no file
        (3, 2, "auto", "data"),  # 2 vs 1 file: one worker reads twice as much
        (8, 3, "auto", "data"),  # 3/3/2 files, fewer than 4 each
        (12, 3, "auto", "file"),
        (13, 3, "auto", "file"),  # >= 4 files each: 5/4/4
        (1, 1, "auto", "file"),
        (3, 2, "file", "file"),
        (4, 2, "data", "data"),
    ],
)
def test_shard_policy_rule(files, pipes, policy, expected):
    assert pipeline.shard_policy_for(files, pipes, policy) == expected


def test_file_policy_pipelines_disjoint_and_cover_every_epoch(tmp_path):
    paths = write_shards(tmp_path, [record(i) for i in range(24)], num_shards=4)
    seen = []
    for pipe in range(2):
        ds = make(paths, num_input_pipelines=2, input_pipeline_id=pipe)
        labels = labels_of(take(ds, 6))  # 12 videos per pipeline: 2 epochs
        epochs = [labels[:12], labels[12:]]
        for epoch in epochs:
            assert len(set(epoch)) == 12  # each of its videos once per epoch
        assert set(epochs[0]) == set(epochs[1])
        # Pipeline 0 reads files 0 and 2, pipeline 1 files 1 and 3.
        assert {v % 4 for v in epochs[0]} == {pipe, pipe + 2}
        seen.append(set(epochs[0]))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(24))


def test_data_policy_one_shard_disjoint_and_covering(tmp_path):
    paths = write_shards(tmp_path, [record(i) for i in range(24)], num_shards=1)
    assert pipeline.shard_policy_for(1, 2) == "data"
    seen = []
    for pipe in range(2):
        ds = make(paths, num_input_pipelines=2, input_pipeline_id=pipe)
        labels = labels_of(take(ds, 6))
        epochs = [set(labels[:12]), set(labels[12:])]
        assert len(labels[:12]) == len(epochs[0]) == 12 and epochs[0] == epochs[1]
        # The stream is in file order, so pipeline i keeps records i, i + 2, ...
        assert epochs[0] == set(range(pipe, 24, 2))
        seen.append(epochs[0])
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(24))


def test_data_policy_never_parses_the_other_pipelines_records(tmp_path):
    # Odd records are broken: only pipeline 1 may ever touch them.
    videos = [record(i, bad=i % 2 == 1) for i in range(8)]
    paths = write_shards(tmp_path, videos, num_shards=1)
    good = make(paths, num_input_pipelines=2, input_pipeline_id=0, shard_policy="data")
    assert set(labels_of(take(good, 4))) == {0, 2, 4, 6}  # 4 epochs, no error
    for kwargs in ({"num_input_pipelines": 2, "input_pipeline_id": 1}, {}):
        with pytest.raises(tf.errors.InvalidArgumentError):
            take(make(paths, **kwargs), 2)


def test_pipeline_seeds_differ(tmp_path):
    # Two shards with the SAME eight videos: under "file" each pipeline reads
    # one of them, so equal seeds would give equal batches.
    videos = [record(i) for i in range(8)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_shards(tmp_path / "a", videos, 1)
    b = write_shards(tmp_path / "b", videos, 1)
    paths = a + b
    # Control (the test can fail): one pipeline over either copy, same seed.
    first = take(make(a), 4)
    second = take(make(b), 4)
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[1], y[1])
    runs = [
        take(make(paths, num_input_pipelines=2, input_pipeline_id=i), 4)
        for i in range(2)
    ]
    assert labels_of(runs[0]) != labels_of(runs[1])  # own shuffle order
    # Without the example shuffle both read the videos in the same order;
    # only the per-example keys can tell them apart.
    runs = [
        take(make(paths, num_input_pipelines=2, input_pipeline_id=i,
                  shuffle_buffer=0), 2)
        for i in range(2)
    ]
    assert labels_of(runs[0]) == labels_of(runs[1]) == list(range(8))
    crops = [[describe(c) for clips, _ in run for c in clips] for run in runs]
    # 9 x 17 offsets x 9 starts: a chance match is a 1/1377 event.
    same = [v for v in range(8) if crops[0][v] == crops[1][v]]
    assert len(same) <= 1
    assert pipeline.pipeline_seed(5, 0) == 5
    assert len({pipeline.pipeline_seed(5, i) for i in range(4)}) == 4


def test_data_policy_without_shuffle_reproduces_one_pipeline(tmp_path):
    """Two data-sharded pipelines with per-replica batch 2 give, at every step,
    exactly the clips of one pipeline with batch 4 (keys = stream position)."""
    paths = write_shards(tmp_path, [record(i) for i in range(12)], num_shards=2)
    kw = dict(shuffle_buffer=0, flip_prob=0.5, crop_scale=(0.6, 1.0))
    single = take(make(paths, batch_size=4, **kw), 6)  # 2 epochs
    pipes = [
        take(make(paths, batch_size=2, num_input_pipelines=2, input_pipeline_id=i,
                  shard_policy="data", **kw), 6)
        for i in range(2)
    ]
    for step, (clips, labels) in enumerate(single):
        # Pipeline i holds stream positions 4k + i and 4k + i + 2.
        got_clips = np.stack([pipes[j % 2][step][0][j // 2] for j in range(4)])
        got_labels = np.array([pipes[j % 2][step][1][j // 2] for j in range(4)])
        np.testing.assert_array_equal(got_labels, labels)
        np.testing.assert_array_equal(got_clips, clips)


@pytest.mark.parametrize("policy", ["file", "data"])
def test_resume_with_two_pipelines_is_exact(tmp_path, policy):
    paths = write_shards(tmp_path, [record(i) for i in range(16)], num_shards=4)
    kw = dict(num_input_pipelines=2, shard_policy=policy, mixup_alpha=0.8,
              num_classes=16, flip_prob=0.5, standardize="unit")
    for pipe in range(2):
        full = take(make(paths, input_pipeline_id=pipe, **kw), 6)
        resumed = take(make(paths, input_pipeline_id=pipe, start_batch=3, **kw), 3)
        for x, y in zip(full[3:], resumed):
            np.testing.assert_array_equal(x[0], y[0])
            np.testing.assert_array_equal(x[1], y[1])


def test_repeated_views_groups_of_k_differently_augmented(tmp_path):
    paths = write_shards(tmp_path, [record(i) for i in range(8)], num_shards=2)
    ds = make(paths, batch_size=6, repeated_views=3, repeat=False, flip_prob=0.0)
    batches = take(ds, 100)
    labels = labels_of(batches)
    # One pass: every video's 3 views, i.e. 8 x 3 = 24 clips.
    assert len(labels) == 24 and sorted(labels) == sorted(list(range(8)) * 3)
    for clips, batch_labels in batches:
        for g in range(2):
            group = batch_labels[3 * g : 3 * g + 3]
            assert len(set(group)) == 1  # 3 consecutive views of one video
            views = [describe(c) for c in clips[3 * g : 3 * g + 3]]
            assert len(set(views)) == 3  # each view its own crop and start
    # Resume still exact with views.
    kw = dict(batch_size=4, repeated_views=2, flip_prob=0.5)
    full = take(make(paths, **kw), 5)
    resumed = take(make(paths, start_batch=2, **kw), 3)
    for x, y in zip(full[2:], resumed):
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[1], y[1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(repeated_views=3), "multiple of `repeated_views`"),
        (dict(repeated_views=0), "repeated_views"),
        (dict(num_input_pipelines=2, input_pipeline_id=2), "input_pipeline_id"),
        (dict(num_input_pipelines=0), "num_input_pipelines"),
        (dict(shard_policy="files"), "shard_policy"),
        (dict(num_input_pipelines=3, shard_policy="file"), "one shard file per"),
    ],
)
def test_errors_name_the_argument(tmp_path, kwargs, message):
    paths = write_shards(tmp_path, [record(i) for i in range(4)], num_shards=2)
    with pytest.raises(ValueError, match=message):
        make(paths, **kwargs)
