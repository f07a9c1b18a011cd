"""TDN checkpoint import: logits equal an independent PyTorch TDN.

The PyTorch TDN (`torch_tdn_reference.py`) is written from the TDN
repository, not from our Keras code; its state dict is saved with the
official checkpoints' `module.base_model.` / `module.new_fc.` prefixes.
Weights are random and BatchNorm statistics non-trivial, so a transposed
kernel, a swapped difference direction, a wrong shift tap or a swapped BN
statistic changes the logits far beyond the 1e-4 tolerance.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from klassterfork import models  # noqa: E402
from klassterfork.weights import torch_import  # noqa: E402

TOL = 1e-4


def test_tdn_torch_names_by_hand():
    p = torch_import.torch_prefix
    assert p("tdn", "conv1") == "conv1"
    assert p("tdn", "conv1_temp") == "conv1_temp"
    assert p("tdn", "diff_conv1") == "conv1_5.0"
    assert p("tdn", "diff_bn1") == "conv1_5.1"
    assert p("tdn", "diff_stage1_block3_conv2") == "resnext_layer1.2.conv2"
    assert (p("tdn", "diff_stage1_block1_downsample_bn")
            == "resnext_layer1.0.downsample.1")
    assert p("tdn", "stage1_block2_bn3") == "layer1_bak.1.bn3"
    assert p("tdn", "stage4_block1_downsample_conv") == "layer4_bak.0.downsample.0"
    assert p("tdn", "stage3_block6_mse_conv2") == "layer3_bak.5.mse.conv2"
    assert (p("tdn", "stage2_block1_mse_bn3_smallscale4")
            == "layer2_bak.0.mse.bn3_smallscale4")
    assert p("tdn", "stage2_block4_shift") == "layer2_bak.3.shift.conv"
    assert p("tdn", "logits") == "fc"  # `new_fc` after normalize_keys
    assert p("tdn", "stage2_block1_mse_diff_forward") is None


torch = pytest.importorskip("torch")
torch_tdn_reference = pytest.importorskip("references.torch_tdn_reference")
torch_reference = pytest.importorskip("references.torch_reference")


def checkpoint_keys(state):
    """The official file's names: DataParallel around ops/models.py's TSN."""
    return {f"module.{k}": v for k, v in state.items()}


def test_reference_count_is_the_issue_count():
    ref = torch_tdn_reference.TDN(num_classes=174, num_segments=8)
    assert sum(p.numel() for p in ref.parameters()) == 24_420_046
    model = models.build("TSN", num_classes=174, temporal="tdn")
    # One Keras weight per torch parameter (conv1_temp1 is conv1_temp).
    assert len(model.trainable_weights) == len(list(ref.parameters()))


@pytest.mark.parametrize("segments", [8, 3])  # alpha = beta = .5; .75 / .25
def test_tdn_cli_import_matches_torch(segments, tmp_path):
    size = 64  # layer4 is 2x2: the mSE's 2x2 average pool still applies
    ref = torch_reference.randomize(torch_tdn_reference.TDN(
        num_classes=5, num_segments=segments, layers=(2, 2, 2, 2)), seed=11)
    state = checkpoint_keys(ref.state_dict())
    assert "module.base_model.layer2_bak.0.mse.conv3_smallscale2.weight" in state
    assert "module.base_model.conv1_temp1.bias" in state
    torch.save({"epoch": 3, "arch": "resnet50", "state_dict": state},
               tmp_path / "tdn.pth.tar")
    from klassterfork.cli import import_torch

    rc = import_torch.main([
        "--model", "TSN", "--checkpoint", str(tmp_path / "tdn.pth.tar"),
        "--output", str(tmp_path / "tdn.keras"),
        "--arg", 'temporal="tdn"', "--arg", f"num_segments={segments}",
        "--arg", "depth=26",
        "--arg", f"input_shape=[{5 * segments}, {size}, {size}, 3]",
    ])
    assert rc == 0
    model = keras.saving.load_model(tmp_path / "tdn.keras", safe_mode=True)
    x = np.random.default_rng(12).normal(
        size=(1, 5 * segments, size, size, 3)).astype("float32")
    # (B, S * 5, H, W, 3) -> torch (B, S * 15, H, W), frame-major channels.
    with torch.no_grad():
        want = ref(torch.from_numpy(np.ascontiguousarray(
            x.transpose(0, 1, 4, 2, 3).reshape(1, -1, size, size)))).numpy()
    got = keras.ops.convert_to_numpy(model(x, training=False))
    assert got.shape == (1, 5) and np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    kernel = model.get_layer("conv1_temp").get_weights()[0]
    want_kernel = state["module.base_model.conv1_temp.weight"].numpy()
    # The unused conv is carried over too.
    np.testing.assert_array_equal(kernel, want_kernel.transpose(2, 3, 1, 0))


def test_tdn_import_report_and_errors():
    ref = torch_reference.randomize(torch_tdn_reference.TDN(
        num_classes=4, num_segments=2, layers=(2, 2, 2, 2)), seed=13)
    state = checkpoint_keys(ref.state_dict())
    model = models.build("TSN", num_classes=4, temporal="tdn", num_segments=2,
                         depth=26, input_shape=(10, 64, 64, 3))
    report = torch_import.import_state_dict(model, state)
    assert report["unused"] == [] and report["skipped"] == []
    assert len(report["loaded"]) == sum(1 for layer in model.layers if layer.weights)
    np.testing.assert_array_equal(  # Conv1d (C, 1, 3) -> (3, C)
        model.get_layer("stage3_block2_shift").get_weights()[0],
        state["module.base_model.layer3_bak.1.shift.conv.weight"].numpy()[:, 0].T)
    # A copy that differs from conv1_temp is not silently taken as read.
    state["module.base_model.conv1_temp1.bias"] = torch.zeros(64)
    report = torch_import.import_state_dict(model, state)
    assert report["unused"] == ["conv1_temp1.bias"]
    # A TDN checkpoint into plain TSN names the missing key and the close one.
    tsn = models.build("TSN", num_classes=4, depth=26, input_shape=(2, 32, 32, 3),
                       num_segments=2)
    with pytest.raises(KeyError, match=r"layer1\.0\.conv1\.weight.*layer1_bak"):
        torch_import.import_state_dict(tsn, state)
