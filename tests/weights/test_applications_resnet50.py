"""keras.applications ResNet50 no-top weights into TSN, through a config.

keras.applications' ResNet50 is ResNet v1 (stride on the first 1x1 conv of
stages 3-5); TSN is torchvision's v1.5 unless built with
`stride_in_1x1: true`. The file is written by Keras' own legacy h5 writer
(the layout of `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`) from
a full-depth ResNet50 holding random weights and BatchNorm statistics; it is
loaded through a config's `model` and `init_weights`, every loaded tensor is
compared with the file's after the documented transform (conv bias folded
into the BatchNorm mean, gamma rescaled to our epsilon), read back with
h5py, and the pooled features with keras.applications' per frame.
"""

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from klassterfork import models  # noqa: E402
from klassterfork.config import loader  # noqa: E402
from klassterfork.training import builders  # noqa: E402
from klassterfork.weights import init_weights  # noqa: E402
from tests.weights.test_init_weights import (  # noqa: E402
    TOL,
    clip,
    randomize,
    run,
    write_legacy_h5,
)

SIZE, SEGMENTS = 64, 2
APP_BN_EPSILON = 1.001e-5  # keras.applications resnet.py
BACKBONE_VARIABLES = 265  # 53 convs (kernel) + 53 BatchNorms (4 each)
CONFIG = """{
  model: {TSN: {num_classes: 3, num_segments: %d, input_shape: [%d, %d, %d, 3]}}
  init_weights: {path: "%s", exclude: ["logits"], strict: true}
}"""


@pytest.fixture(scope="module")
def app_file(tmp_path_factory):
    """(keras.applications ResNet50 with random weights, its no-top .h5)."""
    app = randomize(keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)), seed=12)
    path = (tmp_path_factory.mktemp("app")
            / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    write_legacy_h5(app, path)
    return app, path


def from_config(path, overrides=()):
    """(model, report): the config's model, started from its init_weights."""
    text = CONFIG % (SEGMENTS, SEGMENTS, SIZE, SIZE, path)
    stages, source = loader.load_text(text, "tsn.hjson", overrides)
    model = builders.make_model(stages[0], source)
    block = builders.init_weights_config(stages[0], source)
    report = init_weights.load_into(model, block["path"], exclude=block["exclude"],
                                    strict=block["strict"])
    return model, report


def file_layers(path):
    """{keras.applications layer: {variable: array}}, read with h5py."""
    out = {}
    with h5py.File(path, "r") as f:
        for layer in f.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            names = [n.decode() if isinstance(n, bytes) else n
                     for n in f[layer].attrs["weight_names"]]
            if names:
                out[layer] = {n.split("/")[-1].split(":")[0]: np.asarray(f[layer][n])
                              for n in names}
    return out


def tsn_name(app_name):
    """conv{s}_block{b}_{0,1,2,3}_{conv,bn} -> stage{s-1}_block{b}_..."""
    if app_name.startswith("conv1_"):
        return {"conv1_conv": "conv1", "conv1_bn": "bn1"}[app_name]
    stage, block, op, kind = re.fullmatch(
        r"conv(\d)_block(\d)_(\d)_(conv|bn)", app_name).groups()
    prefix = f"stage{int(stage) - 1}_block{block}"
    return f"{prefix}_downsample_{kind}" if op == "0" else f"{prefix}_{kind}{op}"


def assert_loaded_equal_file(model, path):
    """Every loaded tensor against the file's, after the layout transform.
    Returns the variable names checked."""
    source, checked = file_layers(path), set()
    for name, arrays in source.items():
        if not name.endswith("_conv"):
            continue
        conv = model.get_layer(tsn_name(name))
        np.testing.assert_array_equal(conv.kernel.numpy(), arrays["kernel"], name)
        bn_name = name[: -len("conv")] + "bn"
        bn, stats = model.get_layer(tsn_name(bn_name)), source[bn_name]
        var = stats["moving_variance"]
        np.testing.assert_array_equal(bn.moving_variance.numpy(), var)
        np.testing.assert_array_equal(bn.beta.numpy(), stats["beta"])
        np.testing.assert_allclose(bn.moving_mean.numpy(),
                                   stats["moving_mean"] - arrays["bias"], atol=1e-6)
        np.testing.assert_allclose(  # the same normalisation under our epsilon
            bn.gamma.numpy(),
            stats["gamma"] * np.sqrt(var + bn.epsilon) / np.sqrt(var + APP_BN_EPSILON),
            rtol=1e-6)
        checked |= {f"{conv.name}/kernel"} | {
            f"{bn.name}/{v}"
            for v in ("gamma", "beta", "moving_mean", "moving_variance")}
    return checked


def app_features(app, x):
    """keras.applications' pooled features per frame: (B, S, 2048)."""
    frames = run(app, x.reshape(-1, SIZE, SIZE, 3))
    return frames.mean(axis=(1, 2)).reshape(*x.shape[:2], -1)


def tsn_features(model, x):
    """Our backbone's pooled features per frame (B, S, 2048), before the
    segment consensus and the freshly initialised head."""
    pool = keras.Model(model.input, model.get_layer("pool").output)
    return run(pool, x).reshape(*x.shape[:2], -1)


def test_stride_in_1x1_loads_and_computes_keras_applications(app_file):
    app, path = app_file
    model, report = from_config(path, ["model.TSN.stride_in_1x1=true"])
    assert report.format == "keras_legacy_h5" and report.unused == []
    assert [i["name"] for i in report.initialized] == ["logits/kernel", "logits/bias"]
    assert len(report.loaded) == BACKBONE_VARIABLES
    assert "as this model (stride_in_1x1: true)" in report.paragraph()
    assert assert_loaded_equal_file(model, path) == set(report.loaded)
    x = clip((2, SEGMENTS, SIZE, SIZE, 3), seed=13)
    want = app_features(app, x)
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(tsn_features(model, x), want, atol=TOL, rtol=0)
    consensus = keras.Model(model.input, model.get_layer("consensus").output)
    np.testing.assert_allclose(run(consensus, x), want.mean(axis=1), atol=TOL, rtol=0)


def test_default_v15_loads_the_same_tensors_and_names_the_difference(app_file):
    """Not an error (fine-tuning v1 weights in v1.5 is common), but named:
    the note says stages 2-4 differ and which key makes them match."""
    app, path = app_file
    model, report = from_config(path)
    assert len(report.loaded) == BACKBONE_VARIABLES and report.unused == []
    assert assert_loaded_equal_file(model, path) == set(report.loaded)
    paragraph = report.paragraph()
    assert "this model is torchvision's v1.5" in paragraph
    assert "stages 2-4 compute a different function" in paragraph
    assert "model.TSN.stride_in_1x1: true" in paragraph
    x = clip((1, SEGMENTS, SIZE, SIZE, 3), seed=14)
    assert np.abs(tsn_features(model, x) - app_features(app, x)).max() > 1e-2


def test_stride_in_1x1_layout_and_variables():
    """The stride moves from the 3x3 to the 1x1 of each stage's first block
    (shortcut strided either way); variables keep their names and shapes,
    also with a temporal module."""
    shapes = {}
    for flag in (False, True):
        model = models.build("TSN", num_classes=4, depth=26, num_segments=2,
                             input_shape=(2, 32, 32, 3), stride_in_1x1=flag)
        one_by_one, three_by_three = ((2, 2), (1, 1)) if flag else ((1, 1), (2, 2))
        for s in (2, 3, 4):
            first = f"stage{s}_block1"
            assert model.get_layer(f"{first}_conv1").strides == one_by_one
            assert model.get_layer(f"{first}_conv2").strides == three_by_three
            assert model.get_layer(f"{first}_downsample_conv").strides == (2, 2)
        assert model.output_shape == (None, 4)
        shapes[flag] = [(w.path, tuple(w.shape)) for w in model.weights]
    assert shapes[True] == shapes[False]
    tdn = models.build("TSN", num_classes=4, depth=26, temporal="tdn", num_segments=2,
                       input_shape=(10, 64, 64, 3), stride_in_1x1=True)
    assert tdn.get_layer("stage3_block1_conv1").strides == (2, 2)
    # The mSE after conv1 sees the strided map (8 -> 4), as in ResNet v1.
    assert tdn.get_layer("stage3_block1_mse_conv1").output.shape[1:3] == (4, 4)


def test_stride_in_1x1_must_be_a_bool(tmp_path):
    text = CONFIG % (SEGMENTS, SEGMENTS, SIZE, SIZE, tmp_path / "w.h5")
    stages, source = loader.load_text(text, "tsn.hjson",
                                      ["model.TSN.stride_in_1x1=yes"])
    with pytest.raises(loader.ConfigError, match=r"model\.TSN.*`stride_in_1x1` must "
                       r"be one of \[False, True\]. Received: stride_in_1x1='yes'"):
        builders.make_model(stages[0], source)
