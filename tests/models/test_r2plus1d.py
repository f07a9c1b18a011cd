"""R(2+1)D / R3D / MC3: torchvision parity of the architecture, heads, clips."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from klassterfork import models  # noqa: E402
from klassterfork.models import r2plus1d  # noqa: E402

SMALL = dict(blocks_per_stage=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem_width=6)


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def clip(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize(
    "name, expected",
    # torchvision.models.video.{r2plus1d_18, r3d_18, mc3_18}(num_classes=400):
    # sum(p.numel() for p in model.parameters() if p.requires_grad)
    [("R2Plus1D18", 31_505_325), ("R3D18", 33_371_472), ("MC3_18", 11_695_440)],
)
def test_trainable_parameters_equal_torchvision(name, expected):
    model = models.build(name, num_classes=400)
    assert trainable_count(model) == expected


def test_midplanes_and_bn_settings_match_torchvision():
    # torchvision r2plus1d_18 midplanes, read from its conv1.0.0 weight shapes.
    pairs = {(64, 64): 144, (64, 128): 230, (128, 128): 288, (128, 256): 460,
             (256, 256): 576, (256, 512): 921, (512, 512): 1152}
    for (inp, out), mid in pairs.items():
        assert r2plus1d.midplanes(inp, out) == mid
    model = models.build("R2Plus1D18", num_classes=400)
    # The second conv of block 1 keeps the block's midplanes (from 64 -> 128).
    assert model.get_layer("stage2_block1_conv2_spatial").filters == 230
    assert model.get_layer("stage2_block2_conv1_spatial").filters == 288
    assert model.get_layer("stem_conv1").filters == 45
    bn = model.get_layer("stage3_block1_bn1")
    assert (bn.epsilon, bn.momentum) == (1e-5, 0.9)
    assert not model.get_layer("stem_conv1").use_bias
    assert model.get_layer("stage4_block1_downsample_conv").strides == (2, 2, 2)
    mc3 = models.build("MC3_18", num_classes=400)
    assert mc3.get_layer("stage4_block1_downsample_conv").strides == (1, 2, 2)
    assert mc3.get_layer("stage1_block1_conv1").kernel_size == (3, 3, 3)
    assert mc3.get_layer("stage2_block1_conv1").kernel_size == (1, 3, 3)


def test_strided_conv_pads_like_torch():
    # torch Conv3d(k=(1,7,7), stride=(1,2,2), padding=(0,3,3)) with a kernel
    # that picks the centre tap: out[i] = in[2 i]. Keras "same" would pad
    # (2, 3) on a 32 input and give in[2 i + 1].
    inputs = keras.Input((1, 32, 32, 1))
    out = r2plus1d.conv3d(inputs, 1, (1, 7, 7), strides=(1, 2, 2),
                          padding=(0, 3, 3), name="c")
    model = keras.Model(inputs, out)
    kernel = np.zeros((1, 7, 7, 1, 1), "float32")
    kernel[0, 3, 3] = 1.0
    model.get_layer("c").set_weights([kernel])
    x = clip(1, 1, 32, 32, 1)
    y = model.predict(x, verbose=0)
    assert y.shape == (1, 1, 16, 16, 1)
    np.testing.assert_array_equal(y[0, 0, :, :, 0], x[0, 0, ::2, ::2, 0])


@pytest.mark.parametrize("block", ["2plus1d", "3d", "mc3"])
def test_output_shapes_single_clip(block):
    model = models.build("R2Plus1D", num_classes=5, block=block,
                         input_shape=(4, None, None, 3), **SMALL)
    assert model(clip(2, 4, 32, 32, 3)).shape == (2, 5)
    # torch shape arithmetic, 4x33x33: stem (1,2,2) -> 4x17x17,
    # stage2 -> 2x9x9 (mc3: 4x9x9), stage3 -> 1x5x5, stage4 -> 1x3x3.
    feats = keras.Model(model.input, model.get_layer("stage4_block1_out").output)
    t = 1 if block != "mc3" else 4
    assert feats(clip(1, 4, 33, 33, 3)).shape == (1, t, 3, 3, 64)


def test_features_model_without_head():
    model = models.build("R2Plus1D", num_classes=None, input_shape=(4, 32, 32, 3),
                         **SMALL)
    assert model.output_shape == (None, 64)
    assert model.layers[-1].name == "pool"


def test_multi_clip_output_is_mean_of_clip_outputs():
    multi = models.build("R2Plus1D", num_classes=5, input_shape=(3, 4, 32, 32, 3),
                         **SMALL)
    single = models.build("R2Plus1D", num_classes=5, input_shape=(4, 32, 32, 3),
                          **SMALL)
    single.set_weights(multi.get_weights())
    x = clip(2, 3, 4, 32, 32, 3)
    got = multi.predict(x, verbose=0)
    assert got.shape == (2, 5)
    per_clip = np.stack([single.predict(x[:, c], verbose=0) for c in range(3)], 1)
    np.testing.assert_allclose(got, per_clip.mean(1), rtol=1e-4, atol=1e-5)
    # Not trivially equal to any one clip.
    assert np.abs(per_clip[:, 0] - per_clip[:, 1]).max() > 1e-4


@pytest.mark.parametrize("input_shape", [(4, 32, 32, 3), (2, 4, 32, 32, 3)])
def test_embedding_head_has_unit_norm(input_shape):
    model = models.build("R2Plus1D", num_classes=None, input_shape=input_shape,
                         head={"EmbeddingHead": {"units": 7}}, **SMALL)
    y = model.predict(clip(3, *input_shape), verbose=0)
    assert y.shape == (3, 7)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), 1.0, rtol=1e-5)
    assert model.layers[-1].name == "embedding"


def test_head_selection():
    base = dict(input_shape=(4, 32, 32, 3), **SMALL)
    named = models.build("R2Plus1D", num_classes=5, head="ClassificationHead",
                         dropout=0.3, **base)
    assert named.output_shape == (None, 5)
    assert named.get_layer("head_dropout").rate == 0.3
    over = models.build("R2Plus1D", num_classes=5,
                        head={"ClassificationHead": {"num_classes": 3}}, **base)
    assert over.output_shape == (None, 3)
    with pytest.raises(ValueError, match="EmbeddingHead"):
        models.build("R2Plus1D", num_classes=5, head="EmbedingHead", **base)
    with pytest.raises(ValueError, match="units"):
        models.build("R2Plus1D", num_classes=5, head="EmbeddingHead", **base)
    with pytest.raises(TypeError, match="units"):
        models.build("R2Plus1D", num_classes=5, head={"EmbeddingHead": {"unit": 3}},
                     **base)
    with pytest.raises(ValueError, match="num_classes"):
        models.build("R2Plus1D", num_classes=None, head="ClassificationHead", **base)


def test_save_load_and_config_round_trip(tmp_path):
    model = models.build("R2Plus1D", num_classes=5, input_shape=(2, 4, None, None, 3),
                         dropout=0.2, **SMALL)
    x = clip(2, 2, 4, 32, 32, 3)
    expected = model.predict(x, verbose=0)
    path = tmp_path / "small.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    rebuilt = keras.Model.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), expected, atol=1e-6)
    assert [w.name for w in loaded.weights] == [w.name for w in model.weights]


def test_build_errors_name_close_matches():
    with pytest.raises(ValueError, match="R2Plus1D18") as err:
        models.build("R2plus1d18")
    assert "Did you mean" in str(err.value)
    with pytest.raises(ValueError, match="Available: .*MC3_18"):
        models.build("Nope")
    with pytest.raises(TypeError, match="num_classes") as err:
        models.build("R2Plus1D18", num_clases=3)
    assert "num_clases" in str(err.value)
    assert {"R2Plus1D", "R2Plus1D18", "R3D18", "MC3_18"} <= set(models.available())
    with pytest.raises(ValueError, match="block"):
        models.build("R2Plus1D", num_classes=2, block="2d")
