"""Frame-folder conversion (issue 3): records of ../shared/data/frames/mmaction2_imgs
decode to the folder's frames (>= 40 dB), with computed or imported flow."""

import os

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.cli.convert import main
from klassterfork.data import records

FRAMES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "frames")
pytestmark = pytest.mark.skipif(not os.path.isdir(os.path.join(FRAMES, "mmaction2_imgs")),
                                reason="../shared/data/frames is absent")


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def convert(tmp_path, *extra):
    listing = tmp_path / "list.txt"
    listing.write_text("mmaction2_imgs 10 3\n")
    out = tmp_path / "records"
    code = main(["--dataset", "frames", "--annotations", str(listing), "--videos", FRAMES,
                 "--split", "train", "--out", str(out), "--short-side", "0", "--workers", "1",
                 "--quiet", *extra])
    assert code == 0
    (shard,) = sorted(out.glob("train-*.tfrecord"))
    (serialized,) = list(tf.data.TFRecordDataset(str(shard)))
    return records.parse(serialized, with_flow=True)


def test_frame_folder_records_match_the_folder(tmp_path):
    example = convert(tmp_path)
    assert int(example["num_frames"]) == 10 and list(example["labels"].numpy()) == [3]
    for i, encoded in enumerate(example["frames"].numpy()):
        got = tf.io.decode_jpeg(encoded).numpy()
        path = os.path.join(FRAMES, "mmaction2_imgs", f"img_{i + 1:05d}.jpg")
        with open(path, "rb") as f:
            want = tf.io.decode_jpeg(f.read(), channels=3).numpy()
        assert got.shape == want.shape == (240, 320, 3)
        assert psnr(got, want) >= 40.0
    assert example["flow_x"].shape[0] == 0  # no flow asked for


def test_frame_folder_with_farneback_flow(tmp_path):
    example = convert(tmp_path, "--flow", "farneback", "--flow-bound", "15")
    assert example["flow_x"].shape[0] == example["flow_y"].shape[0] == 10
    assert float(example["flow_bound"]) == 15.0
    flow = tf.io.decode_jpeg(example["flow_x"][0]).numpy()
    assert flow.shape[:2] == (240, 320)


def test_flow_on_video_files_is_a_clear_error(tmp_path):
    csv = tmp_path / "v.csv"
    video = os.path.join(FRAMES, "..", "videos", "mmaction2", "rawvideo_part_0.mp4")
    csv.write_text(f"{os.path.abspath(video)},a\n")
    out = tmp_path / "records"
    code = main(["--csv", str(csv), "--out", str(out), "--split", "train", "--workers", "1",
                 "--quiet", "--flow", "farneback", "--strict"])
    assert code != 0
    import json

    with open(out / "train.manifest.json") as f:
        failed = json.load(f)["failed"]
    assert "frame-folder datasets only" in failed[0]["reason"]


def test_label_remap_drops_removed_classes_and_reindexes(tmp_path):
    import json

    from klassterfork.cli.convert import apply_label_remap
    from klassterfork.data.sources import Annotation, VideoEntry

    annotation = Annotation(
        entries=[VideoEntry(f"v{i}", f"/v{i}.mp4", (i % 3,), "") for i in range(6)],
        label_names=["a", "b", "c"], flip_label_map=[0, 1, 2])
    remap = tmp_path / "label_remap.json"
    remap.write_text(json.dumps({"old_to_new": [0, -1, 1]}))  # class "b" removed
    out, dropped = apply_label_remap(annotation, str(remap))
    assert dropped == 2
    assert out.label_names == ["a", "c"]
    assert [(e.video_id, e.labels) for e in out.entries] == [
        ("v0", (0,)), ("v2", (1,)), ("v3", (0,)), ("v5", (1,))]
    remap.write_text(json.dumps({"old_to_new": [0, 1]}))
    with pytest.raises(ValueError, match="2 classes but the annotation has 3"):
        apply_label_remap(annotation, str(remap))
