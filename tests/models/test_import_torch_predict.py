"""kf-import-torch writes the eval transform, so kf-predict needs no --config.

The reference is the PyTorch model itself on the same views, standardized in
numpy with torchvision's Kinetics mean/std: a missing or wrong
standardization in the sidecar changes the probabilities far beyond 1e-4.
"""

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
torch_reference = pytest.importorskip("references.torch_reference")

from klassterfork.cli import import_torch  # noqa: E402

VIDEO = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "videos"
    / "mmaction2"
    / "rawvideo_part_0.mp4"
)
KINETICS_MEAN = np.array([0.43216, 0.394666, 0.37645])
KINETICS_STD = np.array([0.22803, 0.22145, 0.216989])
SMALL = [
    "--arg",
    'block="3d"',
    "--arg",
    "blocks_per_stage=[1, 1, 1, 1]",
    "--arg",
    "widths=[8, 8, 8, 8]",
    "--arg",
    "input_shape=[4, 32, 32, 3]",
]


def small_checkpoint(tmp_path):
    ref = torch_reference.randomize(
        torch_reference.VideoResNet(
            "r3d", num_classes=7, layers=(1, 1, 1, 1), widths=(8, 8, 8, 8)
        ),
        seed=11,
    )
    with torch.no_grad():  # spread the logits: a uniform output hides the norm
        ref.fc.weight.mul_(20.0)
    torch.save(ref.state_dict(), tmp_path / "r3d.pth")
    return ref


def test_import_then_predict_without_config(tmp_path, capsys):
    if not VIDEO.is_file():
        pytest.skip(f"real test video absent: {VIDEO}")
    from klassterfork.cli import predict
    from klassterfork.data.conversion.video import decode_video
    from klassterfork.evaluation import inference

    ref = small_checkpoint(tmp_path)
    out = tmp_path / "imported" / "r3d.keras"
    assert (
        import_torch.main(
            [
                "--model",
                "R2Plus1D",
                "--checkpoint",
                str(tmp_path / "r3d.pth"),
                "--output",
                str(out),
                *SMALL,
            ]
        )
        == 0
    )
    sidecar = json.loads((out.parent / "config.resolved.json").read_text())
    assert sidecar["datasets"]["val"] == {
        "clip_len": 4,
        "crop_size": 32,
        "standardize": "mean_std",
        "mean": KINETICS_MEAN.tolist(),
        "std": KINETICS_STD.tolist(),
    }
    capsys.readouterr()
    assert (
        predict.main([str(VIDEO), "--model", str(out), "--json", "--top-k", "7"]) == 0
    )
    top = json.loads(capsys.readouterr().out)["videos"][0]["top_k"]
    got = np.zeros(7)
    for item in top:
        got[item["index"]] = item["probability"]
    views = inference.video_views(
        decode_video(str(VIDEO)).frames, clip_len=4, crop_size=32
    )
    x = (views / 255.0 - KINETICS_MEAN) / KINETICS_STD  # (V, T, H, W, C)
    with torch.no_grad():
        logits = ref(torch.from_numpy(x.transpose(0, 4, 1, 2, 3).astype(np.float32)))
    want = torch.softmax(logits.double(), -1).mean(0).numpy()
    assert want.max() - want.min() > 0.1
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_flags_are_checked_and_folders_not_shadowed(tmp_path, capsys):
    small_checkpoint(tmp_path)
    base = ["--model", "R2Plus1D", "--checkpoint", str(tmp_path / "r3d.pth"), *SMALL]
    out = tmp_path / "a" / "m.keras"
    assert (
        import_torch.main(
            [
                *base,
                "--output",
                str(out),
                "--standardize",
                "per_frame",
                "--mean",
                "0.5",
                "0.5",
                "0.5",
            ]
        )
        == 1
    )
    assert "only used with standardize='mean_std'" in capsys.readouterr().err
    assert import_torch.main([*base, "--output", str(out), "--clip-len", "8"]) == 1
    assert "--clip-len must equal the model's input" in capsys.readouterr().err
    assert not out.exists()
    assert (
        import_torch.main([*base, "--output", str(out), "--standardize", "unit"]) == 0
    )
    val = json.loads((out.parent / "config.resolved.json").read_text())["datasets"][
        "val"
    ]
    assert val == {"clip_len": 4, "crop_size": 32, "standardize": "unit"}
    # Another model with another transform may not replace that config.
    other = tmp_path / "a" / "n.keras"
    assert import_torch.main([*base, "--output", str(other)]) == 1
    assert "holds another model's config" in capsys.readouterr().err
