"""The synthetic motion dataset: files, reproducibility, balance, flip map, and
that the class is really in the motion (measured on the decoded videos)."""

import collections
import json
import re

import cv2
import numpy as np
import pytest

from klassterfork.cli import synthetic as cli
from klassterfork.data.conversion import synthetic, video
from klassterfork.data.conversion.sources import SOURCES

NUM_TRAIN, NUM_VAL = 16, 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(out, num_train=NUM_TRAIN, num_val=NUM_VAL, seed=7,
                       workers=1, progress=False)
    return out


def load(path):
    with open(path) as f:
        return json.load(f)


def test_files_and_ssv2_style_annotations(dataset):
    train, val = load(dataset / "train.json"), load(dataset / "validation.json")
    assert len(train) == NUM_TRAIN and len(val) == NUM_VAL
    ids = [e["id"] for e in train + val]
    assert len(set(ids)) == len(ids)
    labels = load(dataset / "labels.json")
    assert labels == {name: str(i) for i, name in enumerate(synthetic.LABEL_NAMES)}
    assert len(labels) == 8
    for entry in train + val:
        assert set(entry) == {"id", "label", "template", "placeholders"}
        # SSv2: the template without brackets is the class key, and the label
        # is the template with the placeholder filled in.
        key = re.sub(r"\[(.*?)\]", r"\1", entry["template"])
        assert key in labels
        shape = entry["placeholders"][0]
        assert shape in synthetic.SHAPE_NAMES
        assert entry["label"].lower() == entry["template"].lower().replace(
            "[something]", shape.lower())
        decoded = video.decode_video(dataset / "videos" / f"{entry['id']}.mp4")
        assert (decoded.height, decoded.width) == (120, 160)
        assert decoded.source_fps == 12.0
        assert 24 <= len(decoded.frames) <= 36  # 2-3 s at 12 fps
    with av_open(dataset / "videos" / f"{ids[0]}.mp4") as c:
        stream = c.streams.video[0]
        assert (stream.codec_context.name, stream.format.name) == ("h264", "yuv420p")
    lines = (dataset / "labels.txt").read_text().splitlines()
    assert lines[0] == "0,Moving something from left to right"
    assert len(lines) == 8


def av_open(path):
    import av

    return av.open(str(path))


def test_same_seed_same_bytes_whatever_the_workers(dataset, tmp_path):
    synthetic.generate(tmp_path, num_train=NUM_TRAIN, num_val=NUM_VAL, seed=7,
                       workers=2, progress=False)
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    again = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert files == again and len(files) == NUM_TRAIN + NUM_VAL + 5
    for rel in files:
        assert (dataset / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_other_seed_other_videos():
    a, _ = synthetic.render_video(0, np.random.default_rng([7, 1]), num_frames=4)
    b, _ = synthetic.render_video(0, np.random.default_rng([8, 1]), num_frames=4)
    c, _ = synthetic.render_video(0, np.random.default_rng([7, 1]), num_frames=4)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_label_balance():
    counts = collections.Counter(
        synthetic._balanced_labels(np.random.default_rng(0), 480))
    assert counts == {c: 60 for c in range(8)}
    counts = collections.Counter(
        synthetic._balanced_labels(np.random.default_rng(0), 120))
    assert counts == {c: 15 for c in range(8)}


def test_generated_splits_are_balanced(dataset):
    for split, count in (("train", NUM_TRAIN), ("validation", NUM_VAL)):
        counts = collections.Counter(e["template"] for e in load(dataset / f"{split}.json"))
        assert sorted(counts.values()) == [count // 8] * 8, split


def test_flip_map():
    names = synthetic.LABEL_NAMES
    assert synthetic.flip_label_map(names) == [1, 0, 2, 3, 5, 4, 6, 7]
    # It follows the names, not the positions.
    shuffled = [names[i] for i in (7, 4, 0, 2, 5, 1, 3, 6)]
    got = synthetic.flip_label_map(shuffled)
    expected = {"left to right": "right to left", "right to left": "left to right",
                "anticlockwise": "clockwise"}
    for i, name in enumerate(shuffled):
        flipped = shuffled[got[i]]
        if "left" in name:
            tail = name.split("from ")[1]
            assert flipped.endswith(expected[tail])
        elif "clockwise" in name:
            assert ("anticlockwise" in flipped) != ("anticlockwise" in name)
        else:
            assert flipped == name
    assert synthetic.flip_label_map(names[:3]) == [1, 0, 2]


def test_flip_map_file_and_reader(dataset):
    flip = load(dataset / "flip_map.json")
    assert flip["flip_label_map"] == [1, 0, 2, 3, 5, 4, 6, 7]
    assert flip["left/right"]["Rotating something clockwise"] == (
        "Rotating something anticlockwise")
    assert sorted(flip["left/right agnostic"]) == sorted(
        ["Moving something up", "Moving something down", "Something growing",
         "Something shrinking"])
    annotation = SOURCES["synthetic"](annotations=str(dataset), split="train")
    assert annotation.flip_label_map == [1, 0, 2, 3, 5, 4, 6, 7]
    assert annotation.label_names == list(synthetic.LABEL_NAMES)
    assert len(annotation.entries) == NUM_TRAIN and not annotation.missing
    train = load(dataset / "train.json")
    for entry, item in zip(annotation.entries, train):
        assert entry.video_id == item["id"]
        assert entry.path.endswith(f"videos/{item['id']}.mp4")
        assert annotation.label_names[entry.labels[0]] == re.sub(
            r"\[(.*?)\]", r"\1", item["template"])
    val = SOURCES["synthetic"](annotations=str(dataset), split="val")
    assert len(val.entries) == NUM_VAL
    with pytest.raises(ValueError, match="split"):
        SOURCES["synthetic"](annotations=str(dataset), split="test")


def motion_statistics(frames, step=2):
    """Mean Farneback flow (vx, vy), curl and divergence of the moving pixels.

    Curl > 0 is clockwise on screen (y points down); divergence > 0 is growth.
    An independent reading of the decoded video, not of the renderer.
    """
    totals, count = np.zeros(4), 0
    for a, b in zip(frames[:-step], frames[step:]):
        flow = cv2.calcOpticalFlowFarneback(
            cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY),
            None, 0.5, 3, 15, 3, 5, 1.2, 0)
        moving = np.hypot(flow[..., 0], flow[..., 1]) > 1.0
        if moving.sum() < 10:
            continue
        ys, xs = np.nonzero(moving)
        fx, fy = flow[..., 0][moving], flow[..., 1][moving]
        rx, ry = xs - xs.mean(), ys - ys.mean()
        radius = np.mean(np.hypot(rx, ry)) + 1e-6
        totals += [fx.mean(), fy.mean(), np.mean(rx * fy - ry * fx) / radius,
                   np.mean(rx * fx + ry * fy) / radius]
        count += 1
    return totals / max(count, 1)


def difference_centroids(frames, step=2, threshold=40):
    """x, y centroid of |frame[t + step] - frame[t]| per t."""
    out = []
    for a, b in zip(frames[:-step], frames[step:]):
        diff = np.abs(b.astype(np.int16) - a.astype(np.int16)).sum(-1) > threshold
        ys, xs = np.nonzero(diff)
        out.append((xs.mean(), ys.mean()))
    return np.array(out)


def test_motion_direction_is_in_the_decoded_videos(dataset):
    annotation = SOURCES["synthetic"](annotations=str(dataset), split="train")
    seen = collections.Counter()
    for entry in annotation.entries:
        frames = video.decode_video(entry.path).frames
        name = annotation.label_names[entry.labels[0]]
        # Growth is slow per frame: 4-frame steps keep Farneback's divergence
        # well above its noise (the demo recipe samples every 3rd frame).
        step = 4 if ("growing" in name or "shrinking" in name) else 2
        vx, vy, curl, div = motion_statistics(frames, step=step)
        checks = {
            "Moving something from left to right": vx > 1 and vx > 3 * abs(vy),
            "Moving something from right to left": -vx > 1 and -vx > 3 * abs(vy),
            "Moving something up": -vy > 1 and -vy > 3 * abs(vx),
            "Moving something down": vy > 1 and vy > 3 * abs(vx),
            "Rotating something clockwise": curl > 0.2 and curl > 2 * abs(div),
            "Rotating something anticlockwise": -curl > 0.2 and -curl > 2 * abs(div),
            "Something growing": div > 0.05 and div > 2 * abs(curl),
            "Something shrinking": -div > 0.05 and -div > 2 * abs(curl),
        }
        assert checks[name], (entry.video_id, name, vx, vy, curl, div)
        if "left" in name:
            # The frame-difference centroid travels the same way, by >= 40 px.
            x = difference_centroids(frames)[:, 0]
            slope = np.polyfit(np.arange(len(x)), x, 1)[0]
            travel = slope * len(frames)
            assert (travel > 40) if name.endswith("to right") else (travel < -40), (
                entry.video_id, name, travel)
        seen[name] += 1
    assert len(seen) == 8


def test_object_size_and_travel_suit_the_demo_crops():
    rng = np.random.default_rng(3)
    for c, motion in enumerate(synthetic.CLASSES):
        frames, info = synthetic.render_video(c, rng, num_frames=30)
        if motion.kind == "translate":
            axis = "cx" if motion.direction[0] else "cy"
            extent = 160 if axis == "cx" else 120
            travel = abs(info[axis][-1] - info[axis][0])
            # >= 45 % of the frame in the video: >= 24 % within 16 frames.
            assert travel >= 0.4 * extent, (motion.template, travel)


def test_cli_writes_dataset(tmp_path, capsys):
    assert cli.main(["--out", str(tmp_path), "--num-train", "8", "--num-val", "0",
                     "--workers", "1", "--quiet", "--codec", "vp9"]) == 0
    assert "wrote 8 train" in capsys.readouterr().out
    webm = sorted((tmp_path / "videos").glob("*.webm"))
    assert len(webm) == 8
    with av_open(webm[0]) as c:
        assert c.streams.video[0].codec_context.name == "vp9"
    annotation = SOURCES["synthetic"](annotations=str(tmp_path), split="train")
    assert all(e.path.endswith(".webm") for e in annotation.entries)
    with pytest.raises(SystemExit):
        cli.main(["--out", str(tmp_path), "--height", "121"])


def test_every_draw_stays_in_the_frame():
    # 600 draws per class (the default set's size), 2 frames each: the start
    # range used to be empty (high < low) when the travel filled the frame.
    for c in range(len(synthetic.CLASSES)):
        for i in range(600):
            _, info = synthetic.render_video(
                c, np.random.default_rng([0, i]), num_frames=2, height=24, width=32)
            assert (info["cx"] > 0).all() and (info["cx"] < 32).all()
            assert (info["cy"] > 0).all() and (info["cy"] < 24).all()
