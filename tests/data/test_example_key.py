"""`example_key="record"`: draws keyed by (shard name, epoch, record, view),
what the tf.data service workers use (each numbers its examples from 0).

Two pipelines stand in for two service workers: each reads one shard, both
shards hold the same videos, and both number their examples from 0."""

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.data import pipeline, records
from tests.data.test_pipeline import video_record, take

KW = dict(clip_len=4, crop_size=16, batch_size=4, seed=5, shuffle_buffer=0,
          standardize="none")


def same_videos_in_two_shards(tmp_path):
    videos = [video_record(f"v{i}", 12, i % 3) for i in range(8)]
    paths = []
    for name in ("a", "b"):
        path = str(tmp_path / records.shard_name(name, 0, 1))
        with tf.io.TFRecordWriter(path) as writer:
            for v in videos:
                writer.write(v)
        paths.append(path)
    return paths


def test_workers_numbering_alike_draw_apart_by_record(tmp_path):
    a, b = same_videos_in_two_shards(tmp_path)
    by_position = [take(pipeline.train_dataset([p], **KW), 2) for p in (a, b)]
    by_record = [take(pipeline.train_dataset([p], example_key="record", **KW), 2)
                 for p in (a, b)]
    # The control: numbered alike, the same videos give the same clips.
    for x, y in zip(*by_position):
        np.testing.assert_array_equal(x[0], y[0])
    # Keyed by record: other frames / crops / flips for most clips.
    clips_a = np.concatenate([c for c, _ in by_record[0]])
    clips_b = np.concatenate([c for c, _ in by_record[1]])
    differ = [not np.array_equal(x, y) for x, y in zip(clips_a, clips_b)]
    assert sum(differ) >= 6, differ
    np.testing.assert_array_equal(np.concatenate([l for _, l in by_record[0]]),
                                  np.concatenate([l for _, l in by_record[1]]))


def test_record_keys_resume_exactly_and_mix_per_batch(tmp_path):
    a, _ = same_videos_in_two_shards(tmp_path)
    kw = {**KW, "shuffle_buffer": 4, "standardize": "unit", "mixup_alpha": 0.8,
          "num_classes": 3, "example_key": "record"}
    whole = take(pipeline.train_dataset([a], **kw), 6)  # 3 epochs of 2 batches
    resumed = take(pipeline.train_dataset([a], start_batch=3, **kw), 3)
    for x, y in zip(whole[3:], resumed):
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[1], y[1])
    # Each epoch draws anew: the same records in epochs 0 and 1 give other clips.
    assert not np.array_equal(np.sort(whole[0][0].ravel()), np.sort(whole[2][0].ravel()))
    assert whole[0][1].shape == (4, 3)  # mixed (soft) labels, the key stripped


def test_example_key_is_checked(tmp_path):
    a, _ = same_videos_in_two_shards(tmp_path)
    with pytest.raises(ValueError, match="example_key"):
        pipeline.train_dataset([a], example_key="index", **KW)
