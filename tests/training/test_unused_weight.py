"""A trainable weight no output uses (TDN's `conv1_temp`) trains cleanly.

`tape.gradient` gives None for it. Keras's `BaseOptimizer.apply` drops None
gradients (with one warning per trace) before clipping, accumulation, the
all-reduce and weight decay, so the weight is never updated, not even by
AdamW's decoupled decay (PyTorch's optimizers skip `grad is None` as well),
and the other weights get exactly the update of a model without it.

Reference: the same model without the unused layer, trained with the same
calls as `Trainer` (`tape.gradient`, `optimizer.apply_gradients`, under
`strategy.run` in a `tf.function`). The MirroredStrategy case runs this file
as a subprocess (logical CPUs must be set before TensorFlow starts).
"""

import json
import os
import pathlib
import subprocess
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from klassterfork.models.tsn import UnusedConv2D  # noqa: E402
from klassterfork.training.optimizers import SGD, Adam, AdamW  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.normal(0, 1, (16, 4, 4, 3)).astype("float32")
Y = RNG.normal(0, 1, (16, 2)).astype("float32")
RULES = {"(^|/)logits/kernel": 5.0, "(^|/)logits/bias": 10.0, "bias$": 2.0}
UNUSED = ("conv1_temp/kernel", "conv1_temp/bias")

OPTIMIZERS = {
    "sgd": lambda: SGD(learning_rate=0.1, momentum=0.9, weight_decay=1e-2,
                       global_clipnorm=0.5),
    "sgd_l2_clipnorm": lambda: SGD(learning_rate=0.1, momentum=0.9,
                                   weight_decay=1e-2, weight_decay_mode="l2",
                                   clipnorm=0.5, lr_multipliers=RULES),
    "adam_clipvalue": lambda: Adam(learning_rate=0.01, clipvalue=0.1),
    "adamw": lambda: AdamW(learning_rate=0.01, weight_decay=0.05,
                           global_clipnorm=0.5, lr_multipliers=RULES),
    "adamw_accumulate": lambda: AdamW(learning_rate=0.01, weight_decay=0.05,
                                      global_clipnorm=0.5,
                                      gradient_accumulation_steps=2),
    "sgd_loss_scale": lambda: keras.optimizers.LossScaleOptimizer(
        SGD(learning_rate=0.1, momentum=0.9, weight_decay=1e-2)),
}


def tiny_model(with_unused):
    """(B, 4, 4, 3) -> [conv1_temp: identity] -> conv 1x1 (4) -> mean ->
    logits (2); fixed weights, the same in both variants."""
    inputs = keras.Input((4, 4, 3))
    x = UnusedConv2D(8, 3, name="conv1_temp")(inputs) if with_unused else inputs
    x = keras.layers.Conv2D(4, 1, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))
    for layer in model.layers:
        rng = np.random.default_rng(list(layer.name.encode()))  # per name
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32")
                           for w in layer.get_weights()])
    return model


def train(make_optimizer, strategy, *, with_unused, batch, steps):
    """The Trainer's step on consecutive batches of (X, Y); -> {path: array}."""
    with strategy.scope():
        model = tiny_model(with_unused)
        optimizer = make_optimizer()
        optimizer.build(model.trainable_variables)
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(batch, drop_remainder=True)
    iterator = iter(strategy.experimental_distribute_dataset(data))

    @tf.function
    def step():
        def fn(x, y):
            with tf.GradientTape() as tape:
                per_example = tf.reduce_sum((model(x, training=True) - y) ** 2, -1)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=batch)
                scaled_loss = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled_loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))

        strategy.run(fn, args=next(iterator))

    for _ in range(steps):
        step()
    return {v.path: v.numpy() for v in model.trainable_variables}


def compare(with_unused, without, start):
    """(max |change| of the unused weights, max |with - without| of the used
    ones, min over used variables of their max |change| from the start)."""
    unused = max(float(np.abs(with_unused[k] - start[k]).max()) for k in UNUSED)
    used = [k for k in without]
    diff = max(float(np.abs(with_unused[k] - without[k]).max()) for k in used)
    moved = min(float(np.abs(without[k] - start[k]).max()) for k in used)
    return unused, diff, moved


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_unused_weight_is_untouched_and_the_rest_trains_as_without_it(name):
    single = tf.distribute.get_strategy()
    start = {v.path: v.numpy() for v in tiny_model(True).trainable_variables}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = train(OPTIMIZERS[name], single, with_unused=True, batch=4, steps=4)
    want = train(OPTIMIZERS[name], single, with_unused=False, batch=4, steps=4)
    unused, diff, moved = compare(got, want, start)
    assert unused == 0.0  # bitwise: no update, no weight decay
    assert diff < 1e-6  # clipping / accumulation see only the used gradients
    assert moved > 1e-3  # and training did move them
    # Keras says which variables had no gradient (once per trace).
    assert any("conv1_temp/kernel" in str(w.message) for w in caught)


@pytest.mark.slow  # the in-process tests above check the same rules on one replica
def test_mirrored_two_cpus_sgd_and_adamw_accumulation():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(pathlib.Path(__file__).resolve())],
                          capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    for name in ("sgd", "adamw_accumulate"):
        unused, diff, moved = result[name]
        assert unused == 0.0 and diff < 1e-6 and moved > 1e-3, (name, result[name])


def main():
    """Mirrored (2 CPUs, with the unused weight) vs one device without it."""
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = tf.distribute.get_strategy()
    start = {v.path: v.numpy() for v in tiny_model(True).trainable_variables}
    results = {}
    for name in ("sgd", "adamw_accumulate"):
        got = train(OPTIMIZERS[name], mirrored, with_unused=True, batch=8, steps=2)
        want = train(OPTIMIZERS[name], single, with_unused=False, batch=8, steps=2)
        results[name] = compare(got, want, start)
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )
    sys.exit(main())
