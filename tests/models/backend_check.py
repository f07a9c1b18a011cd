"""Every model family: forward + one SGD step on the current Keras backend.

Run as a script (`KERAS_BACKEND=torch python tests/models/backend_check.py
[FAMILY ...]`) because the backend is fixed when keras is imported; prints
one JSON line per family: {"family", "backend", "shape", "loss",
"unchanged", "seconds"} (`unchanged`: trainable variables the step left equal, i.e.
without a gradient). Tiny inputs and reduced variants keep it fast.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from klassterfork import models  # noqa: E402

R_SMALL = dict(blocks_per_stage=(1, 1, 1, 1), widths=(8, 8, 16, 16), stem_width=6)
# family -> (registered builder, kwargs)
FAMILIES = {
    "Model3D1": ("Model3D1", dict(input_shape=(2, 32, 32, 3))),
    "R2Plus1D": ("R2Plus1D", dict(block="2plus1d", input_shape=(4, 32, 32, 3),
                                  **R_SMALL)),
    "R3D": ("R2Plus1D", dict(block="3d", input_shape=(4, 32, 32, 3), **R_SMALL)),
    "MC3": ("R2Plus1D", dict(block="mc3", input_shape=(2, 4, 32, 32, 3),
                             **R_SMALL)),
    "TSN": ("TSN", dict(temporal="none", num_segments=2, depth=26,
                        input_shape=(2, 32, 32, 3))),
    "TSM": ("TSN", dict(temporal="tsm", num_segments=2, depth=26,
                        input_shape=(2, 32, 32, 3))),
    "TDN": ("TSN", dict(temporal="tdn", num_segments=2, depth=26,
                        input_shape=(10, 64, 64, 3))),
    "MSN": ("TSN", dict(temporal="msn", num_segments=3, depth=26,
                        input_shape=(3, 32, 32, 3))),
    # 32^2 -> 4 tokens: with one token softmax is constant and q_bias has no gradient.
    "VideoViT": ("VideoViT", dict(variant="S", depth=1, num_frames=2, image_size=32,
                                  drop_path=0.1)),
    "VideoViT_frozen": ("VideoViT", dict(variant="S", depth=1, num_frames=2,
                                         image_size=32, frozen_block=True,
                                         frozen_width=32, frozen_heads=2,
                                         frozen_hidden=48)),
    "TwoStream2D": ("TwoStream2D", dict(backbone="vgg16", image_size=32,
                                        num_flow_frames=2)),
}
NUM_CLASSES = 3


def run(family):
    name, kwargs = FAMILIES[family]
    keras.utils.set_random_seed(0)
    model = models.build(name, num_classes=NUM_CLASSES, **kwargs)
    rng = np.random.default_rng(0)
    batch = 2
    if isinstance(model.input, dict):
        x = {k: rng.normal(size=(batch,) + tuple(v.shape[1:])).astype("float32")
             for k, v in model.input.items()}
    else:
        x = rng.normal(size=(batch,) + tuple(model.input.shape[1:])).astype("float32")
    y = np.arange(batch) % NUM_CLASSES
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if isinstance(model.output, dict):
        y = {k: y for k in model.output}
        loss = {k: loss for k in model.output}
    out = model(x, training=False)
    shape = list((out["fused"] if isinstance(out, dict) else out).shape)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    value = model.train_on_batch(x, y)
    value = float(np.ravel(value)[0])
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    unchanged = [w.path for w, a, b in zip(model.trainable_weights, after, before)
                 if np.array_equal(a, b)]
    return {"family": family, "backend": keras.backend.backend(), "shape": shape,
            "loss": value, "unchanged": unchanged}


if __name__ == "__main__":
    for family in sys.argv[1:] or list(FAMILIES):
        start = time.perf_counter()
        result = run(family)
        result["seconds"] = round(time.perf_counter() - start, 2)
        print(json.dumps(result), flush=True)
