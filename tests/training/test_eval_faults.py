"""Evaluation faults (issue 24): a corrupt validation record is named in
bad_records.jsonl and the evaluation finishes over the rest; a signal during
an evaluation stops it within one batch (exit 75, the epoch-end checkpoint
already written) and `-r` runs that evaluation again, as it does after an
evaluation that crashed."""

import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from klassterfork import exit_codes
from klassterfork.cli.train import main
from klassterfork.config import loader
from klassterfork.data.reading import bad_records
from klassterfork.training import builders, stage_eval
from tests.data.test_bad_records import corrupt_frame
from tests.training.tiny_data import tiny_config, write_split


def mean_predict(zero_shot, chunked):
    """A model-free stand-in: per view, the clip's mean and 1 - mean, as
    (B, V, 2) (chunked) or averaged over views (B, 2)."""
    del zero_shot

    def per_view(clips):
        m = tf.reduce_mean(tf.cast(clips, tf.float32), axis=[2, 3, 4, 5])
        return tf.stack([m, 1.0 - m], axis=-1)

    return per_view if chunked else (lambda clips: tf.reduce_mean(per_view(clips), 1))


def val_set(tmp_path, data, **extra):
    config = json.loads(tiny_config(data, tmp_path / "exp"))
    config["datasets"]["val"].update(extra)
    path = tmp_path / "c.hjson"
    path.write_text(json.dumps(config))
    stages, source = loader.load(str(path))
    block = stages[0]["datasets"]["val"]
    return block, builders.dataset_info(block, source, "datasets.val"), source


def evaluate(block, info, source, log=None):
    return stage_eval.evaluate_set(mean_predict, "val", block, info, None, source,
                                   bad_records=log)


@pytest.mark.parametrize("chunked", [False, True])
def test_a_corrupt_validation_record_is_named_and_the_rest_scored(tmp_path, chunked):
    data, clean = tmp_path / "data", tmp_path / "clean"
    extra = {"views_per_chunk": 1, "batch_size": 3} if chunked else {"batch_size": 3}
    paths = write_split(str(data), "validation", 8, seed=1, num_frames=4)
    # The reference: the same set without the record, read with no tolerance.
    kept = [r.numpy() for r in tf.data.TFRecordDataset(paths[1])]
    video_id = corrupt_frame(paths[1], 1, 0)
    write_split(str(clean), "validation", 8, seed=1, num_frames=4)
    with tf.io.TFRecordWriter(os.path.join(clean, os.path.basename(paths[1]))) as w:
        for i, record in enumerate(kept):
            if i != 1:
                w.write(record)
    log = bad_records.BadRecordLog(str(tmp_path / "bad_records.jsonl"))
    got = evaluate(*val_set(tmp_path, data, **extra), log)
    want = evaluate(*val_set(tmp_path, clean, **extra))
    assert got["skipped"] == 1 and got["videos"] == 7 == want["videos"]
    for key in ("top1", "top5", "loss"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6)
    entries = [json.loads(x) for x in open(log.path)]
    assert len(entries) == 1, entries
    entry = entries[0]
    assert (entry["shard"], entry["record"], entry["video_id"], entry["set"]) == (
        os.path.basename(paths[1]), 1, video_id, "val")
    assert "JPEG" in entry["error"], entry  # what the decoder said
    assert log.count() == 0  # not counted against the train budget
    # Without a log a bad record still raises.
    with pytest.raises(tf.errors.InvalidArgumentError):
        evaluate(*val_set(tmp_path, data, **extra))


def csv_rows(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def small_run(tmp_path):
    data = tmp_path / "data"
    write_split(str(data), "train", 8, seed=0)
    write_split(str(data), "validation", 8, seed=1)  # 2 batches of 4
    config = json.loads(tiny_config(data, tmp_path / "exp", epochs=2,
                                    checkpoint_every_steps=1000))
    path = tmp_path / "c.hjson"
    path.write_text(json.dumps(config))
    return str(path), tmp_path / "exp" / "stage0"


def test_sigterm_during_evaluation_stops_it_and_resume_runs_it(tmp_path, monkeypatch,
                                                              capsys):
    config, stage = small_run(tmp_path)  # 2 steps an epoch, 2 epochs
    checks = []
    real_check = stage_eval._check_stop

    def check(should_stop):
        checks.append(should_stop())
        if len(checks) == 2:  # the first evaluation, its first batch scored
            os.kill(os.getpid(), signal.SIGTERM)
        return real_check(should_stop)

    monkeypatch.setattr(stage_eval, "_check_stop", check)
    assert main([config]) == exit_codes.PREEMPTED
    assert checks == [False, False]  # it stopped there: no batch after the signal
    assert tf.train.latest_checkpoint(str(stage / "checkpoints")).endswith("ckpt-2")
    assert not (stage / "log.csv").exists() or csv_rows(stage / "log.csv") == []
    assert json.loads((stage / "eval_pending.json").read_text())["step"] == 2
    monkeypatch.setattr(stage_eval, "_check_stop", real_check)
    capsys.readouterr()
    assert main([config, "-r"]) == 0
    out = capsys.readouterr().out
    assert "at step 2" in out  # resumed at the epoch's end: no step lost
    assert "running the evaluation of epoch 1" in out
    rows = csv_rows(stage / "log.csv")
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "2"), ("2", "4")]
    assert all(r["val_top1"] != "" for r in rows), rows
    assert (stage / "DONE").read_text().strip() == "4"
    assert (stage / "best.keras").exists() and not (stage / "eval_pending.json").exists()


def test_an_evaluation_crash_loses_no_step_and_resume_runs_it(tmp_path, monkeypatch,
                                                              capsys):
    config, stage = small_run(tmp_path)
    real = stage_eval.predict_unchunked

    def crash(*args, **kw):
        raise RuntimeError("stand-in evaluation crash")

    monkeypatch.setattr(stage_eval, "predict_unchunked", crash)
    with pytest.raises(RuntimeError, match="stand-in evaluation crash"):
        main([config])
    assert tf.train.latest_checkpoint(str(stage / "checkpoints")).endswith("ckpt-2")
    monkeypatch.setattr(stage_eval, "predict_unchunked", real)
    capsys.readouterr()
    assert main([config, "-r"]) == 0
    assert "at step 2" in capsys.readouterr().out
    rows = csv_rows(stage / "log.csv")
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "2"), ("2", "4")]
    assert all(r["val_top1"] != "" for r in rows), rows
    assert not (stage / "eval_pending.json").exists()
