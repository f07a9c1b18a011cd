"""TwoStream2D: shapes, late fusion, flow first-conv init from RGB."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from klassterfork import models  # noqa: E402
from klassterfork.models import two_stream  # noqa: E402


def test_vgg16_streams_and_fused_mean():
    model = models.build("TwoStream2D", num_classes=4, backbone="vgg16",
                         image_size=32, num_flow_frames=2)
    rng = np.random.default_rng(0)
    x = {"rgb": rng.normal(size=(2, 32, 32, 3)).astype("float32"),
         "flow": rng.normal(size=(2, 32, 32, 4)).astype("float32")}
    y = model.predict(x, verbose=0)
    assert {k: v.shape for k, v in y.items()} == {
        "rgb": (2, 4), "flow": (2, 4), "fused": (2, 4)}
    np.testing.assert_allclose(y["fused"], (y["rgb"] + y["flow"]) / 2, rtol=1e-5,
                               atol=1e-6)
    assert model.get_layer("rgb_head_dropout").rate == 0.5


def test_flow_first_conv_is_rgb_mean_repeated():
    rgb = two_stream._backbone("vgg16", 3, 32, None, "rgb")
    flow = two_stream._backbone("vgg16", 6, 32, None, "flow")
    two_stream._inflate_first_conv(rgb, flow)
    k_rgb = rgb.get_layer("block1_conv1").get_weights()[0]
    k_flow = flow.get_layer("block1_conv1").get_weights()[0]
    assert k_flow.shape == (3, 3, 6, 64)
    for c in range(6):
        np.testing.assert_allclose(k_flow[:, :, c], k_rgb.mean(axis=2), rtol=1e-6)
    np.testing.assert_array_equal(flow.get_layer("block5_conv3").get_weights()[0],
                                  rgb.get_layer("block5_conv3").get_weights()[0])
