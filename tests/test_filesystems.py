"""One filesystem layer (issue 24, item 5): training, resume and evaluation
with the records and the experiment folder on TensorFlow's in-memory
`ram://` filesystem, which takes the same `tf.io.gfile` code path as
`gs://`; files.py's remote branch on its own; the evaluation and analysis
writers on ram://; and the demo end to end in memory: converted into
fsspec's `memory://` (the converter's layer, tests/data/test_convert_memory.py),
copied to ram://, trained, resumed and evaluated there."""

import csv
import io
import json
import os
import uuid

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


@pytest.mark.slow  # the in-memory demo below takes the same path by default
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


def local_to_memory(folder, url):
    """Copies a local folder's files to a memory:// folder."""
    import fsspec

    memory = fsspec.filesystem("memory")
    for d, _, names in os.walk(folder):
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                memory.pipe_file(f"{url}/{os.path.relpath(os.path.join(d, n), folder)}",
                                 f.read())


def memory_to_ram(url, ram_dir):
    """Copies every file under a memory:// folder to `ram_dir`: the
    converter's memory (fsspec) and TensorFlow's ram:// are two stores."""
    import fsspec

    memory = fsspec.filesystem("memory")
    root = memory._strip_protocol(url)
    for path in memory.find(root):
        files.write_bytes_atomic(f"{ram_dir}/{path[len(root) + 1:]}",
                                 memory.cat_file(path))
    memory.rm(root, recursive=True)


def fsspec_memory_rm(url):
    import fsspec

    fsspec.filesystem("memory").rm(url, recursive=True)


def test_demo_converts_trains_resumes_evaluates_in_memory(tmp_path):
    """The small demo (synthetic videos, `make demo`'s conversion settings)
    with every path it reads or writes in memory: the videos and annotations
    (generated locally, then copied) and the records on memory://, the
    records then on ram://, the experiment folder on ram://; the tiny model,
    a few steps."""
    from klassterfork.data.conversion import convert, synthetic
    from klassterfork.data.conversion.sources import SOURCES

    videos = tmp_path / "synthetic"
    synthetic.generate(videos, num_train=8, num_val=4, seed=0, workers=1,
                       progress=False)
    root = f"memory://kf-demo-{uuid.uuid4().hex[:8]}"
    local_to_memory(videos, f"{root}/synthetic")
    url = f"{root}/records"
    ids = {}
    for split in ("train", "validation"):
        annotation = SOURCES["synthetic"](annotations=f"{root}/synthetic",
                                          videos=f"{root}/synthetic/videos",
                                          split=split)
        assert all(e.path.startswith(root) for e in annotation.entries)
        ids[split] = sorted(e.video_id for e in annotation.entries)
        manifest = convert.convert(annotation, url, split=split, short_side=56,
                                   workers=1, num_shards=2, progress=False)
        assert manifest["counts"]["written"] == len(ids[split])
    data, exp = "ram://kf_demo_data", "ram://kf_demo_exp"
    memory_to_ram(url, data)
    fsspec_memory_rm(root)
    assert len(files.glob(f"{data}/train-*.tfrecord")) == 2
    cfg = tmp_path / "c.hjson"
    cfg.write_text(tiny_config(data, exp, epochs=2))

    assert main([str(cfg), "--set", "train_loop.stop_after_steps=3"]) == 0
    assert tf.train.latest_checkpoint(f"{exp}/stage0/checkpoints").endswith("ckpt-3")
    assert main([str(cfg), "-r"]) == 0
    with gfile.GFile(f"{exp}/stage0/DONE") as f:
        assert int(f.read()) == 4  # 2 epochs x 8 videos / batch 4
    with gfile.GFile(f"{exp}/stage0/log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(io.StringIO(f.read()))] == [2, 4]
    assert gfile.exists(f"{exp}/stage0/model.keras")
    assert gfile.exists(f"{exp}/config.resolved.json")
    assert main([str(cfg), "-e"]) == 0
    with gfile.GFile(f"{exp}/stage0/predictions_val.json") as f:
        doc = json.load(f)
    assert sorted(v["id"] for v in doc["videos"]) == ids["validation"]
    assert len(doc["class_names"]) == len(synthetic.LABEL_NAMES)
    assert not os.path.exists("ram:") and not os.path.exists("memory:")


def test_evaluation_and_analysis_writers_on_ram():
    """Predictions, a submission, a confusion PNG, a per-class CSV and a
    training plot written to ram:// (files.py's gfile branch) and read back."""
    from klassterfork.analysis import confusion, contrastive, plot_training
    from klassterfork.evaluation import metrics, predictions, submission

    root = "ram://kf_eval_out"
    scores = [[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]]
    names = ["left", "right", "up"]
    npz, _ = predictions.write_predictions(f"{root}/preds/val", ["a", "b", "c"],
                                           scores, [0, 1, 1], names)
    assert npz == f"{root}/preds/val.npz"
    back = predictions.read_predictions(f"{root}/preds/val.json")
    assert back["ids"] == ["a", "b", "c"] and back["class_names"] == names
    assert back["scores"].tolist() == tf.constant(scores, tf.float32).numpy().tolist()
    written = submission.write_submission(f"{root}/sub.csv", ["a", "b"], scores[:2],
                                          k=2)
    assert written == f"{root}/sub.csv"
    assert submission.read_submission(f"{root}/sub.csv")[0] == ["a", "b"]

    cm = metrics.confusion_matrix([0, 1, 1], [0, 1, 2], 3)
    confusion.plot_confusion_matrix(cm, names, f"{root}/plots/confusion.png")
    with gfile.GFile(f"{root}/plots/confusion.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    report = metrics.per_class_precision_recall(tf.constant(scores).numpy(), [0, 1, 1])
    confusion.write_per_class_csv(f"{root}/plots/per_class.csv", names, report)
    with gfile.GFile(f"{root}/plots/per_class.csv") as f:
        assert [r["class_name"] for r in csv.DictReader(f)] == names

    files.write_text_atomic(f"{root}/log.csv", "epoch,loss,lr\n1,2.0,0.1\n2,1.5,0.05\n")
    plot_training.plot_training(f"{root}/log.csv", f"{root}/plots/training.png")
    assert gfile.exists(f"{root}/plots/training.png")
    files.write_text_atomic(f"{root}/classes.txt", "left\nright\nup\n")
    assert predictions.read_class_names(f"{root}/classes.txt") == names
    files.write_text_atomic(f"{root}/groups.txt", "left\nright\n")
    assert contrastive.parse_groups(f"{root}/groups.txt", names)[0].indices == (0, 1)
    assert not [n for n in gfile.listdir(f"{root}/plots") if n.endswith(".tmp")]
