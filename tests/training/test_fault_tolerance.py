"""Kill a training process with SIGKILL mid-run, resume with -r, and compare
with an uninterrupted run (issue 5): same final step, weights within 1e-6."""

import os
import random
import signal
import subprocess
import sys
import time

import keras
import numpy as np

from klassterfork.cli.train import main
from tests.training.tiny_data import tiny_config, write_split

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def config(tmp_path, data, name):
    folder = tmp_path / name
    folder.mkdir()
    path = folder / "c.hjson"
    path.write_text(tiny_config(data, folder / "exp", epochs=3, deterministic=True,
                                checkpoint_every_steps=1, keep_checkpoints=3))
    return path, folder / "exp"


def latest_step(checkpoints):
    if not os.path.exists(checkpoints / "checkpoint"):
        return 0
    with open(checkpoints / "checkpoint") as f:
        first = f.readline()  # model_checkpoint_path: "ckpt-N"
    return int(first.rsplit("-", 1)[1].strip().strip('"'))


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    data = tmp_path / "data"
    write_split(str(data), "train", 24, seed=0)
    write_split(str(data), "validation", 8, seed=1)
    full_cfg, full_exp = config(tmp_path, data, "full")
    # The uninterrupted reference trains beside the run to kill (independent
    # processes; most of each is one-core start-up).
    full = subprocess.Popen(
        [sys.executable, "runs/train.py", str(full_cfg)], cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )

    cfg, exp = config(tmp_path, data, "killed")
    kill_after = random.Random(os.getpid()).randint(3, 14)  # of 18 steps
    proc = subprocess.Popen(
        [sys.executable, "runs/train.py", str(cfg)], cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    checkpoints = exp / "stage0" / "checkpoints"
    deadline = time.time() + 240
    while latest_step(checkpoints) < kill_after and proc.poll() is None:
        assert time.time() < deadline, "training made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (exp / "stage0" / "DONE").exists()

    assert main([str(cfg), "-r"]) == 0
    _, err = full.communicate(timeout=300)
    assert full.returncode == 0, err[-3000:]
    for e in (full_exp, exp):
        assert (e / "stage0" / "DONE").read_text().strip() == "18"
    a = keras.saving.load_model(str(full_exp / "stage0" / "model.keras")).weights
    b = keras.saving.load_model(str(exp / "stage0" / "model.keras")).weights
    for wa, wb in zip(a, b):
        np.testing.assert_allclose(np.asarray(wa), np.asarray(wb), atol=1e-6, rtol=0)
