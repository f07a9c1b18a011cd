"""PyTorch checkpoint import: logits equal independent PyTorch models.

The PyTorch models live in `torch_reference.py` (written from torchvision /
TSM / VideoMAE, not from our Keras code); weights are random and BatchNorm
statistics non-trivial, so a transposed kernel, a wrong padding or a swapped
BN statistic changes the logits far beyond the 1e-4 tolerance.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from klassterfork import models  # noqa: E402
from klassterfork.weights import torch_import  # noqa: E402

TOL = 1e-4


def test_torch_names_by_hand():
    p = torch_import.torch_prefix
    assert p("resnet3d", "stem_conv2") == "stem.3"
    assert p("resnet3d", "stage2_block1_conv1_spatial") == "layer2.0.conv1.0.0"
    assert p("resnet3d", "stage2_block1_conv1_spatial_bn") == "layer2.0.conv1.0.1"
    assert p("resnet3d", "stage2_block2_conv2_temporal") == "layer2.1.conv2.0.3"
    assert p("resnet3d", "stage1_block1_bn2") == "layer1.0.conv2.1"
    assert p("resnet3d", "stage3_block1_conv1") == "layer3.0.conv1.0"  # R3D
    assert p("resnet3d", "stage4_block1_downsample_bn") == "layer4.0.downsample.1"
    assert p("resnet2d", "stage3_block6_conv3") == "layer3.5.conv3"
    assert p("resnet2d", "logits") == "fc"
    assert p("vit", "block11_fc1") == "blocks.11.mlp.fc1"
    assert p("vit", "patch_embed") == "patch_embed.proj"
    assert p("vit", "logits") == "head"
    assert p("vit", "frozen_in") is None
    sd = {"module.base_model.layer1.0.conv1.net.weight": 1,
          "module.new_fc.bias": 2, "module.base_model.bn1.num_batches_tracked": 3}
    assert torch_import.normalize_keys(sd) == {"layer1.0.conv1.weight": 1, "fc.bias": 2}


torch = pytest.importorskip("torch")
torch_reference = pytest.importorskip("references.torch_reference")


def keras_clip(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def torch_logits(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_r2plus1d18_cli_import_matches_torch(tmp_path):
    ref = torch_reference.randomize(torch_reference.VideoResNet("r2plus1d"), seed=1)
    # The reference itself has torchvision's count.
    assert sum(p.numel() for p in ref.parameters()) == 31_505_325
    # DataParallel-style keys under "state_dict", as training scripts save.
    state = {"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}
    torch.save(state, tmp_path / "r2plus1d.pth")
    from klassterfork.cli import import_torch

    rc = import_torch.main([
        "--model", "R2Plus1D18", "--checkpoint", str(tmp_path / "r2plus1d.pth"),
        "--output", str(tmp_path / "out" / "r2plus1d.keras"),
        "--arg", "input_shape=[4, 32, 32, 3]",
    ])
    assert rc == 0
    model = keras.saving.load_model(tmp_path / "out" / "r2plus1d.keras", safe_mode=True)
    x = keras_clip((2, 4, 32, 32, 3))
    want = torch_logits(ref, x.transpose(0, 4, 1, 2, 3))
    got = model.predict(x, verbose=0)
    assert got.shape == (2, 400) and np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    # No temp left; the sidecar holds the eval transform for kf-predict.
    assert sorted(os.listdir(tmp_path / "out")) == ["config.resolved.json", "r2plus1d.keras"]


@pytest.mark.parametrize("kind, block", [("r3d", "3d"), ("mc3", "mc3")])
def test_r3d_and_mc3_import_match_torch(kind, block):
    # torchvision's layout at reduced width and depth (same code path).
    small = dict(layers=(1, 2, 1, 1), widths=(8, 16, 24, 32))
    ref = torch_reference.randomize(
        torch_reference.VideoResNet(kind, num_classes=7, **small), seed=2)
    model = models.build("R2Plus1D", num_classes=7, block=block,
                         blocks_per_stage=small["layers"], widths=small["widths"],
                         input_shape=(4, 33, 33, 3))
    report = torch_import.import_state_dict(model, ref.state_dict())
    assert report["unused"] == [] and report["skipped"] == []
    x = keras_clip((2, 4, 33, 33, 3), seed=3)  # odd size: padding matters
    want = torch_logits(ref, x.transpose(0, 4, 1, 2, 3))
    np.testing.assert_allclose(model.predict(x, verbose=0), want, atol=TOL, rtol=0)


@pytest.mark.parametrize("temporal", ["none", "tsm"])
def test_resnet50_tsn_and_tsm_import_match_torch(temporal):
    segments = 3
    ref = torch_reference.randomize(torch_reference.ResNet50TSN(
        num_classes=5, num_segments=segments, tsm=temporal == "tsm"), seed=4)
    backbone = sum(p.numel() for n, p in ref.named_parameters() if "fc" not in n)
    assert backbone == 23_508_032  # torchvision resnet50 without fc
    state = ref.state_dict()
    if temporal == "tsm":  # the TSM repository's checkpoint names
        state = {("module.new_fc." + k[3:] if k.startswith("fc.") else
                  "module.base_model." + k.replace("conv1.weight", "conv1.net.weight")
                  if k.startswith("layer") else "module.base_model." + k): v
                 for k, v in state.items()}
        assert "module.base_model.layer2.0.conv1.net.weight" in state
    model = models.build("TSN", num_classes=5, temporal=temporal,
                         num_segments=segments, input_shape=(segments, 64, 64, 3))
    report = torch_import.import_state_dict(model, state)
    assert report["unused"] == []
    x = keras_clip((2, segments, 64, 64, 3), seed=5)
    want = torch_logits(ref, x.reshape(-1, 64, 64, 3).transpose(0, 3, 1, 2))
    np.testing.assert_allclose(model.predict(x, verbose=0), want, atol=TOL, rtol=0)


def test_videomae_vit_s_import_matches_torch():
    ref = torch_reference.randomize(torch_reference.VideoMAEViT(
        num_classes=6, depth=2, num_tokens=2 * 2 * 2), seed=6)
    model = models.build("VideoViT", variant="S", depth=2, num_frames=4,
                         image_size=32, num_classes=6)
    state = {"module": ref.state_dict()}["module"]
    report = torch_import.import_state_dict(model, state)
    assert report["unused"] == []
    x = keras_clip((2, 4, 32, 32, 3), seed=7)
    want = torch_logits(ref, x.transpose(0, 4, 1, 2, 3))
    np.testing.assert_allclose(model.predict(x, verbose=0), want, atol=TOL, rtol=0)


def test_new_head_keeps_backbone_and_errors_name_keys(tmp_path):
    ref = torch_reference.randomize(torch_reference.VideoResNet(
        "r3d", num_classes=7, layers=(1, 1, 1, 1), widths=(8, 8, 8, 8)), seed=8)
    state = ref.state_dict()
    model = models.build("R2Plus1D", num_classes=3, block="3d",
                         blocks_per_stage=(1, 1, 1, 1), widths=(8, 8, 8, 8))
    kernel = model.get_layer("logits").get_weights()[0].copy()
    report = torch_import.import_state_dict(model, state, load_head=False)
    assert report == {"loaded": report["loaded"], "skipped": ["logits"], "unused": []}
    np.testing.assert_array_equal(model.get_layer("logits").get_weights()[0], kernel)
    np.testing.assert_allclose(  # the stem now holds the torch kernel
        model.get_layer("stem_conv1").get_weights()[0],
        state["stem.0.weight"].numpy().transpose(2, 3, 4, 1, 0))
    with pytest.raises(ValueError, match=r"a.pth: `fc.weight` has shape \(8, 7\)"):
        torch_import.import_state_dict(model, state, source="a.pth")
    del state["layer2.0.conv1.1.running_var"]
    with pytest.raises(KeyError, match="layer2.0.conv1.1.running_var"):
        torch_import.import_state_dict(model, state, load_head=False)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth: expected a state dict"):
        torch_import.load_state_dict(tmp_path / "list.pth")
