"""The data checked against the manifest and the config before step 1 (issue
11): located errors / warnings with the numbers, from kf-train and --dry-run."""

import json
import os

import pytest

from klassterfork.cli.train import main
from klassterfork.config.loader import ConfigError, load
from klassterfork.training.trainer import check_data
from tests.training.tiny_data import tiny_config, write_split

VIDEOS, SHARDS = 24, 2  # 12 videos of 8 frames, 40x40 px, per shard
TRAIN = '"train"'  # the train block's line in the JSON config


@pytest.fixture
def setup(tmp_path):
    data = tmp_path / "data"
    for split, videos in (("validation", 8), ("train", VIDEOS)):
        paths = write_split(str(data), split, videos, seed=0, num_shards=SHARDS)
        manifest_path = data / f"{split}.manifest.json"
        manifest = json.loads(manifest_path.read_text())
        # The converter's shard list (tiny_data writes video i to shard i % SHARDS).
        manifest["shards"] = [{"file": os.path.basename(p), "videos": videos // SHARDS,
                               "frames": 8 * videos // SHARDS} for p in paths]
        manifest_path.write_text(json.dumps(manifest))
    return data, paths, manifest_path


def config(tmp_path, data, edit=None):
    cfg = json.loads(tiny_config(data, tmp_path / "exp", epochs=1))
    if edit:
        edit(cfg)
    path = tmp_path / "c.hjson"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def line_of(path, text, after=None):
    lines = path.read_text().splitlines()
    start = next(i for i, x in enumerate(lines) if after in x) if after else 0
    return next(i for i in range(start, len(lines)) if text in lines[i]) + 1


def check(path):
    stages, source = load(str(path))
    warnings = []
    check_data(stages[0], source, warn=warnings.append)
    return warnings


def test_clean_data_passes_without_warnings(setup, tmp_path):
    data, _, _ = setup
    assert check(config(tmp_path, data)) == []


def test_missing_shard_is_a_located_error_from_kf_train(setup, tmp_path, capsys):
    data, paths, _ = setup
    os.remove(paths[1])
    path = config(tmp_path, data)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"kf-train: config error: {path}:{line_of(path, TRAIN)}: "
                          "datasets.train: 1 shard(s) listed in the manifest are missing")
    assert "train-00001-of-00002.tfrecord (12 of 24 videos)" in err
    assert not (tmp_path / "exp" / "stage0").exists()  # stopped before anything ran


def test_extra_and_recounted_shards_are_errors(setup, tmp_path):
    data, paths, manifest_path = setup
    path = config(tmp_path, data)
    extra = data / "train-00000-of-00003.tfrecord"  # left from another conversion
    extra.write_bytes(open(paths[0], "rb").read())
    with pytest.raises(ConfigError, match=r"1 shard\(s\) in .* are not in the manifest: "
                       "train-00000-of-00003.tfrecord"):
        check(path)
    extra.unlink()
    manifest = json.loads(manifest_path.read_text())
    manifest["shards"][0]["videos"] = 13
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=f"{paths[0]} holds 12 records, the manifest says 13"):
        check(path)


def test_truncated_shard_is_a_warning_naming_the_file(setup, tmp_path):
    data, paths, _ = setup
    blob = open(paths[0], "rb").read()
    with open(paths[0], "wb") as f:
        f.write(blob[: len(blob) - 100])  # cut inside the last record
    warnings = check(config(tmp_path, data))
    assert len(warnings) == 1
    assert f"{paths[0]} ends inside a record after 11 complete record(s) (manifest: 12)" \
        in warnings[0]


def test_labels_outside_num_classes(setup, tmp_path, capsys):
    data, _, manifest_path = setup

    def one_class(cfg):
        cfg["model"]["R2Plus1D"]["num_classes"] = 1

    path = config(tmp_path, data, one_class)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{line_of(path, 'num_classes')}: model.R2Plus1D.num_classes: " \
           "num_classes is 1, but the manifest of datasets.train names 2 classes" in err
    manifest = json.loads(manifest_path.read_text())
    del manifest["label_names"]  # no label map: the sampled records' labels
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="num_classes is 1, but datasets.train holds "
                       r"label 1 \(in 24 sampled records\)"):
        check(path)


def test_clip_longer_than_most_videos(setup, tmp_path):
    data, _, _ = setup

    def long_clip(cfg, **extra):
        cfg["datasets"]["train"].update(clip_len=5, frame_step=2, **extra)  # 9 > 8 frames

    path = config(tmp_path, data, long_clip)
    with pytest.raises(ConfigError) as err:
        check(path)
    assert str(err.value).startswith(
        f"{path}:{line_of(path, 'clip_len', after=TRAIN)}: datasets.train.clip_len: "
        "clip_len 5 x frame_step 2 spans 9 frames, longer than 24 of 24 sampled videos "
        "(median 8 frames)")
    path = config(tmp_path, data, lambda c: long_clip(c, short_video="loop"))
    warnings = check(path)  # chosen explicitly: a warning, not an error
    assert len(warnings) == 1 and "padded by short_video: 'loop'" in warnings[0]


def test_clip_longer_than_most_but_not_all_videos_is_a_warning(tmp_path):
    data = tmp_path / "data"  # 12 videos of 8 frames, 4 of 12 frames
    write_split(str(data), "train", 12, seed=0, num_shards=1, num_frames=8)
    write_split(str(data / "long"), "train", 4, seed=1, num_shards=1, num_frames=12)
    os.replace(data / "long" / "train-00000-of-00001.tfrecord",
               data / "train-00001-of-00002.tfrecord")
    os.replace(data / "train-00000-of-00001.tfrecord", data / "train-00000-of-00002.tfrecord")
    path = config(tmp_path, data, lambda c: c["datasets"].pop("val") and c[
        "datasets"]["train"].update(clip_len=5, frame_step=2))  # 9 frames
    warnings = check(path)
    assert len(warnings) == 2, warnings  # the manifest lists no shards; the clip
    assert "spans 9 frames, longer than 12 of 16 sampled videos (median 8 frames); " \
        "their clips are padded by short_video: 'repeat'" in warnings[1]


def test_crop_larger_than_stored_frames(setup, tmp_path):
    data, _, _ = setup
    path = config(tmp_path, data, lambda c: c["datasets"]["val"].update(crop_size=48))
    with pytest.raises(ConfigError, match=r"datasets.val.crop_size: crop_size 48 is larger "
                       r"than the stored frames \(median short side 40 px in 8 sampled"):
        check(path)


def test_dry_run_checks_the_real_data(setup, tmp_path, capsys):
    data, paths, _ = setup
    os.remove(paths[0])
    path = config(tmp_path, data)
    assert main([str(path), "--dry-run"]) == 2  # fails on the real data, no stand-in
    assert "shard(s) listed in the manifest are missing" in capsys.readouterr().err
    path = config(tmp_path, tmp_path / "no_such_dir")
    assert main([str(path), "--dry-run"]) == 0  # the recipe runs on a stand-in, and says so
    captured = capsys.readouterr()
    assert "datasets.train (no TFRecord shards found" in captured.err
    assert "data NOT checked (not found): datasets.train" in captured.out
