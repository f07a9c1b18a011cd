"""`init_weights` in a stage (issue 22): a run starts from a trained model.

A small R(2+1)D is trained to a low loss; a second run starts from its
`stage0/model.keras` at a near-zero learning rate, so its first-epoch loss
shows what the weights bring: it must be at most 0.8x that of a fresh start
at the same rate. The report lists every variable as loaded; from a model
with another class count exactly the head stays initialized; a missing file
is exit 2 naming `init_weights`; `-r` does not reload over the stage's own
checkpoint.
"""

import csv
import json

import pytest

from klassterfork.cli.train import main
from tests.training.tiny_data import tiny_config, write_split

NEAR_ZERO_LR = {"Adam": {"learning_rate": 1e-7}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data_dir, the trained stage-0 model path)."""
    root = tmp_path_factory.mktemp("init")
    write_split(str(root / "data"), "train", 24, seed=0)
    write_split(str(root / "data"), "validation", 8, seed=1)
    config = json.loads(tiny_config(root / "data", root / "pretrain", epochs=6))
    config["optimizer"] = {"Adam": {"learning_rate": 0.01}}
    (root / "pretrain.hjson").write_text(json.dumps(config))
    assert main([str(root / "pretrain.hjson")]) == 0
    return root / "data", root / "pretrain" / "stage0" / "model.keras"


def run(tmp_path, data_dir, name, *, init=None, num_classes=None, extra=()):
    config = json.loads(tiny_config(data_dir, tmp_path / name, epochs=1))
    config["optimizer"] = NEAR_ZERO_LR
    if init is not None:
        config["init_weights"] = init
    if num_classes is not None:
        config["model"]["R2Plus1D"]["num_classes"] = num_classes
    path = tmp_path / f"{name}.hjson"
    path.write_text(json.dumps(config))
    return main([str(path), *extra]), tmp_path / name / "stage0"


def first_epoch_loss(stage_dir):
    with open(stage_dir / "log.csv") as f:
        return float(next(csv.DictReader(f))["loss"])


def test_a_run_from_trained_weights_starts_where_they_left_off(trained, tmp_path, capsys):
    data_dir, model_path = trained
    code, fresh = run(tmp_path, data_dir, "fresh")
    assert code == 0
    code, warm = run(tmp_path, data_dir, "warm", init={"path": str(model_path)})
    assert code == 0
    assert first_epoch_loss(warm) <= 0.8 * first_epoch_loss(fresh), (
        first_epoch_loss(warm), first_epoch_loss(fresh))
    report = json.loads((warm / "init_report.json").read_text())
    assert report["source"]["format"] == "keras" and len(report["source"]["sha256"]) == 64
    assert report["initialized"] == [] and report["unused"] == []
    assert len(report["loaded"]) > 10
    assert "init_weights:" in capsys.readouterr().out
    # -r once the stage has its own checkpoint: the file is not loaded again.
    config = tmp_path / "warm.hjson"
    cfg = json.loads(config.read_text())
    cfg["train_loop"]["epochs"] = 2
    config.write_text(json.dumps(cfg))
    assert main([str(config), "-r"]) == 0
    assert "init_weights not loaded: the stage resumes from its own checkpoint" in (
        capsys.readouterr().out)


@pytest.mark.slow  # 8-12 s; tests/weights/test_init_weights.py checks the same report by default
def test_another_class_count_leaves_exactly_the_head_initialized(trained, tmp_path):
    data_dir, _ = trained
    four = tmp_path / "four"
    write_split(str(four), "train", 8, seed=2, classes=(0, 1, 2, 3))
    write_split(str(four), "validation", 4, seed=3, classes=(0, 1, 2, 3))
    config = json.loads(tiny_config(four, tmp_path / "source", epochs=1))
    (tmp_path / "source.hjson").write_text(json.dumps(config))
    assert main([str(tmp_path / "source.hjson")]) == 0
    source = tmp_path / "source" / "stage0" / "model.keras"
    code, stage = run(tmp_path, data_dir, "two", init={"path": str(source)})
    assert code == 0
    report = json.loads((stage / "init_report.json").read_text())
    names = sorted(item["name"] for item in report["initialized"])
    assert len(names) == 2 and all("logits" in n for n in names), names
    assert all("in the file" in item["reason"] for item in report["initialized"])
    # The file's 4-class head was paired with ours (shape differs), not unused.
    assert report["unused"] == []


def test_missing_file_is_exit_2_naming_init_weights(trained, tmp_path, capsys):
    data_dir, _ = trained
    code, _ = run(tmp_path, data_dir, "missing", init={"path": str(tmp_path / "nope.keras")})
    assert code == 2
    err = capsys.readouterr().err
    assert "init_weights.path" in err and "nope.keras" in err
    assert "Traceback" not in err
