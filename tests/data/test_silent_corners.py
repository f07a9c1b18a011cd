"""The silent corners of issue 24 (item 7): each is now named in a warning, a
log line, a result key or an error."""

import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.config.loader import ConfigError, load
from klassterfork.data import pipeline, records
from klassterfork.data.reading import bad_records
from klassterfork.evaluation import metrics
from klassterfork.training import stage_eval
from klassterfork.training.stage_input import check_data
from tests.data.test_bad_records import truncate_mid_record
from tests.data.test_pipeline import video_record, write_shards
from tests.training.test_preflight import config  # the same tiny config
from tests.training.tiny_data import write_split




def check(path):
    stages, source = load(str(path))
    warnings = []
    check_data(stages[0], source, warn=warnings.append)
    return warnings


def edit_manifest(path, **changes):
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


# -------------------------------------------------------------- a. no manifest
def test_no_manifest_is_a_warning_naming_the_folder(tmp_path):
    data = tmp_path / "data"
    write_split(str(data), "train", 4, seed=0, num_shards=1)
    (data / "train.manifest.json").unlink()
    path = config(tmp_path, data, lambda c: c["datasets"].pop("val") and c[
        "datasets"]["train"].update(flip=False))
    warnings = check(path)
    assert len(warnings) == 1, warnings
    assert f"datasets.train: no manifest beside the shards in {data}; shard files, " \
        "record counts and the label map not checked" in warnings[0]


# ------------------------------------------------------------------ b. crop
def test_crop_checked_exactly_against_the_manifest_short_side(tmp_path):
    data = tmp_path / "data"
    write_split(str(data), "train", 4, seed=0, num_shards=1)  # 40 px records
    path = config(tmp_path, data, lambda c: c["datasets"].pop("val"))
    assert [w for w in check(path) if "crop_size" in w] == []  # crop 32 <= 40 sampled
    # The converter resized every record to 24 px: crop 32 is too big for all.
    edit_manifest(data / "train.manifest.json", settings={"short_side": 24})
    with pytest.raises(ConfigError, match=r"datasets.train.crop_size: crop_size 32 is "
                       r"larger than the frames' short side 24 px \(the manifest's "
                       r"settings.short_side: every record has it\)"):
        check(path)


def small_record(video_id):
    frame = np.zeros((24, 30, 3), np.uint8)  # short side 24 < crop 32
    jpeg = tf.io.encode_jpeg(frame).numpy()
    return records.write(video_id=video_id, frames=[jpeg] * 8, labels=[0],
                         fps=12.0, height=24, width=30)


def test_crop_larger_than_the_smallest_sampled_record_names_it(tmp_path):
    data = tmp_path / "data"  # 8 records of 40 px, 1 of 24 px
    write_split(str(data), "train", 8, seed=0, num_shards=1)
    os.replace(data / "train-00000-of-00001.tfrecord", data / "train-00000-of-00002.tfrecord")
    small = str(data / "train-00001-of-00002.tfrecord")
    with tf.io.TFRecordWriter(small) as writer:
        writer.write(small_record("tiny_video"))
    path = config(tmp_path, data, lambda c: c["datasets"].pop("val"))
    warnings = [w for w in check(path) if "crop_size" in w]
    assert len(warnings) == 1, warnings
    assert (f"crop_size 32 is larger than some stored frames (the smallest, 24 px, is "
            f"video 'tiny_video' in {small}; 1 of 9 sampled records are smaller; only 9 "
            "records were sampled") in warnings[0]


def test_crop_error_says_how_many_records_were_sampled(tmp_path):
    data = tmp_path / "data"
    write_split(str(data), "train", 4, seed=0, num_shards=1)
    path = config(tmp_path, data, lambda c: c["datasets"].pop("val") and c[
        "datasets"]["train"].update(crop_size=48))
    with pytest.raises(ConfigError, match=r"median short side 40 px in 4 sampled records; "
                       r"the smallest, 40 px, is video 'train_0'"):
        check(path)


# ---------------------------------------------------------- c, d. evaluation
def test_top5_with_three_classes_is_named_once_and_labelled_is_reported(
        tmp_path, monkeypatch, caplog):
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]], np.float32)
    labels = np.array([0, 0, -1])

    class Info:
        label_names = ["a", "b", "c"]

    def fake_data(block, info, source, key, *, skip):
        return None, [(tf.constant(scores[:, None]), tf.constant(labels),
                       tf.constant([b"x", b"y", b"z"]))]

    monkeypatch.setattr(stage_eval, "_eval_data", fake_data)
    predict = lambda zero_shot, chunked: (lambda clips: tf.reduce_mean(clips, axis=1))  # noqa: E731
    with caplog.at_level(logging.WARNING):
        out = stage_eval.evaluate_set(predict, "val", {}, Info(), None, None)
    assert out["videos"] == 3 and out["labelled"] == 2
    assert out["top1"] == 0.5 and out["top5"] == 1.0  # top-3 with 3 classes
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("datasets.val: top5 is top-3: the dataset has 3 classes (every "
                       "labelled video counts as a top-5 hit)") == 1, lines
    assert any("1 of 3 videos are unlabelled" in x for x in lines), lines


def test_metrics_summary_names_top5_with_few_classes(caplog):
    scores, labels = np.eye(3)[[0, 1, 2, 0]], np.array([0, 1, 0, 2])
    with caplog.at_level(logging.WARNING):
        few = metrics.summary(scores, labels)
    assert few["top5_is_top"] == 3 and few["top5"] == 1.0
    assert [r.getMessage() for r in caplog.records] == [
        "top5 is top-3: the dataset has 3 classes (every video counts as a top-5 hit)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        many = metrics.summary(np.eye(6)[[0, 1]], np.array([0, 1]))
    assert many["top5_is_top"] == 5 and caplog.records == []


# --------------------------------------------------------- f. label maps
def test_val_with_other_classes_than_train_is_a_located_error(tmp_path):
    data = tmp_path / "data"
    write_split(str(data), "train", 4, seed=0, num_shards=1, classes=(0, 1))
    write_split(str(data), "validation", 4, seed=0, num_shards=1, classes=(1, 0))
    path = config(tmp_path, data)
    with pytest.raises(ConfigError, match=r"datasets.val: its manifest names 2 classes, "
                       r"the train manifest 2, in another order or set \(label 0 is"):
        check(path)
    # A zero-shot set has its own classes on purpose: not compared.
    (tmp_path / "emb.npy").write_bytes(b"")
    stages, source = load(str(path))
    stages[0]["datasets"]["val"]["class_embeddings"] = str(tmp_path / "emb.npy")
    check_data(stages[0], source, warn=lambda _: None)


# ------------------------------------------- g. a truncated shard found later
def test_truncated_shard_found_on_resume_is_cut_from_that_epoch(tmp_path):
    videos = [video_record(f"v{i}", 6, i % 3) for i in range(12)]
    paths = write_shards(tmp_path, videos, num_shards=3)
    truncate_mid_record(paths[2])  # 11 readable records an epoch
    log = bad_records.BadRecordLog()
    # Batch 6 of 2 clips: record 12, i.e. epoch 1 (the file was whole in epoch 0).
    pipeline.train_dataset(paths, start_batch=6, bad_records=log, clip_len=6,
                           crop_size=16, batch_size=2, seed=1, max_bad_records=3)
    assert [(e["shard"], e["readable"], e["epoch"]) for e in log.entries] == [
        (os.path.basename(paths[2]), 3, 1)]
    fresh = bad_records.BadRecordLog()
    pipeline.read_shards(paths, fresh)  # no start known: epoch 0
    assert fresh.entries[0]["epoch"] == 0


# ------------------------------------------------ e, f. the converter's plan
def annotation(label_names, num_videos=2):
    from klassterfork.data.conversion.sources import Annotation, VideoEntry
    entries = [VideoEntry(video_id=f"v{i}", path=f"/nowhere/v{i}.mp4", labels=(0,),
                          label_text=label_names[0]) for i in range(num_videos)]
    return Annotation(entries=entries, label_names=list(label_names), missing=[])


def test_shard_count_clamped_to_the_videos_is_logged(tmp_path, caplog):
    from klassterfork.data.conversion import planning
    with caplog.at_level(logging.WARNING):
        job = planning.plan(annotation(["a", "b"]), str(tmp_path), split="train",
                            num_shards=5)
    assert len(job.names) == 2
    assert [r.getMessage() for r in caplog.records] == [
        "split 'train': 5 shards requested, 2 used: a shard holds at least one video "
        "and there are 2"]


def test_a_second_split_with_other_labels_is_refused(tmp_path):
    from klassterfork.data.conversion import planning
    (tmp_path / "train.manifest.json").write_text(json.dumps({"label_names": ["a", "b"]}))
    planning.plan(annotation(["a", "b"]), str(tmp_path), split="validation", num_shards=1)
    planning.plan(annotation(["b", "a"]), str(tmp_path), split="train", num_shards=1)
    with pytest.raises(ValueError, match=r"split 'validation' has 2 labels, split 'train' "
                       r".* has 2, and they differ at index 0 \('b' vs 'a'\)"):
        planning.plan(annotation(["b", "a"]), str(tmp_path), split="validation",
                      num_shards=1)
