"""Bad records dropped inside the pipeline (`Placement.skip_bad_records`,
what multi-worker runs use, issue 24): clean data gives the batches of the
ordinary pipeline; a corrupt record is dropped before the batch, named once
(from the gap it leaves), and the stream goes on; the default budget is a
fraction of the whole train set, whatever the number of pipelines."""

import json
import os

import numpy as np
import pytest

from klassterfork.data import pipeline
from klassterfork.data.reading import bad_records
from tests.data.test_pipeline import video_record, write_shards

KW = dict(clip_len=4, crop_size=16, batch_size=2, seed=1, shuffle_buffer=4)


def take(ds, n):
    return [tuple(x.numpy() for x in batch) for batch in ds.take(n)]


def test_clean_data_gives_the_ordinary_batches(tmp_path):
    paths = write_shards(tmp_path, [video_record(f"v{i}", 4, i % 3) for i in range(8)])
    for pipes in [dict(), dict(num_input_pipelines=2, input_pipeline_id=1)]:
        ordinary = take(pipeline.train_dataset(paths, **pipes, **KW), 9)
        skipping = take(pipeline.train_dataset(paths, skip_bad_records=True, **pipes,
                                               **KW), 9)
        for a, b in zip(ordinary, skipping, strict=True):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])


def test_a_corrupt_record_is_dropped_named_once_and_the_stream_goes_on(tmp_path):
    videos = [video_record(f"v{i}", 4, i % 3, bad=(1,) if i == 5 else ()) for i in range(8)]
    paths = write_shards(tmp_path, videos)  # v5: record 2 of shard 1
    log = bad_records.BadRecordLog(str(tmp_path / "bad_records.jsonl"))
    # 4 epochs of 8 clips, 7 of them good: with ordinary batches this raised.
    batches = take(pipeline.train_dataset(paths, skip_bad_records=True, bad_records=log,
                                          max_bad_records=5, **KW), 14)
    assert len(batches) == 14 and all(b[0].shape[0] == 2 for b in batches)
    entries = [json.loads(x) for x in open(log.path)]
    assert [(e["shard"], e["record"], e["video_id"], e["epoch"]) for e in entries] == [
        (os.path.basename(paths[1]), 2, "v5", 0)], entries
    assert "JPEG" in entries[0]["error"] or "image" in entries[0]["error"], entries
    assert log.over_budget is None
    # The ordinary pipeline on that log skips the record (a resume never
    # reads it again), so it no longer raises either.
    assert len(take(pipeline.train_dataset(paths, bad_records=log, **KW), 14)) == 14


def test_over_the_budget_the_log_holds_the_error(tmp_path):
    videos = [video_record(f"v{i}", 4, i % 3, bad=(0,) if i in (2, 5) else ())
              for i in range(8)]
    paths = write_shards(tmp_path, videos)
    log = bad_records.BadRecordLog(str(tmp_path / "bad_records.jsonl"))
    take(pipeline.train_dataset(paths, skip_bad_records=True, bad_records=log,
                                max_bad_records=1, **KW), 4)
    assert isinstance(log.over_budget, bad_records.BadRecordsError)
    assert "2 bad records exceed the budget of 1" in str(log.over_budget)


def test_the_default_budget_is_a_fraction_of_the_whole_train_set(tmp_path):
    # 2000 records in 2 shards: 0.1 % of the whole set is 2; of one
    # pipeline's file (1000 records) it would be 1.
    tiny = video_record("x", 1, 0, height=8, width=8)
    paths = write_shards(tmp_path, [tiny] * 2000)
    assert bad_records.default_budget(2000) == 2 and bad_records.default_budget(1000) == 1
    log = bad_records.BadRecordLog(str(tmp_path / "bad_records.jsonl"))
    log.add([{"shard": os.path.basename(paths[0]), "record": r, "video_id": "x",
              "error": "stand-in", "epoch": 0} for r in (3, 4)])
    for pipeline_id in (0, 1):
        pipeline.train_dataset(paths, bad_records=log, num_input_pipelines=2,
                               input_pipeline_id=pipeline_id, **KW)  # 2 <= 2: builds
    log.add([{"shard": os.path.basename(paths[1]), "record": 7, "video_id": "x",
              "error": "stand-in", "epoch": 0}])
    with pytest.raises(bad_records.BadRecordsError, match="budget of 2 "):
        pipeline.train_dataset(paths, bad_records=log, num_input_pipelines=2,
                               input_pipeline_id=0, **KW)


# ---- pipelines in another process (tf.data service workers): flag files ----
def test_flagged_examples_are_dropped_recorded_as_files_and_collected(tmp_path):
    clean = write_shards(tmp_path, [video_record(f"v{i}", 4, i % 3) for i in range(8)])
    flags = tmp_path / "bad_records.d"
    ordinary = take(pipeline.train_dataset(clean, **KW), 5)
    flagged = take(pipeline.train_dataset(clean, bad_records_dir=str(flags), **KW), 5)
    for a, b in zip(ordinary, flagged, strict=True):  # clean data: the same batches
        np.testing.assert_array_equal(a[0], b[0])
    assert os.listdir(flags) == []
    videos = [video_record(f"v{i}", 4, i % 3, bad=(1,) if i == 5 else ()) for i in range(8)]
    paths = write_shards(tmp_path, videos)  # v5: record 2 of shard 1
    log = bad_records.BadRecordLog(str(tmp_path / "bad_records.jsonl"))
    # 9 batches of 2 need more than the 14 good examples of epochs 0 and 1, so
    # both epochs' copies of the bad record were decoded whatever the pipeline
    # read ahead (which may also reach epoch 2's copy).
    batches = take(pipeline.train_dataset(paths, bad_records=log, max_bad_records=5,
                                          bad_records_dir=str(flags), **KW), 9)
    assert len(batches) == 9
    found = sorted(os.listdir(flags))
    shard = os.path.basename(paths[1])
    assert {f"e0-r2-{shard}.bad", f"e1-r2-{shard}.bad"} <= set(found), found
    assert all(name.endswith(f"-r2-{shard}.bad") for name in found), found
    assert log.entries == []  # named by `collect`, on the trainer
    new = log.collect()
    assert [(e["shard"], e["record"], e["video_id"], e["epoch"]) for e in new] == [
        (os.path.basename(paths[1]), 2, "v5", 0)], new  # once: epoch 0
    assert os.listdir(flags) == [] and log.collect() == []
    assert "JPEG" in new[0]["error"] or "image" in new[0]["error"], new
