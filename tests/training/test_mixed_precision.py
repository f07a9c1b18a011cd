"""Mixed precision trains on CPU (issues 5, 15, 16): float16 with dynamic loss
scaling, bfloat16 without; convolutions compute in the low precision, logits,
batch-norm statistics and master weights in float32.

The reference is the same run in float32: three SGD steps from the same
initial weights on the same clips (dropout off, deterministic ops). SGD's
update is linear in the gradient, so a gradient left scaled by the loss scale
(x32768), a loss not divided by the batch (x4) or a NaN shows up in the
weights' moves (100 % off or more); Adam's normalised step would hide the
first two. Measured on the project's 2-core x86_64 VM (avx512_bf16), the
moves of all trainable weights differ from float32's by 2.4 % (float16) and
3.6 % (bfloat16) of their norm, BN moving-statistic moves by <= 0.7 %; with
`TF_ENABLE_ONEDNN_OPTS=0` (Eigen kernels, as on CPUs where oneDNN has no
bfloat16) by 2.4 % and 5.9 %, BN statistics 3.3 %. Tolerances: 5 % for
float16, 15 % for bfloat16, 10 % for BN statistics. Before the issue-16 fix
the bfloat16 run's second step put NaN into a kernel on avx512_bf16 CPUs
(oneDNN's bf16 filter gradient, see `models/layers.conv3d`). Nothing is
skipped by CPU flag.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from klassterfork.config.loader import ConfigError, load_text
from klassterfork.training.builders import train_loop_config
from klassterfork.training.trainer import Stage
from tests.training.tiny_data import tiny_config, write_split

# |move_mixed - move_float32| <= rtol * |move_float32| (see the docstring).
MOVE_RTOL = {"mixed_float16": 0.05, "mixed_bfloat16": 0.15}
STATS_RTOL = 0.10
STEPS = 3
LR = 0.01


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mp")
    write_split(str(d), "train", 16, seed=0)
    return d


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """{policy: (stage, initial weights, final weights)}, weights by path."""
    out = {}
    for policy in ("float32", "mixed_float16", "mixed_bfloat16"):
        exp = tmp_path_factory.mktemp(policy) / "exp"
        config = json.loads(tiny_config(
            data_dir, exp, epochs=1, steps_per_epoch=STEPS, mixed_precision=policy,
            deterministic=True,
        ))
        del config["datasets"]["val"]
        config["model"]["R2Plus1D"]["dropout"] = 0.0
        config["optimizer"] = {"SGD": {"learning_rate": LR}}
        stages, source = load_text(json.dumps(config), "c.hjson")
        stage = Stage(stages[0], source, experiment_dir=str(exp), stage_index=0,
                      strategy=tf.distribute.get_strategy())
        initial = {v.path: v.numpy() for v in stage.model.weights}
        assert stage.train(log=lambda *_: None)["step"] == STEPS
        final = {v.path: v.numpy() for v in stage.model.weights}
        out[policy] = (stage, initial, final, exp)
    return out


def relative_move_error(run, reference, paths):
    """|move - reference move| / |reference move| over the `paths` weights."""
    def move(r):
        return np.concatenate([(r[2][p] - r[1][p]).ravel() for p in paths])
    got, want = move(run), move(reference)
    assert np.isfinite(got).all()
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_sgd_steps_match_float32(runs, policy):
    reference, run = runs["float32"], runs[policy]
    for p, w in reference[1].items():  # same start: the comparison is of the steps
        np.testing.assert_array_equal(run[1][p], w)
    trainable = [v.path for v in reference[0].model.trainable_variables]
    stats = [p for p in reference[1] if p.endswith(("moving_mean", "moving_variance"))]
    assert len(trainable) > 30 and len(stats) > 20
    assert all(not np.array_equal(reference[2][p], reference[1][p]) for p in trainable)
    assert relative_move_error(run, reference, trainable) <= MOVE_RTOL[policy]
    assert relative_move_error(run, reference, stats) <= STATS_RTOL


def test_float16_scales_the_loss_and_bfloat16_does_not(runs):
    fp16 = runs["mixed_float16"][0].optimizer
    assert isinstance(fp16, keras.optimizers.LossScaleOptimizer)
    scale = float(fp16.dynamic_scale.numpy())
    assert scale >= 2.0**10  # starts at 2**15; halves only on overflow
    assert float(fp16.scale_loss(tf.constant(0.5))) == pytest.approx(0.5 * scale)
    for policy in ("float32", "mixed_bfloat16"):  # bfloat16 has float32's range
        optimizer = runs[policy][0].optimizer
        assert not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        assert float(optimizer.scale_loss(tf.constant(0.5))) == 0.5


@pytest.mark.parametrize("policy, compute", [("mixed_float16", "float16"),
                                             ("mixed_bfloat16", "bfloat16")])
def test_saved_model_keeps_the_policy(runs, policy, compute):
    exp = runs[policy][3]
    model = keras.saving.load_model(str(exp / "stage0" / "model.keras"))
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv3D)]
    assert convs and all(l.compute_dtype == compute for l in convs)
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(w.dtype == "float32" for l in bns for w in l.weights)
    assert all(w.dtype == "float32" for w in model.trainable_weights)  # master weights
    assert model.output.dtype == "float32"  # the head computes in float32
    assert keras.mixed_precision.global_policy().name == "float32"  # restored


def test_unknown_policy_is_a_config_error():
    stages, source = load_text(json.dumps({"train_loop": {"mixed_precision": "fp8"}}), "p.hjson")
    with pytest.raises(ConfigError, match="mixed_precision"):
        train_loop_config(stages[0], source)
