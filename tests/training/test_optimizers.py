import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from klassterfork.training import multipliers
from klassterfork.training.optimizers import OPTIMIZERS, SGD, Adam, AdamW

RULES = {"(^|/)logits/kernel": 5.0, "(^|/)logits/bias": 10.0, "bias$": 2.0}


def two_layer_model():
    """body (3 -> 4) then logits (4 -> 2), every weight 1."""
    inputs = keras.Input((3,))
    x = keras.layers.Dense(
        4, name="body", kernel_initializer="ones", bias_initializer="ones"
    )(inputs)
    outputs = keras.layers.Dense(
        2, name="logits", kernel_initializer="ones", bias_initializer="ones"
    )(x)
    return keras.Model(inputs, outputs)


def one_step(optimizer, grad=0.5):
    model = two_layer_model()
    variables = model.trainable_variables
    optimizer.build(variables)
    optimizer.apply_gradients(
        [(np.full(v.shape, grad, "float32"), v) for v in variables]
    )
    return {v.path: float(np.unique(v.numpy())[0]) for v in variables}


# ---- the pure rules ------------------------------------------------------------
def test_layer_decay_follows_videomae_layer_ids():
    paths = [
        "patch_embed/kernel",
        "pos_embed/positions",
        "block0_attn/qkv_kernel",
        "block5_fc1/bias",
        "block11_norm2/gamma",
        "fc_norm/gamma",
        "logits/kernel",
        "videovit_s/block3_fc2/kernel",
    ]
    got = multipliers.layer_decay_multipliers(paths, rate=0.75, num_layers=12)
    # layer id: embeddings 0, block i -> i + 1, rest 13; multiplier .75 ** (13 - id).
    expected = [0.75**13, 0.75**13, 0.75**12, 0.75**7, 0.75, 1.0, 1.0, 0.75**9]
    assert [got[p] for p in paths] == pytest.approx(expected)
    inferred = multipliers.layer_decay_multipliers(paths, rate=0.75)  # 12 blocks seen
    assert inferred == got
    with pytest.raises(ValueError, match="num_layers"):
        multipliers.layer_decay_multipliers(paths, rate=0.75, num_layers=4)
    with pytest.raises(ValueError, match="rate"):
        multipliers.layer_decay_multipliers(paths, rate=1.5)


def test_pattern_rules_first_match_wins_and_decay_mask():
    paths = [
        "m/body/kernel",
        "m/body/bias",
        "m/logits/kernel",
        "m/logits/bias",
        "block0_attn/q_bias",
        "bn/gamma",
    ]
    got = multipliers.pattern_multipliers(paths, RULES)
    assert [got[p] for p in paths] == [1.0, 2.0, 5.0, 10.0, 2.0, 1.0]
    mask = multipliers.decay_mask(paths, ["bias$", "gamma$"])
    assert [mask[p] for p in paths] == [True, False, True, False, False, False]
    both = multipliers.variable_multipliers(
        ["block0_fc/bias", "block1_fc/kernel"],
        lr_multipliers={"bias$": 2.0},
        layer_decay={"rate": 0.5, "num_layers": 2},
    )
    assert both == {"block0_fc/bias": 2.0 * 0.25, "block1_fc/kernel": 0.5}
    with pytest.raises(ValueError, match="regular expression"):
        multipliers.pattern_multipliers(paths, {"(": 2.0})


# ---- one optimizer step, by hand ---------------------------------------------
def test_sgd_one_step_by_hand():
    # lr .1, grad .5, weights 1, decoupled wd .01 except biases:
    # body/kernel  x1, decay: 1 - .1*.01 - .1*.5   = .949
    # body/bias    x2:        1 - .2*.5            = .9
    # logits/kernel x5, decay: 1 - .5*.01 - .5*.5  = .745
    # logits/bias x10:        1 - 1.0*.5           = .5
    got = one_step(
        SGD(
            learning_rate=0.1,
            weight_decay=0.01,
            lr_multipliers=RULES,
            no_decay=["bias$"],
        )
    )
    assert got == pytest.approx(
        {
            "body/kernel": 0.949,
            "body/bias": 0.9,
            "logits/kernel": 0.745,
            "logits/bias": 0.5,
        }
    )


def test_adam_one_step_by_hand_and_why_not_gradient_scaling():
    # Adam's first step moves every weight by lr * sign(g) (up to epsilon),
    # so the multiplier must scale the LR: 1 - .01 * {1, 2, 5, 10}.
    got = one_step(Adam(learning_rate=0.01, lr_multipliers=RULES))
    assert got == pytest.approx(
        {
            "body/kernel": 0.99,
            "body/bias": 0.98,
            "logits/kernel": 0.95,
            "logits/bias": 0.9,
        },
        abs=5e-6,
    )
    # Scaling the GRADIENT by 5 instead leaves Adam's step unchanged.
    scaled = one_step(keras.optimizers.Adam(learning_rate=0.01), grad=2.5)
    assert scaled["logits/kernel"] == pytest.approx(0.99, abs=1e-6)


# ---- several steps against numpy references ----------------------------------
def vit_like_model():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="patch_embed")(inputs)
    x = keras.layers.Dense(4, name="block0_fc")(x)
    x = keras.layers.Dense(4, name="block1_fc")(x)
    x = keras.layers.LayerNormalization(name="fc_norm")(x)
    outputs = keras.layers.Dense(2, name="logits")(x)
    return keras.Model(inputs, outputs)


def run_steps(optimizer, model, grads):
    optimizer.build(model.trainable_variables)
    for step_grads in grads:
        optimizer.apply_gradients(zip(step_grads, model.trainable_variables))
    return [v.numpy() for v in model.trainable_variables]


def random_grads(model, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [
        [rng.normal(0, 1, v.shape).astype("float32") for v in model.trainable_variables]
        for _ in range(steps)
    ]


def torch_sgd_reference(weights, grads, lrs, decays, *, momentum, wd):
    """torch.optim.SGD with one parameter group per variable (lr, weight_decay)."""
    weights = [w.astype(np.float64) for w in weights]
    bufs = [None] * len(weights)
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            d = g + (wd * weights[i] if decays[i] else 0.0)
            bufs[i] = d if bufs[i] is None else momentum * bufs[i] + d
            weights[i] = weights[i] - lrs[i] * bufs[i]
    return weights


def keras_adamw_reference(
    weights, grads, lrs, decays, *, wd, b1=0.9, b2=0.999, eps=1e-7
):
    """Keras AdamW's update per variable, with per-variable lr (numpy)."""
    weights = [w.astype(np.float64) for w in weights]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for t, step_grads in enumerate(grads, 1):
        for i, g in enumerate(step_grads):
            if decays[i]:
                weights[i] = weights[i] - lrs[i] * wd * weights[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            alpha = lrs[i] * np.sqrt(1 - b2**t) / (1 - b1**t)
            weights[i] = weights[i] - alpha * m[i] / (np.sqrt(v[i]) + eps)
    return weights


def test_sgd_l2_mode_equals_torch_sgd_param_groups():
    keras.utils.set_random_seed(1)
    model = vit_like_model()
    start = [v.numpy() for v in model.trainable_variables]
    grads = random_grads(model, 3)
    no_decay = ["bias$", "gamma$", "beta$"]
    got = run_steps(
        SGD(
            learning_rate=0.05,
            momentum=0.9,
            weight_decay=0.1,
            weight_decay_mode="l2",
            lr_multipliers=RULES,
            no_decay=no_decay,
        ),
        model,
        grads,
    )
    paths = [v.path for v in model.trainable_variables]
    mults = multipliers.pattern_multipliers(paths, RULES)
    mask = multipliers.decay_mask(paths, no_decay)
    expected = torch_sgd_reference(
        start,
        grads,
        [0.05 * mults[p] for p in paths],
        [mask[p] for p in paths],
        momentum=0.9,
        wd=0.1,
    )
    for path, g, e in zip(paths, got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6, err_msg=path)


def test_adamw_layer_decay_and_exclusions_equal_numpy_reference():
    keras.utils.set_random_seed(2)
    model = vit_like_model()
    start = [v.numpy() for v in model.trainable_variables]
    grads = random_grads(model, 3, seed=1)
    no_decay = ["bias$", "gamma$", "beta$"]
    got = run_steps(
        AdamW(
            learning_rate=0.01, weight_decay=0.05, layer_decay=0.75, no_decay=no_decay
        ),
        model,
        grads,
    )
    paths = [v.path for v in model.trainable_variables]
    # By hand: 2 blocks -> patch_embed .75^3, block0 .75^2, block1 .75, rest 1.
    by_layer = {
        "patch_embed": 0.75**3,
        "block0_fc": 0.75**2,
        "block1_fc": 0.75,
        "fc_norm": 1.0,
        "logits": 1.0,
    }
    lrs = [0.01 * by_layer[p.split("/")[-2]] for p in paths]
    decays = [p.endswith("kernel") for p in paths]
    expected = keras_adamw_reference(start, grads, lrs, decays, wd=0.05)
    for path, g, e in zip(paths, got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6, err_msg=path)


# ---- registry, config, errors ------------------------------------------------
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_registered_and_config_round_trip(name):
    cls = OPTIMIZERS[name]
    assert {
        "lr_multipliers",
        "layer_decay",
        "no_decay",
        "weight_decay_mode",
        "global_clipnorm",
        "gradient_accumulation_steps",
    } <= set(OPTIMIZERS.accepted_args(name))
    opt = cls(
        learning_rate=0.1,
        lr_multipliers=RULES,
        layer_decay={"rate": 0.7},
        no_decay=["bias$"],
        weight_decay_mode="l2",
    )
    again = cls.from_config(opt.get_config())
    assert again.get_config() == opt.get_config()
    assert again.lr_multipliers == RULES and again.layer_decay == {"rate": 0.7}


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="weight_decay_mode"):
        SGD(weight_decay_mode="coupled")
    with pytest.raises(ValueError, match="no_decay"):
        AdamW(no_decay=["[bias"])


# ---- global_clipnorm against numpy (issue 15) --------------------------------
def clipped_step(grad_scale, **kwargs):
    """One single-device SGD step (lr .1) on random gradients; returns
    (weights before, gradients, weights after), each {path: array}."""
    model = two_layer_model()
    variables = model.trainable_variables
    rng = np.random.default_rng(7)
    grads = {v.path: grad_scale * rng.normal(size=v.shape).astype("float32") for v in variables}
    before = {v.path: v.numpy() for v in variables}
    optimizer = SGD(learning_rate=0.1, **kwargs)
    optimizer.build(variables)
    optimizer.apply_gradients([(grads[v.path], v) for v in variables])
    return before, grads, {v.path: v.numpy() for v in variables}


def numpy_clipped_step(before, grads, mults):
    """w - lr * mult * g / max(|g|, 1), |g| the norm over ALL variables."""
    norm = np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
    return {p: before[p] - 0.1 * mults[p] * grads[p] / max(norm, 1.0) for p in before}, norm


@pytest.mark.parametrize("rules", [None, RULES], ids=["plain", "multipliers"])
def test_global_clipnorm_single_device_equals_numpy(rules):
    before, grads, got = clipped_step(1.0, global_clipnorm=1.0, lr_multipliers=rules)
    mults = multipliers.variable_multipliers(list(before), lr_multipliers=rules)
    want, norm = numpy_clipped_step(before, grads, mults)
    assert norm > 3.0  # the clip is active: the step shrinks by 1 / norm
    for p in before:
        np.testing.assert_allclose(got[p], want[p], rtol=0, atol=1e-6)
    # The unclipped step is a different one (clipping is not a no-op).
    _, _, unclipped = clipped_step(1.0, lr_multipliers=rules)
    assert max(np.abs(unclipped[p] - got[p]).max() for p in before) > 0.05
    for p in before:
        np.testing.assert_allclose(unclipped[p], before[p] - 0.1 * mults[p] * grads[p],
                                   rtol=0, atol=1e-6)


def test_global_clipnorm_leaves_a_small_gradient_alone():
    # |g| < 1: max(|g|, 1) = 1, the step is the unclipped one (not normalized up).
    before, grads, got = clipped_step(0.05, global_clipnorm=1.0)
    want, norm = numpy_clipped_step(before, grads, dict.fromkeys(before, 1.0))
    assert norm < 1.0
    for p in before:
        np.testing.assert_allclose(got[p], want[p], rtol=0, atol=1e-7)


# ---- tf.distribute -----------------------------------------------------------
@pytest.mark.slow  # 10-12 s; the rules are checked on one replica above
def test_mirrored_two_cpus_multipliers_clipping_and_accumulation():
    """2 logical CPUs (a subprocess: they must be set before TF starts)."""
    script = pathlib.Path(__file__).with_name("optimizer_mirrored_run.py")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    # Multipliers, decay mask and global_clipnorm: mirrored == one device.
    assert result["sgd"] < 1e-6 and result["adamw"] < 1e-6
    # Stock Keras clips each replica's partial gradient: a different answer.
    assert result["keras_stock_clip"] > 1e-3
    # Accumulating 2 micro-batches of 4 on 2 replicas == 1 step on 8, and
    # training moved the weights (the comparison is not trivial).
    for name in ("sgd", "adam"):
        assert result[f"accumulate_{name}"] < 1e-6
        assert result[f"moved_{name}"] > 1e-2
