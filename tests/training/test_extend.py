"""`-r` with a larger `train_loop.epochs` trains a finished run on (issue 11)
and ends where a run planned that long from the start ends."""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.training.tiny_data import tiny_config, write_split

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def start_cli(*args):
    return subprocess.Popen([sys.executable, "runs/train.py", *map(str, args)], cwd=ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(*args):
    proc = start_cli(*args)
    proc.stdout, proc.stderr = proc.communicate(timeout=300)
    return proc


# 26 s (three trainings); the default run keeps the extension decisions below.
@pytest.mark.slow
def test_resume_with_more_epochs_extends_a_finished_run(tmp_path):
    data = tmp_path / "data"
    write_split(str(data), "train", 24, seed=0)
    write_split(str(data), "validation", 8, seed=1)
    runs, procs = {}, []
    for name, epochs in (("long", 2), ("short", 1)):
        folder = tmp_path / name
        folder.mkdir()
        # The LR schedule is piecewise by epoch (boundary 2), so it does not
        # depend on the planned length and the two runs can agree exactly.
        (folder / "c.hjson").write_text(tiny_config(data, folder / "exp", epochs=epochs,
                                                    deterministic=True))
        runs[name] = (folder / "c.hjson", folder / "exp" / "stage0")
        # Side by side: independent runs, and most of each is one-core start-up.
        procs.append(start_cli(runs[name][0]))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    cfg, stage = runs["short"]
    assert (stage / "DONE").read_text().strip() == "6"

    # The best so far survives the resume: with epoch 1 logged at val_top1
    # 1.0, epoch 2 (anything <= 1.0) must not overwrite best.keras.
    with open(stage / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["val_top1"] != ""
    rows[0]["val_top1"] = "1.0"
    with open(stage / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    best_before = (stage / "best.keras").read_bytes()

    proc = run_cli(cfg, "-r", "--set", "train_loop.epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (stage / "best.keras").read_bytes() == best_before
    assert "stage 0: finished at step 6; the config now plans 12 steps" in proc.stdout
    assert (stage / "DONE").read_text().strip() == "12"
    with open(stage / "log.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    a = keras.saving.load_model(str(runs["long"][1] / "model.keras")).weights
    b = keras.saving.load_model(str(stage / "model.keras")).weights
    for wa, wb in zip(a, b):
        np.testing.assert_allclose(np.asarray(wa), np.asarray(wb), atol=1e-6, rtol=0)


def test_finished_stage_is_skipped_and_extension_refused_after_a_later_stage(tmp_path, capsys):
    """In-process, without training: the DONE marker and a stand-in checkpoint
    index are all the decision reads."""
    from klassterfork.cli.train import main

    data = tmp_path / "data"
    write_split(str(data), "train", 24, seed=0)
    write_split(str(data), "validation", 8, seed=1)
    first = json.loads(tiny_config(data, tmp_path / "exp", epochs=1))
    path = tmp_path / "c.hjson"
    path.write_text(json.dumps(first))
    stage0 = tmp_path / "exp" / "stage0"
    stage0.mkdir(parents=True)
    (stage0 / "DONE").write_text("6\n")
    assert main([str(path), "-r"]) == 0
    assert "stage 0: already complete at step 6 (the config plans 6), skipped" \
        in capsys.readouterr().out

    second = {"train_loop": {"epochs": 1}}  # a second stage, already started
    path.write_text(json.dumps([first, second]))
    ckpts = tmp_path / "exp" / "stage1" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\n')
    (ckpts / "ckpt-2.index").write_bytes(b"")
    assert main([str(path), "-r", "--set", "train_loop.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "train_loop.epochs: stage 0 finished at step 6 and stage 1 has already trained " \
        "from its weights" in err


def test_best_logged_reads_the_rows_up_to_the_restored_step(tmp_path):
    from klassterfork.training.run_logs import best_logged

    path = tmp_path / "log.csv"
    path.write_text("epoch,step,loss,val_top1,val_loss\n1,6,2.0,0.5,1.5\n2,12,1.8,,\n"
                    "3,18,1.5,0.75,1.2\n4,24,1.4,0.9,0.9\n")
    assert best_logged(str(path), "val_top1", 18) == 0.75
    assert best_logged(str(path), "val_top1", 24) == 0.9
    assert best_logged(str(path), "val_loss", 18) == -1.2  # losses: lower is better
    assert best_logged(str(path), "val_top1", 5) == -np.inf
    assert best_logged(str(tmp_path / "none.csv"), "val_top1", 5) == -np.inf
