"""MirroredStrategy on 2 logical CPUs trains like one device (issue 15).

The reference is the default-strategy run of the same config: same initial
weights, same clips, deterministic ops, dropout off and synchronized batch
norm (batch statistics over the global batch on both sides), so the two runs
differ only in float summation order. SGD at lr 0.005 keeps the 4 steps in
the linear regime (see the 2-worker test in test_trainer.py). A loss divided
by the per-replica instead of the global batch, gradients not summed over
replicas, or one replica's update lost, moves the weights 2x or 0.5x as far,
which the 40+ weights that move >= 3e-5 reveal against the 1e-5 tolerance.
The mirrored run goes through kf-train (`runs/train.py`, with
`train_loop.logical_cpu_devices: 2`) in a subprocess: logical devices must be
set before TensorFlow initializes.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from klassterfork.config.loader import load
from klassterfork.training.trainer import Stage
from tests.training.tiny_data import tiny_config, write_split

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ATOL = 1e-5


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mirrored")
    write_split(str(d), "train", 16, seed=0)
    return d


def write_config(folder, data_dir, **loop):
    folder.mkdir()
    config = json.loads(tiny_config(
        data_dir, folder / "exp", epochs=1, sync_batchnorm=True, deterministic=True, **loop,
    ))
    del config["datasets"]["val"]
    config["model"]["R2Plus1D"]["dropout"] = 0.0
    config["optimizer"] = {"SGD": {"learning_rate": 0.005, "momentum": 0.9}}
    path = folder / "c.hjson"
    path.write_text(json.dumps(config))
    return str(path), folder / "exp"


# 13-31 s; MirroredStrategy on 2 logical CPUs stays in the default run through
# test_input_sharding and test_optimizers, distribution equality through
# test_trainer's 2-worker = 1-worker test.
@pytest.mark.slow
def test_mirrored_two_cpus_equals_default_strategy(data_dir, tmp_path):
    mirrored, mirrored_exp = write_config(tmp_path / "two", data_dir, strategy="mirrored",
                                          logical_cpu_devices=2)
    proc = subprocess.Popen(
        [sys.executable, "runs/train.py", mirrored], cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:  # the reference, in this process meanwhile
        single, single_exp = write_config(tmp_path / "one", data_dir)
        stages, source = load(single)
        stage = Stage(stages[0], source, experiment_dir=str(single_exp), stage_index=0,
                      strategy=tf.distribute.get_strategy())
        initial = {v.path: v.numpy() for v in stage.model.weights}
        stage.train(log=lambda *_: None)
        one = {v.path: v.numpy() for v in stage.model.weights}
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "2 replica(s), global batch 4 (2 per replica), 4 steps/epoch" in out
    model = keras.saving.load_model(str(mirrored_exp / "stage0" / "model.keras"))
    two = {v.path: v.numpy() for v in model.weights}
    assert sorted(two) == sorted(one) and len(one) > 30
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=0, atol=ATOL, err_msg=k)
    # Measured: the runs end <= 4e-7 apart; every conv kernel moves >= 3.8e-5,
    # the logits 3e-3, BN statistics >= 1e-2 (a 2x step fails on all of them).
    moved = [k for k in one if np.abs(one[k] - initial[k]).max() >= 3 * ATOL]
    assert len(moved) >= 40, len(moved)
