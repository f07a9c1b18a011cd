"""Run by test_optimizers.py in a subprocess: logical CPU devices must be set
before TensorFlow initializes. Prints one JSON line of results."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

from klassterfork.training import optimizers  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.normal(0, 1, (16, 3)).astype("float32")
Y = RNG.normal(0, 1, (16, 2)).astype("float32")


def train(make_optimizer, strategy, *, batch, steps):
    """Runs `steps` steps on consecutive batches of (X, Y); returns weights."""
    with strategy.scope():
        model = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(
                    4,
                    name="block0_fc",
                    kernel_initializer="ones",
                    bias_initializer="ones",
                ),
                keras.layers.Dense(
                    2, name="logits", kernel_initializer="ones", bias_initializer="ones"
                ),
            ]
        )
        optimizer = make_optimizer()
        optimizer.build(model.trainable_variables)
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(batch, drop_remainder=True)
    iterator = iter(strategy.experimental_distribute_dataset(data))

    @tf.function
    def step():
        def fn(x, y):
            with tf.GradientTape() as tape:
                per_example = tf.reduce_sum((model(x) - y) ** 2, axis=-1) * 5.0
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))

        strategy.run(fn, args=next(iterator))

    for _ in range(steps):
        step()
    return [v.numpy() for v in model.trainable_variables]


def max_diff(a, b):
    return float(max(np.abs(p - q).max() for p, q in zip(a, b)))


def main():
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = tf.distribute.get_strategy()
    rules = dict(
        lr_multipliers={
            "(^|/)logits/kernel": 5.0,
            "(^|/)logits/bias": 10.0,
            "bias$": 2.0,
        },
        no_decay=["bias$"],
    )
    results = {}
    for name, make in {
        "sgd": lambda: optimizers.SGD(
            learning_rate=0.05,
            momentum=0.9,
            weight_decay=1e-2,
            weight_decay_mode="l2",
            global_clipnorm=1.0,
            **rules,
        ),
        "adamw": lambda: optimizers.AdamW(
            learning_rate=0.01,
            weight_decay=0.05,
            global_clipnorm=1.0,
            layer_decay=0.75,
            **rules,
        ),
    }.items():
        results[name] = max_diff(
            train(make, mirrored, batch=8, steps=2),
            train(make, single, batch=8, steps=2),
        )
    stock = lambda: keras.optimizers.SGD(learning_rate=0.05, global_clipnorm=1.0)  # noqa: E731
    results["keras_stock_clip"] = max_diff(
        train(stock, mirrored, batch=8, steps=1), train(stock, single, batch=8, steps=1)
    )
    # Accumulating 2 micro-batches of 4 == one step on the batch of 8.
    for name, cls in (("sgd", optimizers.SGD), ("adam", optimizers.Adam)):
        acc = train(
            lambda: cls(
                learning_rate=0.05,
                gradient_accumulation_steps=2,  # noqa: B023
                global_clipnorm=1.0,
                **rules,
            ),
            mirrored,
            batch=4,
            steps=4,
        )
        ref = train(
            lambda: cls(learning_rate=0.05, global_clipnorm=1.0, **rules),  # noqa: B023
            single,
            batch=8,
            steps=2,
        )
        results[f"accumulate_{name}"] = max_diff(acc, ref)
        results[f"moved_{name}"] = max_diff(
            ref, train(lambda: cls(), single, batch=8, steps=0)
        )
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
