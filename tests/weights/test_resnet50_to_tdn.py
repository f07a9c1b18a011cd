"""tools/resnet50_to_tdn.py (klassterfork/cli/resnet50_to_tdn.py).

The input is a torchvision-layout ResNet state dict written by torch from
references/torch_reference.py (random weights and BatchNorm statistics,
`num_batches_tracked` included; 2 blocks per stage to keep it small, the
names are resnet50's). Every output tensor is checked against the input
after the transform the module docstring documents, computed here in
torch; the output then loads into TSN(temporal="tdn") through
`init_weights` with every file tensor used. Bad inputs exit 2 with one
line naming the file and what is accepted, and no traceback.
"""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")

from klassterfork import models  # noqa: E402
from klassterfork.cli import resnet50_to_tdn  # noqa: E402
from klassterfork.weights import init_weights  # noqa: E402
from references import torch_reference  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LAYERS = (2, 2, 2, 2)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(input state dict, output state dict, output path)."""
    folder = tmp_path_factory.mktemp("tdn")
    ref = torch_reference.randomize(
        torch_reference.ResNet50TSN(1000, 1, layers=LAYERS), seed=21)
    state = ref.state_dict()
    torch.save(state, folder / "resnet50.pth")
    assert resnet50_to_tdn.main([str(folder / "resnet50.pth"),
                                 str(folder / "tdn.pth")]) == 0
    return state, torch.load(folder / "tdn.pth", weights_only=True), folder / "tdn.pth"


def expected_tdn(state):
    """The documented transform, written from the module docstring."""
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked") or key.startswith("fc."):
            continue  # BatchNorm's step counter; the 1000-class head
        head, rest = key.split(".", 1)
        if head in ("conv1", "bn1"):
            out[key] = value
        else:
            out[f"{head}_bak.{rest}"] = value
        if head == "conv1":
            out[f"conv1_temp.{rest}"] = value
        if head == "layer1":
            out[f"resnext_layer1.{rest}"] = value
    for key in [k for k, v in out.items() if v.ndim == 4]:  # fbresnet50's biases
        out[key.replace(".weight", ".bias")] = torch.zeros(out[key].shape[0])
    out["conv1_5.0.weight"] = state["conv1.weight"].mean(1, keepdim=True).repeat(
        1, 12, 1, 1)
    return out


def test_output_is_the_documented_transform(converted):
    state, out, _ = converted
    want = expected_tdn(state)
    assert sorted(out) == sorted(want)
    for key, value in want.items():
        assert out[key].dtype == torch.float32, key
        if key == "conv1_5.0.weight":  # a mean: summation order may differ
            torch.testing.assert_close(out[key], value, atol=1e-7, rtol=1e-6)
        else:
            assert torch.equal(out[key], value), key
    assert out["layer2_bak.1.conv2.bias"].abs().max() == 0
    assert out["conv1_5.0.weight"].std() > 0.01  # non-trivial values went through


def test_output_loads_into_tdn_with_every_tensor_used(converted):
    """Every file tensor pairs with a TDN variable; only what TDN adds to
    the ImageNet network stays initialized (new head, difference-stem BN,
    the mSE and shift of every block of stages 2-4)."""
    _, out, path = converted
    model = models.build("TSN", num_classes=5, temporal="tdn", depth=26,
                         num_segments=2, input_shape=(10, 64, 64, 3))
    report = init_weights.load_into(model, path)
    assert report.unused == [] and len(report.loaded) == len(out)
    added = [i["name"] for i in report.initialized
             if not i["name"].startswith(("logits/", "diff_bn1/"))]
    assert added and all("_mse_" in n or "_shift/" in n for n in added), added
    conv2 = model.get_layer("stage2_block1_conv2")
    np.testing.assert_array_equal(  # (out, in, kh, kw) -> (kh, kw, in, out)
        conv2.kernel.numpy(),
        out["layer2_bak.0.conv2.weight"].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(conv2.bias.numpy(), np.zeros(128, np.float32))
    np.testing.assert_array_equal(
        model.get_layer("diff_conv1").kernel.numpy(),
        out["conv1_5.0.weight"].numpy().transpose(2, 3, 1, 0))


def write_bad(folder, kind):
    """A file that is no torchvision resnet50 state dict; returns its path."""
    path = folder / f"{kind}.pth"
    if kind == "text":
        path.write_text("hello\n")
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "head_only":
        torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    elif kind == "grey_stem":
        stages = {f"layer{s}.0.conv1.weight": torch.zeros(4, 4, 1, 1)
                  for s in range(1, 5)}
        torch.save({"conv1.weight": torch.zeros(64, 1, 7, 7), **stages}, path)
    return path


@pytest.mark.parametrize("kind, says", [
    ("text", "cannot be read as a PyTorch file"),
    ("missing", "cannot be read as a PyTorch file (FileNotFoundError"),
    ("tensor", "expected a state dict (name -> tensor)"),
    ("head_only", "lacks conv1.weight or a layer1..layer4 tensor. Received 1 keys: "
                  "['fc.weight']"),
    ("grey_stem", "conv1.weight must be an RGB conv kernel (out, 3, kh, kw), whose "
                  "channel mean is the difference stem. Received shape: (64, 1, 7, 7)"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, kind, says):
    source = write_bad(tmp_path, kind)
    assert resnet50_to_tdn.main([str(source), str(tmp_path / "out.pth")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"resnet50_to_tdn: {source}")
    assert says in captured.err and "Accepted: a torchvision resnet50" in captured.err
    assert not (tmp_path / "out.pth").exists()


def test_unwritable_output_exits_2(converted, tmp_path, capsys):
    source = converted[2].parent / "resnet50.pth"  # a good input
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "tdn.pth"  # under a file: no folder can be made
    assert resnet50_to_tdn.main([str(source), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"resnet50_to_tdn: {out}: cannot be written (") and err.count(
        "\n") == 1


@pytest.mark.slow  # ~20 s: the process imports torch and TensorFlow
def test_command_line_bad_input_has_no_traceback(tmp_path):
    """As the recipe page runs it: a separate process, exit 2, one line.
    (The default run checks the same through `main`, in process.)"""
    source = write_bad(tmp_path, "text")
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "resnet50_to_tdn.py"), str(source),
         str(tmp_path / "out.pth")], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in done.stderr.splitlines()
             if ln.startswith("resnet50_to_tdn:")]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    assert f"{source}: cannot be read as a PyTorch file" in lines[0]
