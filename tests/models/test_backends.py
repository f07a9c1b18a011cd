"""Every family trains one step on the torch (and jax) Keras backends;
mixed_bfloat16 keeps the heads in float32.

The backend is fixed when keras is imported, so each backend runs
`backend_check.py` in its own process. A step must change every trainable
variable (a variable without a gradient would stay equal), and the initial
loss must be near ln(3) per output (3 classes, near-uniform logits).
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from klassterfork import models  # noqa: E402
from tests.models.backend_check import FAMILIES  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


# XLA-compiling each family's step under jax costs 6-60 s here (TDN ~2/3 of
# the whole check), so the jax check is slow; the default run trains every
# family on torch, the other non-TensorFlow backend.


def run_backend(backend, families=()):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "models" / "backend_check.py"), *families],
        env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {r["family"]: r for r in map(json.loads, proc.stdout.splitlines())}


def check(results, backend, families=tuple(FAMILIES)):
    assert set(results) == set(families)
    for family, r in results.items():
        assert r["backend"] == backend, family
        assert r["shape"] == [2, 3], family
        outputs = 3 if family == "TwoStream2D" else 1  # rgb, flow, fused losses
        assert abs(r["loss"] / outputs - math.log(3)) < 0.5, (family, r["loss"])
        # TDN keeps the reference's never-used `conv1_temp` (checkpoint parity).
        unused = ["conv1_temp/kernel", "conv1_temp/bias"] if family == "TDN" else []
        assert r["unchanged"] == unused, (family, r["unchanged"])


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch not installed (pip install .[torch])")
def test_every_family_trains_on_torch_backend():
    check(run_backend("torch"), "torch")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="jax not installed")
def test_every_family_trains_on_jax_backend():
    check(run_backend("jax"), "jax")


@pytest.mark.slow  # the default backend; its forward passes run in every model test
def test_every_family_trains_on_tensorflow_backend():
    check(run_backend("tensorflow"), "tensorflow")


@pytest.mark.parametrize("family", ["R2Plus1D", "TSM", "VideoViT"])
def test_mixed_bfloat16_keeps_head_float32(family):
    name, kwargs = FAMILIES[family]
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = models.build(name, num_classes=3, **kwargs)
        embed = models.build(name, num_classes=None,
                             head={"EmbeddingHead": {"units": 4}}, **kwargs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x = np.random.default_rng(0).normal(
        size=(2,) + tuple(model.input.shape[1:])).astype("float32")
    body = [layer for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D))]
    assert body and all(layer.compute_dtype == "bfloat16" for layer in body)
    assert model.get_layer("logits").compute_dtype == "float32"
    y = model(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    e = keras.ops.convert_to_numpy(embed(x))
    assert e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=-1), 1.0, rtol=1e-5)
