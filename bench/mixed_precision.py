"""Train-step time of a small R(2+1)D: float32 vs mixed_bfloat16, with and
without oneDNN (`TF_ENABLE_ONEDNN_OPTS=0`), with and without `conv3d`'s
explicit padding where the kernel overhangs the input (issue 16).

Each configuration runs in its own process (the variable is read when
TensorFlow loads); the ratios are to float32 with oneDNN and the route, the
shipped default, measured in the same run. Usage:

    python bench/mixed_precision.py [--steps 10] [--skip-eigen]
"""

import argparse
import os
import subprocess
import sys
import time

CONFIGS = (  # (policy, route, oneDNN)
    ("float32", True, True),
    ("float32", False, True),
    ("mixed_bfloat16", True, True),
    ("float32", True, False),
    ("mixed_bfloat16", True, False),
)


def one(policy, route, steps):
    """Seconds per train step (8 clips of 16 x 56^2) in this process."""
    import keras
    import numpy as np
    import tensorflow as tf

    from klassterfork.models import build
    from klassterfork.models import layers

    if not route:
        layers.kernel_overhangs = lambda extents, kernel_size: False
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    model = build("R2Plus1D", num_classes=10, blocks_per_stage=(1, 1, 1, 1),
                  widths=(16, 32, 64, 128), stem_width=12, input_shape=(16, 56, 56, 3))
    keras.mixed_precision.set_global_policy("float32")
    optimizer = keras.optimizers.SGD(0.01)
    x = tf.random.uniform((8, 16, 56, 56, 3), seed=1)
    y = tf.constant(np.arange(8) % 10)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = tf.cast(model(x, training=True), tf.float32)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _ in range(3):  # trace and warm up
        step()
    started = time.perf_counter()
    for _ in range(steps):
        loss = step()
    float(loss)
    return (time.perf_counter() - started) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip-eigen", action="store_true",
                        help="leave out the TF_ENABLE_ONEDNN_OPTS=0 runs (minutes each)")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(f"SECONDS {one(args.one[0], args.one[1] == 'route', args.steps)}")
        return
    rows = []
    for policy, route, onednn in CONFIGS:
        if args.skip_eigen and not onednn:
            continue
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
               "TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0"}
        out = subprocess.run(
            [sys.executable, __file__, "--steps", str(args.steps), "--one", policy,
             "route" if route else "same"], env=env, capture_output=True, text=True,
            check=True).stdout
        seconds = float(out.split("SECONDS ")[-1])
        rows.append((policy, route, onednn, seconds))
    base = rows[0][3]
    print("| policy | explicit pads (route) | oneDNN | s / step | ratio to float32 + oneDNN + route |")
    print("|---|---|---|---|---|")
    for policy, route, onednn, seconds in rows:
        print(f"| {policy} | {'yes' if route else 'no'} | {'on' if onednn else 'off'} "
              f"| {seconds:.3f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
