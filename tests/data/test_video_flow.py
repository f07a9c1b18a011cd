"""`kf-convert --flow farneback` on a video file (Kinetics / UCF101 layouts):
records hold the decoded frames plus Farneback flow of consecutive frames,
checked against OpenCV's own decode + Farneback + hand quantization."""

import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from klassterfork.cli.convert import main
from klassterfork.data import records

VIDEO = os.path.join(
    os.path.dirname(__file__),
    "..",
    "..",
    "..",
    "shared",
    "data",
    "videos",
    "mmaction2",
    "rawvideo_part_0.mp4",
)  # 340x256, 32 frames
pytestmark = pytest.mark.skipif(
    not os.path.isfile(VIDEO), reason="../shared/data/videos is absent"
)
NUM = 6


def reference(bound):
    """First NUM frames by cv2 (RGB) and their quantized flow, uint8 (T, H, W, 2)."""
    cap = cv2.VideoCapture(VIDEO)
    frames = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(NUM)]
    cap.release()
    grays = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    flows = [
        cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        for a, b in zip(grays[:-1], grays[1:])
    ]
    flows.append(flows[-1])  # T frames -> T - 1 flows, the last repeated
    q = np.round(
        (np.clip(np.stack(flows), -bound, bound) + bound) * 255.0 / (2 * bound)
    )
    return np.stack(frames), q.astype(np.uint8)


def test_video_file_with_farneback_flow(tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text(f"{os.path.abspath(VIDEO)},a\n")
    out = tmp_path / "records"
    code = main(
        [
            "--csv",
            str(listing),
            "--out",
            str(out),
            "--split",
            "train",
            "--short-side",
            "0",
            "--max-frames",
            str(NUM),
            "--workers",
            "1",
            "--quiet",
            "--flow",
            "farneback",
            "--flow-bound",
            "15",
            "--strict",
        ]
    )
    assert code == 0
    manifest = json.loads((out / "train.manifest.json").read_text())
    assert manifest["settings"]["flow"] == "farneback"
    (shard,) = sorted(out.glob("train-*.tfrecord"))
    (serialized,) = list(tf.data.TFRecordDataset(str(shard)))
    example = records.parse(serialized, with_flow=True)
    assert float(example["flow_bound"]) == 15.0
    want_rgb, want = reference(15.0)
    rgb = np.stack([tf.io.decode_jpeg(b).numpy() for b in example["frames"].numpy()])
    assert rgb.shape == want_rgb.shape == (NUM, 256, 340, 3)
    mse = np.mean((rgb.astype(np.float64) - want_rgb) ** 2)
    assert 10 * np.log10(255.0**2 / mse) > 30  # the same frames, JPEG-coded
    got = np.stack(
        [
            np.stack(
                [
                    tf.io.decode_jpeg(x).numpy()[..., 0],
                    tf.io.decode_jpeg(y).numpy()[..., 0],
                ],
                axis=-1,
            )
            for x, y in zip(example["flow_x"].numpy(), example["flow_y"].numpy())
        ]
    ).astype(np.int16)
    assert got.shape == want.shape == (NUM, 256, 340, 2)
    err = np.abs(got - want.astype(np.int16))
    assert err.mean() <= 0.6, err.mean()
    assert np.percentile(err, 99) <= 3
    # The flow is not trivially flat, and a one-frame shift would be caught.
    shifted = np.abs(got[1:-1] - want[:-2].astype(np.int16)).mean()
    assert shifted > 2 * err.mean() + 0.1, (shifted, err.mean())
