"""Resume cost and exactness of the record stage (`data/reading/resume.py`).

The records are real TFRecord files; what is read is counted twice, by a
counting hook on the record reader and by the bytes the process read from
files (/proc/self/io `rchar`, the kernel's count of read syscalls).
"""

import os
import random

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.data import pipeline
from klassterfork.data.reading import resume
from tests.data.test_pipeline import video_record, write_shards


def tiny_shards(directory, counts):
    """Shard s holds records b"s:r"; returns the paths."""
    paths = []
    for s, n in enumerate(counts):
        path = str(directory / f"train-{s:05d}-of-{len(counts):05d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for r in range(n):
                writer.write(f"{s}:{r}".encode())
        paths.append(path)
    return paths


def layout(paths, *, skip=(), cut=(), shuffle_buffer=4, shares=(1, 0), parallel=True):
    counts = tuple(resume.count_records(p)[0] for p in paths)
    return resume.Layout(
        resume.Shards(tuple(paths), counts, skip, cut), file_seed=7, shuffle_seed=8,
        cycle_length=3, shuffle_buffer=shuffle_buffer, num_shares=shares[0],
        share=shares[1], parallel_reads=parallel,
    )


def stream(lay, start=0, n=10):
    ds, _ = resume.records(lay, start_record=start)
    return [(int(e), int(f), int(r), s) for e, f, r, s in ds.take(n).as_numpy_iterator()]


def test_interleave_replay_matches_tf_data():
    rng = random.Random(0)
    for _ in range(12):
        counts = [rng.randint(0, 6) for _ in range(rng.randint(1, 8))]
        cycle = rng.randint(1, 4)
        table = tf.constant(counts, tf.int64)
        ds = tf.data.Dataset.range(len(counts)).interleave(
            lambda f: tf.data.Dataset.range(tf.gather(table, f)).map(lambda r: (f, r)),
            cycle_length=cycle, block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True)
        got = [tuple(map(int, x)) for x in ds.as_numpy_iterator()]
        replay = resume.Interleave(range(len(counts)), counts, cycle)
        expected = list(iter(replay.next, None))
        assert got == expected, (counts, cycle)


@pytest.mark.parametrize("skip, shares, shuffle", [
    ((), (1, 0), 4),
    (((1, 2, 0), (3, 0, 0)), (1, 0), 4),
    (((0, 1, 0),), (2, 1), 3),
    ((), (1, 0), 0),
])
def test_record_stage_resumes_exactly_across_epochs(tmp_path, skip, shares, shuffle):
    paths = tiny_shards(tmp_path, [2, 9, 0, 4, 5])  # uneven, one empty
    lay = layout(paths, skip=skip, shuffle_buffer=shuffle, shares=shares)
    per_epoch = lay.records_per_epoch()
    full = stream(lay, n=4 * per_epoch)
    epochs = [sorted(x[1:] for x in full[k * per_epoch:(k + 1) * per_epoch]) for k in range(3)]
    assert [x[0] for x in full[:3 * per_epoch]] == sorted([0, 1, 2] * per_epoch)
    if shares[0] == 1:
        assert epochs[0] == epochs[1] == epochs[2]  # each record once an epoch
        assert len(epochs[0]) == 20 - len(skip)
        assert [x[1:3] for x in full[:per_epoch]] != [
            x[1:3] for x in full[per_epoch:2 * per_epoch]]
    assert not {x[1:3] for x in full} & {(f, r) for f, r, _ in skip}
    starts = [0, 1, 3, 4, per_epoch - 1, per_epoch, per_epoch + 5, 2 * per_epoch + 2]
    for start in starts:
        assert stream(lay, start, n=per_epoch + 3) == full[start:start + per_epoch + 3]


def test_records_found_bad_later_are_dropped_from_that_epoch_on(tmp_path):
    paths = tiny_shards(tmp_path, [6, 6, 6])
    # (0, 3) found bad in epoch 2; shard 2 found unreadable after 4 records
    # in epoch 1 (records 4 and 5 of it are lost from then on).
    lay = layout(paths, skip=((0, 3, 2),), cut=((2, 4, 1),))
    assert [lay.records_per_epoch(e) for e in range(4)] == [18, 16, 15, 15]
    full = stream(lay, n=18 + 16 + 15 + 15)
    epochs = [{x[1:3] for x in full if x[0] == e} for e in range(4)]
    assert [len(e) for e in epochs] == [18, 16, 15, 15]
    assert (0, 3) in epochs[1] and (0, 3) not in epochs[2] | epochs[3]
    assert (2, 4) in epochs[0] and (2, 4) not in epochs[1]
    for start in (5, 18, 20, 34, 40, 49):
        assert stream(lay, start, n=8) == full[start:start + 8]


def counting(monkeypatch):
    """Counts the records the shard readers return (skipped ones are not)."""
    read = resume.read_shard
    counter = tf.Variable(0, dtype=tf.int64)

    def counted(path, first, count):
        def count_one(record):
            counter.assign_add(1)
            return record

        return read(path, first, count).map(count_one)

    monkeypatch.setattr(resume, "read_shard", counted)
    return counter


def sequential(ds):
    """No injected prefetch: the count is then exactly what the first
    element needed, not what a background thread read ahead."""
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.inject_prefetch = False
    options.experimental_optimization.map_parallelization = False
    return ds.with_options(options)


def test_records_read_on_resume_equal_at_epoch_1_and_50(tmp_path, monkeypatch):
    paths = tiny_shards(tmp_path, [8] * 6)
    lay = layout(paths, shuffle_buffer=4, parallel=False)
    per_epoch = lay.records_per_epoch()
    counter = counting(monkeypatch)
    read, skipped = [], []
    for epoch in (1, 50):
        counter.assign(0)
        ds, start = resume.records(lay, start_record=epoch * per_epoch + 27)
        next(iter(sequential(ds)))
        read.append(int(counter.numpy()))
        skipped.append(start.skipped)
    # One block of 4 records is read; the open shards skip by headers what
    # the epoch's first 24 records took from them.
    assert read == [4, 4]
    assert skipped[0] == skipped[1] == 24
    # Control: from the epoch's start the same hook counts the replay.
    counter.assign(0)
    ds, _ = resume.records(lay, start_record=50 * per_epoch)
    list(sequential(ds.take(28)).as_numpy_iterator())
    assert int(counter.numpy()) == 28


def rchar():
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar"))


def test_first_batch_after_resume_reads_the_same_bytes_at_epoch_1_and_50(tmp_path):
    # 4 shards x 64 records of ~30 KB: an epoch is ~7.8 MB of files.
    paths = write_shards(tmp_path, [video_record(f"v{i}", 12, i % 3) for i in range(256)],
                         num_shards=4)
    epoch_bytes = sum(os.path.getsize(p) for p in paths)
    steps_per_epoch = 256 // 4
    read = {}
    for epoch in (1, 50):
        before = rchar()
        ds = pipeline.train_dataset(paths, clip_len=4, crop_size=16, batch_size=4, seed=3,
                                    shuffle_buffer=8, start_batch=epoch * steps_per_epoch + 37)
        next(iter(ds))
        read[epoch] = rchar() - before
    # Re-reading the consumed records would take ~50 epochs' bytes at epoch 50.
    assert read[50] < epoch_bytes / 4 and read[1] < epoch_bytes / 4
    assert 0.5 < read[50] / read[1] < 2


def test_resumed_batches_equal_uninterrupted_bit_for_bit(tmp_path):
    videos = [video_record(f"v{i}", 14 + i % 5, i % 3) for i in range(18)]
    paths = write_shards(tmp_path, videos, num_shards=4)
    kw = dict(clip_len=3, crop_size=16, batch_size=4, seed=9, shuffle_buffer=5,
              crop_scale=(0.5, 1.0), frame_step=(1, 2), flip_prob=0.5,
              repeated_views=2, mixup_alpha=0.5, num_classes=3)
    # An epoch: 18 videos x 2 views = 9 batches; batches straddle epochs.
    full = [tuple(x.numpy() for x in b) for b in pipeline.train_dataset(paths, **kw).take(22)]
    for start in (1, 8, 9, 13, 19):
        resumed = pipeline.train_dataset(paths, start_batch=start, **kw).take(3)
        for expected, got in zip(full[start:], resumed):
            np.testing.assert_array_equal(expected[0], got[0].numpy())
            np.testing.assert_array_equal(expected[1], got[1].numpy())


def test_count_records_reads_headers_and_finds_a_truncated_tail(tmp_path):
    paths = tiny_shards(tmp_path, [5])
    assert resume.count_records(paths[0]) == (5, False)
    size = os.path.getsize(paths[0])
    with open(paths[0], "r+b") as f:
        f.truncate(size - 3)  # inside the last record's footer
    assert resume.count_records(paths[0]) == (4, True)
    with open(paths[0], "r+b") as f:
        f.truncate(size - 3 - 3 * 19 - 5)  # inside a header
    assert resume.count_records(paths[0]) == (1, True)


def syscr():
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("syscr"))


def test_local_shards_are_read_unbuffered_remote_ones_buffered(tmp_path):
    size = lambda path, first=0: int(resume.read_buffer_size(tf.constant(path), first))
    assert size(str(tmp_path / "a.tfrecord")) == 0
    assert size("relative/a.tfrecord") == 0
    assert size("file:///data/a.tfrecord") == 0
    assert size("gs://bucket/a.tfrecord") == resume.REMOTE_READ_BUFFER
    assert size("s3://bucket/a.tfrecord") == resume.REMOTE_READ_BUFFER
    # A remote shard resumed at an offset skips bodies unbuffered.
    assert size("gs://bucket/a.tfrecord", first=5) == 0
    # Unbuffered: the reader makes a read per header and one per body (the
    # 256 KiB buffer would read these 300 small records in one or two).
    (path,) = tiny_shards(tmp_path, [300])
    before = syscr()
    assert len(list(resume.read_shard(tf.constant(path), 0, 300))) == 300
    assert syscr() - before >= 2 * 300
