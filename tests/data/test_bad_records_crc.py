"""Records whose body fails its checksum (issue 24 item h, "nothing lost"),
on real shards written by the library with bytes flipped: a corrupt body
with its length header intact is one bad record, skipped and named, and
the rest of its shard is read, by the train pipeline (resumes exact) and by
the evaluation; only a broken header or a truncated end cuts a shard, with
the records after it counted as lost."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.data import pipeline
from klassterfork.data.reading import bad_records, eval_pipeline, resume
from klassterfork.data.spec import EvalData
from tests.data.test_bad_records import KW, run_like_the_trainer, truncate_mid_record
from tests.data.test_pipeline import video_record, write_shards

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def record_offsets(path):
    """[(offset, body length)] of every record, from the headers (the file
    may already be corrupt: TFRecordDataset would stop at it)."""
    with open(path, "rb") as f:
        data = f.read()
    out, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        out.append((pos, length))
        pos += 12 + length + 4
    return out


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def flip_bodies(path, *records):
    """One byte flipped in the middle of each record's body."""
    offsets = record_offsets(path)
    for r in records:
        start, length = offsets[r]
        flip_byte(path, start + 12 + length // 2)


def flip_length_crc(path, record):
    """One byte of the record's length checksum flipped: the length itself
    still walks (an unchecked walk counts every record), the reader stops."""
    flip_byte(path, record_offsets(path)[record][0] + 9)


def videos(n):
    return [video_record(f"v{i}", 6, i) for i in range(n)]  # label i: video i


def per_epoch_labels(batches, per_epoch, epochs):
    labels = np.concatenate([b[1] for b in batches])
    return [sorted(labels[per_epoch * e:per_epoch * (e + 1)].tolist()) for e in range(epochs)]


def assert_resumes_exactly(paths, path, batches, starts, **kw):
    """A pipeline built from the log file at `start` gives the run's batches."""
    reread = bad_records.BadRecordLog(path)
    for start in starts:
        ds = pipeline.train_dataset(paths, start_batch=start, bad_records=reread, **kw)
        for expected, got in zip(batches[start:], ds.take(len(batches) - start), strict=True):
            np.testing.assert_array_equal(expected[0], got[0].numpy())
            np.testing.assert_array_equal(expected[1], got[1].numpy())


def test_verified_header_walk_tells_a_corrupt_body_from_a_broken_header(tmp_path):
    paths = write_shards(tmp_path, videos(8), num_shards=2)
    assert resume.count_records(paths[0], verify=True) == (4, False)
    flip_bodies(paths[0], 1)
    assert resume.count_records(paths[0], verify=True) == (4, False)
    flip_length_crc(paths[1], 2)
    assert resume.count_records(paths[1]) == (4, False)  # the build's walk: no check
    assert resume.count_records(paths[1], verify=True) == (2, True)


def test_a_shard_is_read_past_a_corrupt_body_by_its_headers(tmp_path):
    # What the segments rely on: `skip` passes a record by its header, so the
    # records after a corrupt body read as they are.
    paths = write_shards(tmp_path, videos(8), num_shards=1)
    whole = [r.numpy() for r in resume.read_shard(paths[0], 0, 8)]
    flip_bodies(paths[0], 3)
    with pytest.raises(tf.errors.DataLossError):
        list(resume.read_shard(paths[0], 0, 8))
    assert [r.numpy() for r in resume.read_shard(paths[0], 4, 8)] == whole[4:]


def test_several_corrupt_bodies_in_a_shard_are_each_skipped_and_named(tmp_path):
    # Adjacent ones, and the shard's last record; ids from the conversion's
    # report beside the shards (the bodies cannot be trusted for them).
    paths = write_shards(tmp_path, videos(15), num_shards=3)  # shard 0: v0 v3 v6 v9 v12
    os.makedirs(tmp_path / ".convert")
    report = {"ids": ["v0", "gone", "v3", "v6", "v9", "v12"],
              "failed": [{"id": "gone", "reason": "could not decode"}]}
    (tmp_path / ".convert" / (os.path.basename(paths[0]) + ".json")).write_text(
        json.dumps(report))
    flip_bodies(paths[0], 1, 2, 4)  # v3, v6, v12
    path = str(tmp_path / "bad_records.jsonl")
    log = bad_records.BadRecordLog(path)
    batches = run_like_the_trainer(paths, log, 18, **KW)  # 12 good videos: 3 epochs
    entries = [json.loads(line) for line in open(path)]
    shard = os.path.basename(paths[0])
    assert sorted((e["shard"], e["record"], e["video_id"]) for e in entries) == [
        (shard, 1, "v3"), (shard, 2, "v6"), (shard, 4, "v12")], entries
    assert all("corrupted record" in e["error"] and "readable" not in e for e in entries)
    assert log.count() == 3
    good = [i for i in range(15) if i not in (3, 6, 12)]
    assert per_epoch_labels(batches, 12, 3) == [good] * 3
    assert_resumes_exactly(paths, path, batches, (0, 4, 7, 13), **KW)


def test_a_corrupt_body_is_named_with_the_id_kf_convert_wrote_down(tmp_path):
    # A real conversion with a failed video among the good ones: the shard's
    # report lists every entry, the failed one not written.
    from klassterfork.cli import convert as convert_cli
    from klassterfork.data import records
    from klassterfork.data.conversion import synthetic
    from klassterfork.data.reading.train_records import known_video_id

    synthetic.generate(tmp_path / "syn", num_train=3, num_val=0, seed=3, workers=1,
                       progress=False, min_seconds=0.5, max_seconds=0.6)
    good = sorted((tmp_path / "syn" / "videos").glob("*.mp4"))
    (tmp_path / "empty.mp4").write_bytes(b"")
    csv = tmp_path / "list.csv"
    csv.write_text(f"{good[0]},a\nempty.mp4,a\n{good[1]},b\n{good[2]},a\n")
    out = tmp_path / "out"
    assert convert_cli.main(["--csv", str(csv), "--out", str(out), "--split", "train",
                             "--workers", "1", "--quiet", "--short-side", "32",
                             "--num-shards", "1"]) == 0
    (path,) = [str(p) for p in sorted(out.glob("train-*.tfrecord"))]
    ids = [records.parse(r)["id"].numpy().decode() for r in tf.data.TFRecordDataset(path)]
    assert len(ids) == 3 and [known_video_id(path, r) for r in range(4)] == ids + [None]
    flip_bodies(path, 1)
    log = bad_records.BadRecordLog()
    run_like_the_trainer([path], log, 3, **{**KW, "clip_len": 2, "max_bad_records": 1})
    assert [(e["record"], e["video_id"]) for e in log.entries] == [(1, ids[1])]


@pytest.mark.parametrize("broken", ["length_crc", "truncated"])
def test_a_broken_header_or_truncated_end_is_still_a_cut_with_lost_counted(tmp_path, broken):
    paths = write_shards(tmp_path, videos(12), num_shards=3)  # shard 0: v0 v3 v6 v9
    manifest = {"shards": [{"file": os.path.basename(p), "videos": 4} for p in paths]}
    (tmp_path / "train.manifest.json").write_text(json.dumps(manifest))
    if broken == "length_crc":
        flip_length_crc(paths[0], 2)  # found at run time: v6 and v9 cannot be found
    else:
        assert truncate_mid_record(paths[0]) == 3  # found when built: v9 is lost
    readable = 2 if broken == "length_crc" else 3
    path = str(tmp_path / "bad_records.jsonl")
    log = bad_records.BadRecordLog(path)
    per_epoch = 8 + readable
    batches = run_like_the_trainer(paths, log, (3 * per_epoch + 1) // 2, **KW)
    entries = [json.loads(line) for line in open(path)]
    assert [(e["shard"], e["readable"], e["lost"]) for e in entries] == [
        (os.path.basename(paths[0]), readable, 4 - readable)], entries
    assert log.count() == 4 - readable
    good = [i for i in range(12) if i % 3 or i < 3 * readable]
    assert per_epoch_labels(batches, per_epoch, 3) == [good] * 3
    assert_resumes_exactly(paths, path, batches, (0, 3, per_epoch // 2 + 1), **KW)


@pytest.mark.parametrize("views_per_chunk", [None, 1])
def test_evaluation_skips_a_corrupt_body_and_reads_the_rest_of_its_shard(
        tmp_path, views_per_chunk):
    paths = write_shards(tmp_path, videos(15), num_shards=3)  # shard 0: v0 v3 v6 v9 v12
    flip_bodies(paths[0], 1, 2)  # v3, v6
    flip_bodies(paths[1], 4)  # v13: the shard's last record
    spec = EvalData.from_flat(clip_len=4, crop_size=16, num_clips=2, num_crops=1,
                              batch_size=4, views_per_chunk=views_per_chunk)
    ids, seen = [], set()
    for clips, labels, vids, where in eval_pipeline.eval_dataset(
            paths, spec, with_ids=True, skip_bad_records=True):
        ids += [v.decode() for v in vids.numpy()]
        positions = where if views_per_chunk is None else where["video_index"]
        seen.update(int(p) for p in positions.numpy())
    expected = [f"v{i}" for s in range(3) for i in range(s, 15, 3) if i not in (3, 6, 13)]
    assert sorted(set(ids)) == sorted(expected)
    assert len(ids) == len(expected) * (2 if views_per_chunk else 1)  # chunks: 2 a video
    found = eval_pipeline.missing_records(paths, spec, seen, dataset_key="val")
    assert [(e["shard"], e["record"]) for e in found] == [
        (os.path.basename(paths[0]), 1), (os.path.basename(paths[0]), 2),
        (os.path.basename(paths[1]), 4)], found
    assert all(e["error"].startswith("corrupted record at") for e in found), found


def test_pipelines_that_drop_bad_examples_themselves_read_past_a_corrupt_body(tmp_path):
    # Multi-worker (`skip_bad_records`) and tf.data service (`bad_records_dir`)
    # pipelines cannot be rebuilt at the failing step: their reader puts an
    # empty stand-in in the record's place and reads on (this stream used to
    # repeat other records after the failure).
    paths = write_shards(tmp_path, videos(8))  # shard 1: v1 v3 v5 v7
    flip_bodies(paths[1], 1)  # v3
    shard = os.path.basename(paths[1])
    good = [0, 1, 2, 4, 5, 6, 7]
    log = bad_records.BadRecordLog(str(tmp_path / "skipping.jsonl"))
    ds = pipeline.train_dataset(paths, skip_bad_records=True, bad_records=log, **KW)
    batches = [tuple(x.numpy() for x in b) for b in ds.take(14)]  # 4 epochs of 7
    assert per_epoch_labels(batches, 7, 4) == [good] * 4
    assert [(e["shard"], e["record"], e["epoch"]) for e in log.entries] == [(shard, 1, 0)]
    assert "corrupted record" in log.entries[0]["error"] and log.over_budget is None
    flags = tmp_path / "bad_records.d"
    log = bad_records.BadRecordLog(str(tmp_path / "flagged.jsonl"))
    ds = pipeline.train_dataset(paths, bad_records=log, bad_records_dir=str(flags), **KW)
    batches = [tuple(x.numpy() for x in b) for b in ds.take(7)]  # 2 epochs of 7
    assert per_epoch_labels(batches, 7, 2) == [good] * 2
    assert [(e["shard"], e["record"], e["epoch"]) for e in log.collect()] == [(shard, 1, 0)]
    assert "corrupted record" in log.entries[0]["error"]


def test_kf_train_skips_a_corrupt_body_and_a_resumed_run_ends_as_an_uninterrupted_one(
        tmp_path):
    # The trainer's path (BadRecordHook: diagnose, rebuild at the same step)
    # and the evaluation's: a corrupt train body, a corrupt val body; a run
    # stopped after them and resumed names the same records, none as a cut.
    from klassterfork.cli.train import main
    from tests.training.test_trainer import model_weights, write_config
    from tests.training.tiny_data import write_split

    data = tmp_path / "data"
    train = write_split(str(data), "train", 24, seed=0)
    val = write_split(str(data), "validation", 8, seed=1)
    flip_bodies(train[0], 5)
    flip_bodies(val[1], 1)
    full_cfg, full = write_config(tmp_path / "full", data, epochs=1, deterministic=True)
    # The uninterrupted run trains in its own process meanwhile.
    reference = subprocess.Popen(
        [sys.executable, "runs/train.py", str(full_cfg)], cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cfg, cut = write_config(tmp_path / "cut", data, epochs=1, deterministic=True)
    assert main([str(cfg), "--set", "train_loop.stop_after_steps=4"]) == 0
    # Stopped after the step that met the corrupt train record (of 6 steps).
    assert '"record": 5' in (cut / "stage0" / "bad_records.jsonl").read_text()
    assert main([str(cfg), "-r"]) == 0
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    for exp in (full, cut):
        entries = [json.loads(x) for x in open(exp / "stage0" / "bad_records.jsonl")]
        assert sorted((e["shard"], e["record"], e.get("set", "train")) for e in entries) == [
            (os.path.basename(train[0]), 5, "train"),
            (os.path.basename(val[1]), 1, "val")], entries
        assert not any("readable" in e for e in entries)
    # A failed step is not counted (train_step.py), so -r resumes at the
    # batch the uninterrupted run took next and ends on the same weights.
    for a, b in zip(model_weights(full / "stage0" / "model.keras"),
                    model_weights(cut / "stage0" / "model.keras"), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
