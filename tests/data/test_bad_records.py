"""Bad records on real corrupted files: one frame of one record replaced by
garbage bytes, a shard truncated mid-record. The run goes on without them,
`bad_records.jsonl` names them, a rebuilt (resumed) pipeline passes them,
and too many stop the run with a paragraph naming shards and ids."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from klassterfork import files
from klassterfork.cli.train import main
from klassterfork.data.reading import bad_records
from klassterfork.data import pipeline, records
from tests.data.test_pipeline import video_record, write_shards
from tests.training.tiny_data import tiny_config, write_split

GARBAGE = b"\x00\x01garbage, not an image" * 8


def corrupt_frame(path, record_index, frame_index):
    """Rewrites shard `path` with one frame of one record replaced by garbage;
    returns that record's video id."""
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    example = records.parse(serialized[record_index])
    frames = [f.numpy() for f in example["frames"]]
    frames[frame_index] = GARBAGE
    video_id = example["id"].numpy().decode()
    serialized[record_index] = records.write(
        video_id=video_id, frames=frames, labels=example["labels"].numpy().tolist(),
        fps=12.0, height=int(example["height"]), width=int(example["width"]))
    with tf.io.TFRecordWriter(path) as writer:
        for record in serialized:
            writer.write(record)
    return video_id


def truncate_mid_record(path):
    """Cuts the file 100 bytes into its last record; returns the complete
    records left."""
    sizes = [len(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    end_of_previous = sum(12 + n + 4 for n in sizes[:-1])
    with open(path, "r+b") as f:
        f.truncate(end_of_previous + 100)
    return len(sizes) - 1


def run_like_the_trainer(paths, log, steps, **kw):
    """Iterates `steps` batches; on an error, diagnose and rebuild at the
    same batch (what `hooks.BadRecordHook` does). Returns the batches."""
    out, it = [], iter(pipeline.train_dataset(paths, bad_records=log, **kw))
    while len(out) < steps:
        try:
            out.append(tuple(x.numpy() for x in next(it)))
        except tf.errors.OpError:
            assert log.diagnose(len(out), 1), "an error that names no record"
            it = iter(pipeline.train_dataset(paths, start_batch=len(out),
                                             bad_records=log, **kw))
    return out


KW = dict(clip_len=6, crop_size=16, batch_size=2, seed=1, shuffle_buffer=4,
          max_bad_records=3)


def test_garbage_frame_and_truncated_shard_are_skipped_named_and_passed(tmp_path):
    videos = [video_record(f"v{i}", 6, i % 3, bad=(2,) if i == 4 else ()) for i in range(12)]
    paths = write_shards(tmp_path, videos, num_shards=3)  # v4 is record 1 of shard 1
    readable = truncate_mid_record(paths[2])  # v11 is lost
    path = str(tmp_path / "stage0" / "bad_records.jsonl")
    log = bad_records.BadRecordLog(path)
    batches = run_like_the_trainer(paths, log, 15, **KW)  # 10 clips an epoch: 3 epochs
    entries = [json.loads(line) for line in open(path)]
    by_kind = {"readable" in e: e for e in entries}
    assert len(entries) == 2
    assert by_kind[False]["shard"] == os.path.basename(paths[1])
    assert by_kind[False]["record"] == 1 and by_kind[False]["video_id"] == "v4"
    assert "Unknown image file format" in by_kind[False]["error"]
    assert by_kind[True]["shard"] == os.path.basename(paths[2])
    assert by_kind[True]["readable"] == readable == 3
    assert "truncated" in by_kind[True]["error"]
    assert log.count() == 2
    # Every good video once an epoch, the bad ones never (labels: v % 3).
    seen = np.concatenate([labels for _, labels in batches])
    assert len(seen) == 30
    # -r: a pipeline built from the file at any batch passes the bad records
    # and gives the batches the recovered run gave.
    reread = bad_records.BadRecordLog(path)
    for start in (0, 3, 7, 12):
        ds = pipeline.train_dataset(paths, start_batch=start, bad_records=reread, **KW)
        for expected, got in zip(batches[start:], ds.take(15 - start)):
            np.testing.assert_array_equal(expected[0], got[0].numpy())
            np.testing.assert_array_equal(expected[1], got[1].numpy())
    assert [json.loads(line) for line in open(path)] == entries  # nothing new


def flip_byte_mid_record(path, record_index):
    """Flips one byte in the middle of record `record_index`'s body: its CRC
    no longer matches, so the reader fails there at run time (the headers,
    which the pipeline walks when it is built, are intact)."""
    sizes = [len(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    offset = sum(12 + n + 4 for n in sizes[:record_index]) + 12 + sizes[record_index] // 2
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_corrupt_record_body_mid_shard_is_skipped_alone_and_resume_passes_it(tmp_path):
    # A CRC error at run time (DataLossError), not found when the pipeline is
    # built. The record's length header is intact, so the next record's offset
    # is known: that record alone is skipped and named; the records after it
    # in its shard are still read, in this epoch and the later ones, and a
    # rebuilt (resumed) pipeline reads around it.
    videos = [video_record(f"v{i}", 6, i) for i in range(12)]  # label i: video i
    paths = write_shards(tmp_path, videos, num_shards=3)  # shard 0: v0 v3 v6 v9
    flip_byte_mid_record(paths[0], 1)  # v3
    assert pipeline.read_shards(paths).counts == (4, 4, 4)  # the headers are fine
    path = str(tmp_path / "bad_records.jsonl")
    log = bad_records.BadRecordLog(path)
    batches = run_like_the_trainer(paths, log, 18, **KW)
    entries = [json.loads(line) for line in open(path)]
    assert [(e["shard"], e["record"], e["video_id"], e["epoch"]) for e in entries] == [
        (os.path.basename(paths[0]), 1, None, 0)], entries
    assert "readable" not in entries[0] and "lost" not in entries[0]
    assert "corrupted record" in entries[0]["error"]
    assert log.count() == 1
    # 11 videos an epoch, each once: every video but v3, v6 and v9 included.
    labels = np.concatenate([b[1] for b in batches])
    assert len(labels) == 36
    for epoch in range(3):
        assert sorted(labels[11 * epoch:11 * (epoch + 1)]) == [i for i in range(12) if i != 3]
    reread = bad_records.BadRecordLog(path)
    for start in (0, 5, 11, 16):
        ds = pipeline.train_dataset(paths, start_batch=start, bad_records=reread, **KW)
        for expected, got in zip(batches[start:], ds.take(18 - start), strict=True):
            np.testing.assert_array_equal(expected[0], got[0].numpy())
            np.testing.assert_array_equal(expected[1], got[1].numpy())
    assert [json.loads(line) for line in open(path)] == entries


def test_over_budget_stops_with_one_paragraph_naming_shards_and_ids(tmp_path):
    videos = [video_record(f"v{i}", 6, 0, bad=(0,) if i in (1, 2) else ()) for i in range(6)]
    paths = write_shards(tmp_path, videos, num_shards=1)
    log = bad_records.BadRecordLog(str(tmp_path / "bad_records.jsonl"))
    with pytest.raises(bad_records.BadRecordsError) as err:
        run_like_the_trainer(paths, log, 6, **{**KW, "max_bad_records": 1})
    message = str(err.value)
    assert "\n" not in message
    assert "2 bad records exceed the budget of 1" in message
    assert os.path.basename(paths[0]) in message and "v1" in message and "v2" in message
    # Built again with the same log: stops before reading anything.
    with pytest.raises(bad_records.BadRecordsError):
        pipeline.train_dataset(paths, bad_records=log, **{**KW, "max_bad_records": 1})


def test_an_error_that_is_not_the_data_is_not_blamed_on_a_record(tmp_path):
    paths = write_shards(tmp_path, [video_record(f"v{i}", 6, 0) for i in range(4)], 1)
    log = bad_records.BadRecordLog()
    pipeline.train_dataset(paths, bad_records=log, **KW)
    assert log.diagnose(0, 2) == [] and log.entries == []


# The default run takes the trainer's bad-record path (name, rebuild, resume)
# in test_bad_records_crc's kf-train test.
@pytest.mark.slow
def test_trainer_run_completes_names_them_and_resume_passes_them(tmp_path):
    data = tmp_path / "data"
    paths = write_split(str(data), "train", 24, seed=0, num_frames=4)
    write_split(str(data), "validation", 8, seed=1, num_frames=4)
    video_id = corrupt_frame(paths[0], 2, 1)
    readable = truncate_mid_record(paths[1])
    config = json.loads(tiny_config(data, tmp_path / "exp", epochs=3, stop_after_steps=8))
    for block in config["datasets"].values():
        block["frame_step"] = 1  # 4 frames of 4: the garbage frame is in every clip
    config["datasets"]["train"]["max_bad_records"] = 3
    path = tmp_path / "c.hjson"
    path.write_text(json.dumps(config))
    assert main([str(path)]) == 0  # stops after step 8, past the bad record
    jsonl = tmp_path / "exp" / "stage0" / "bad_records.jsonl"
    entries = [json.loads(line) for line in open(jsonl)]
    named = {(e["shard"], e["record"], e["video_id"]) for e in entries}
    assert named == {(os.path.basename(paths[0]), 2, video_id),
                     (os.path.basename(paths[1]), readable, None)}
    config["train_loop"].pop("stop_after_steps")
    path.write_text(json.dumps(config))
    assert main([str(path), "-r"]) == 0  # epochs 2-3 meet the record again
    assert [json.loads(line) for line in open(jsonl)] == entries
    assert (tmp_path / "exp" / "stage0" / "DONE").exists()


def _add_entries(path, worker, count, start):
    log = bad_records.BadRecordLog(path)
    start.wait(120)  # both built their log: they write at the same time
    for r in range(count):
        log.add([{"shard": f"w{worker}.tfrecord", "record": r, "video_id": f"w{worker}-{r}",
                  "error": "x", "epoch": 0}])


def test_workers_sharing_the_stage_file_keep_each_others_entries(tmp_path):
    # Two MultiWorkerMirrored workers write one stage's bad_records.jsonl:
    # each rewrite keeps what the other added (a plain rewrite lost entries).
    import multiprocessing

    path = str(tmp_path / "bad_records.jsonl")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_add_entries, args=(path, w, 150, start)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    entries = [json.loads(line) for line in open(path)]
    assert sorted(e["video_id"] for e in entries) == sorted(
        f"w{w}-{r}" for w in range(2) for r in range(150))
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~files.current_umask())
