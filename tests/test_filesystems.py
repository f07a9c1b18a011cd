"""One filesystem layer (issue 24, item 5): training, resume and evaluation
with the records and the experiment folder on TensorFlow's in-memory
`ram://` filesystem, which takes the same `tf.io.gfile` code path as
`gs://`; files.py's remote branch on its own."""

import csv
import io
import json
import os

import pytest
import tensorflow as tf

from klassterfork import files
from klassterfork.cli.train import main
from tests.training.tiny_data import tiny_config, write_split

gfile = tf.io.gfile


def to_ram(local_dir, ram_dir):
    gfile.makedirs(ram_dir)
    for name in os.listdir(local_dir):
        files.copy(os.path.join(local_dir, name), f"{ram_dir}/{name}")


def test_atomic_writes_and_appends_on_ram(tmp_path):
    root = "ram://kf_files_test"
    files.write_json_atomic(f"{root}/a/b.json", {"x": 1})
    with files.open_file(f"{root}/a/b.json") as f:
        assert json.load(f) == {"x": 1}
    files.append_text(f"{root}/log.csv", "1\n")
    files.append_text(f"{root}/log.csv", "2\n")
    with gfile.GFile(f"{root}/log.csv") as f:
        assert f.read() == "1\n2\n"
    with files.atomic_path(f"{root}/m.bin") as local:
        assert not files.is_remote(local)
        with open(local, "wb") as f:
            f.write(b"abc")
    with gfile.GFile(f"{root}/m.bin", "rb") as f:
        assert f.read() == b"abc"
    with pytest.raises(RuntimeError):  # a failed write leaves nothing behind
        with files.atomic_write(f"{root}/c.txt") as f:
            f.write("half")
            raise RuntimeError("writer died")
    assert not gfile.exists(f"{root}/c.txt")
    assert not [n for n in gfile.listdir(root) if n.endswith(".tmp")]
    assert files.glob(f"{root}/*.csv") == [f"{root}/log.csv"]
    with pytest.raises(FileNotFoundError):
        files.open_file(f"{root}/missing.json")


def test_train_resume_evaluate_on_ram(tmp_path):
    local = tmp_path / "data"
    write_split(str(local), "train", 24, seed=0)
    write_split(str(local), "validation", 8, seed=1)
    to_ram(str(local), "ram://kf_data")
    exp = "ram://kf_exp"
    cfg = tmp_path / "c.hjson"
    cfg.write_text(tiny_config("ram://kf_data", exp, epochs=2))

    assert main([str(cfg), "--set", "train_loop.stop_after_steps=5"]) == 0
    assert not gfile.exists(f"{exp}/stage0/DONE")
    assert tf.train.latest_checkpoint(f"{exp}/stage0/checkpoints").endswith("ckpt-5")
    assert main([str(cfg), "-r"]) == 0
    with gfile.GFile(f"{exp}/stage0/DONE") as f:
        assert int(f.read()) == 12  # 2 epochs x 24 videos / batch 4
    with gfile.GFile(f"{exp}/stage0/log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(io.StringIO(f.read()))] == [6, 12]
    assert gfile.exists(f"{exp}/stage0/model.keras")
    assert gfile.exists(f"{exp}/config.resolved.json")

    assert main([str(cfg), "-e"]) == 0
    with gfile.GFile(f"{exp}/stage0/predictions_val.json") as f:
        text = f.read()
    assert "validation_0" in text and "validation_7" in text
    assert not os.path.exists("ram:")  # nothing went to a local folder named ram:


def test_converter_rerun_removes_a_killed_runs_tmp_shard(tmp_path, caplog):
    from klassterfork.data.conversion import convert, synthetic
    from klassterfork.data.conversion.sources import SOURCES

    videos = tmp_path / "videos"
    synthetic.generate(videos, num_train=4, num_val=0, seed=3, workers=1, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    # What files.atomic_write leaves when the process is killed mid-shard.
    stale = out / ".train-00001-of-00002.tfrecord.abcd1234.tmp"
    stale.write_bytes(b"half a shard")
    stale.chmod(0o600)
    other = out / ".notes.txt.abcd1234.tmp"  # not a shard of this split: kept
    other.write_bytes(b"")
    annotation = SOURCES["synthetic"](annotations=str(videos), split="train")
    with caplog.at_level("WARNING"):
        manifest = convert.convert(annotation, out, split="train", short_side=32,
                                   workers=1, num_shards=2, progress=False)
    assert not stale.exists() and other.exists()
    assert any(str(stale) in r.getMessage() for r in caplog.records)
    assert manifest["counts"]["written"] == 4
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == [other.name]
