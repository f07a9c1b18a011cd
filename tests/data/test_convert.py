"""The converter: records match decoded frames, failures reported, resumable."""

import dataclasses
import json
import os
import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.cli import convert as cli
from klassterfork.data.conversion import convert, synthetic, video
from klassterfork.data import records
from klassterfork.data.conversion.sources import SOURCES

SHARED = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"
VIDEOS = SHARED / "videos"
needs_shared = pytest.mark.skipif(not VIDEOS.is_dir(), reason="../shared/data absent")


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def read_records(out, split):
    files = sorted(pathlib.Path(out).glob(f"{split}-*.tfrecord"))
    return [records.parse(s) for s in tf.data.TFRecordDataset([str(f) for f in files])]


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(out, num_train=8, num_val=0, seed=3, workers=1, progress=False)
    return out


def test_synthetic_records_round_trip(synthetic_dir, tmp_path):
    annotation = SOURCES["synthetic"](annotations=str(synthetic_dir), split="train")
    manifest = convert.convert(annotation, tmp_path, split="train", short_side=64,
                               workers=1, num_shards=3, progress=False)
    assert manifest["counts"] == {"videos": 8, "written": 8, "frames": sum(
        len(video.decode_video(e.path).frames) for e in annotation.entries),
        "failed": 0, "missing": 0, "skipped": 0, "truncated": 0}
    assert manifest["flip_label_map"] == [1, 0, 2, 3, 5, 4, 6, 7]
    assert manifest["label_names"] == list(synthetic.LABEL_NAMES)
    assert [s["videos"] for s in manifest["shards"]] == [3, 3, 2]
    assert manifest["settings"]["short_side"] == 64
    on_disk = json.loads((tmp_path / "train.manifest.json").read_text())
    assert on_disk == manifest
    assert (tmp_path / "labels.txt").read_text().splitlines()[1] == (
        "1,Moving something from right to left")
    by_id = {e.video_id: e for e in annotation.entries}
    parsed = read_records(tmp_path, "train")
    assert sorted(p["id"].numpy().decode() for p in parsed) == sorted(by_id)
    for p in parsed:
        entry = by_id[p["id"].numpy().decode()]
        reference = video.decode_video(entry.path, short_side=64)
        assert p["labels"].numpy().tolist() == list(entry.labels)
        assert p["label_text"].numpy().decode() == entry.label_text
        assert int(p["num_frames"]) == len(reference.frames) == len(p["frames"])
        assert (int(p["height"]), int(p["width"])) == (64, 85)  # 120x160 -> 64x85
        assert float(p["fps"]) == 12.0
        assert p["source"].numpy().decode() == entry.path
        for t in (0, len(reference.frames) - 1):
            frame = tf.io.decode_jpeg(p["frames"][t]).numpy()
            assert psnr(frame, reference.frames[t]) > 30


def test_rerun_skips_complete_shards_and_redoes_missing_ones(
        synthetic_dir, tmp_path, monkeypatch):
    annotation = SOURCES["synthetic"](annotations=str(synthetic_dir), split="train")
    kwargs = dict(split="train", short_side=32, workers=1, num_shards=2,
                  progress=False)
    first = convert.convert(annotation, tmp_path, **kwargs)
    shards = sorted(tmp_path.glob("train-*.tfrecord"))
    assert [s.name for s in shards] == ["train-00000-of-00002.tfrecord",
                                        "train-00001-of-00002.tfrecord"]
    stamps = {s.name: s.stat().st_mtime_ns for s in shards}
    calls = []
    real = video.decode_to_jpeg

    def counting(path, **options):
        calls.append(path)
        return real(path, **options)

    monkeypatch.setattr(video, "decode_to_jpeg", counting)
    assert convert.convert(annotation, tmp_path, **kwargs) == first
    assert calls == []  # nothing decoded
    shards[1].unlink()
    again = convert.convert(annotation, tmp_path, **kwargs)
    assert again == first
    assert len(calls) == first["shards"][1]["videos"]
    assert shards[0].stat().st_mtime_ns == stamps[shards[0].name]
    # Other settings: the shards are redone, not reused.
    calls.clear()
    convert.convert(annotation, tmp_path, **{**kwargs, "short_side": 40})
    assert len(calls) == 8
    assert not list(tmp_path.glob(".*.partial"))
    # Another label for one video: its shard is redone (stale labels would
    # otherwise stay in the records), the other shard is kept.
    calls.clear()
    entries = list(annotation.entries)
    entries[0] = dataclasses.replace(entries[0], labels=(7,), label_text="other")
    relabelled = dataclasses.replace(annotation, entries=entries)
    convert.convert(relabelled, tmp_path, **{**kwargs, "short_side": 40})
    (shard,) = [s for s in convert.shard_assignment(8, 2) if 0 in s]
    assert sorted(calls) == sorted(entries[i].path for i in shard)


def test_shard_assignment_is_a_fixed_partition():
    a = convert.shard_assignment(10, 3)
    assert a == convert.shard_assignment(10, 3)
    assert sorted(i for s in a for i in s) == list(range(10))
    assert [len(s) for s in a] == [4, 3, 3]
    assert a[0] != [0, 3, 6, 9]  # permuted: blocks of one class get mixed


def test_default_shard_count(synthetic_dir):
    annotation = SOURCES["synthetic"](annotations=str(synthetic_dir), split="train")
    # 8 small videos: one shard by size and by count.
    assert convert.choose_num_shards(annotation.entries) == 1
    many = annotation.entries * 40  # 320 videos -> ceil(320 / 32) = 10
    assert convert.choose_num_shards(many) == 10
    big = annotation.entries * 4000  # by size: 32000 x ~30 x 128x171 x .35
    n = convert.choose_num_shards(big)
    est = 32000 * 30 * 128 * 171 * convert.BYTES_PER_PIXEL / convert.SHARD_BYTES
    assert 0.7 * est < n < 1.3 * est


def test_failures_reported_and_strict_exit_code(synthetic_dir, tmp_path):
    good = sorted((synthetic_dir / "videos").glob("*.mp4"))[:2]
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("not a video\n")
    csv = tmp_path / "list.csv"
    csv.write_text(f"{good[0]},b\n{good[1]},a\nempty.mp4,a\nnotes.mp4,b\nabsent.mp4,a\n")
    out = tmp_path / "out"
    argv = ["--csv", str(csv), "--out", str(out), "--split", "test",
            "--workers", "1", "--quiet", "--short-side", "32"]
    assert cli.main(argv) == 0
    manifest = json.loads((out / "test.manifest.json").read_text())
    assert manifest["counts"] == {"videos": 4, "written": 2,
                                  "frames": manifest["counts"]["frames"],
                                  "failed": 2, "missing": 1, "skipped": 0,
                                  "truncated": 0}
    reasons = {os.path.basename(f["path"]): f["reason"] for f in manifest["failed"]}
    assert reasons["empty.mp4"] == "empty file (0 bytes)"
    assert reasons["notes.mp4"].startswith("cannot open as a video")
    assert manifest["missing"][0]["path"].endswith("absent.mp4")
    assert manifest["label_names"] == ["a", "b"]
    assert (out / "labels.txt").read_text() == "0,a\n1,b\n"
    assert cli.main(argv + ["--strict"]) == 1
    with pytest.raises(SystemExit):
        cli.main(["--dataset", "nope", "--annotations", "x", "--out", str(out)])


def test_csv_reader(tmp_path):
    (tmp_path / "v").mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / "v" / name).write_bytes(b"x")
    (tmp_path / "list.csv").write_text("path,label\nv/a.mp4,dog\nv/b.mp4,cat\nv/c.mp4,\n")
    ann = SOURCES["csv"](annotations=str(tmp_path / "list.csv"))
    assert ann.label_names == ["cat", "dog"]
    assert [(e.video_id, e.labels) for e in ann.entries] == [
        ("v/a.mp4", (1,)), ("v/b.mp4", (0,)), ("v/c.mp4", ())]
    assert ann.classes_from == "sorted names"
    assert ann.entries[0].path == str(tmp_path / "v" / "a.mp4")
    (tmp_path / "idx.csv").write_text("a.mp4,2\nb.mp4,0\n")
    ann = SOURCES["csv"](annotations=str(tmp_path / "idx.csv"), videos=str(tmp_path / "v"))
    assert ann.label_names == ["0", "1", "2"]
    assert [e.labels for e in ann.entries] == [(2,), (0,)]
    (tmp_path / "labels.txt").write_text("0,zebra\n1,cat\n2,dog\n")
    ann = SOURCES["csv"](annotations=str(tmp_path / "list.csv"),
                         label_map=str(tmp_path / "labels.txt"))
    assert [e.labels for e in ann.entries] == [(2,), (1,), ()]
    (tmp_path / "bad.csv").write_text("v/a.mp4,dog\nv/b.mp4,bird\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: unknown label 'bird'"):
        SOURCES["csv"](annotations=str(tmp_path / "bad.csv"),
                       label_map=str(tmp_path / "labels.txt"))


def manifest_counts():
    with open(SHARED / "manifest.json") as f:
        return {e["path"]: e["media"]["frames_decoded"] for e in json.load(f)["entries"]
                if e["path"].startswith("videos/") and "media" in e}


SMALL = ["decord/video_0.mov", "decord/video_90.mov", "decord/video_180.mov",
         "decord/video_270.mov", "decord/unordered.mov", "decord/corrupted.mp4",
         "mmaction2/rawvideo_part_0.mp4", "ssv2/166766.webm",
         "moviepy/no_duration.webm", "mmaction2/test.avi"]


@needs_shared
def test_real_videos_counts_rotation_and_failures(tmp_path):
    (tmp_path / "zero.mp4").write_bytes(b"")
    rows = [f"{VIDEOS / rel},{rel.split('/')[0]}" for rel in SMALL]
    rows.append(f"{tmp_path / 'zero.mp4'},decord")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    ann = SOURCES["csv"](annotations=str(tmp_path / "list.csv"))
    out = tmp_path / "out"
    manifest = convert.convert(ann, out, split="val", workers=2, progress=False)
    failed = {pathlib.Path(f["path"]).name: f["reason"] for f in manifest["failed"]}
    assert set(failed) == {"corrupted.mp4", "zero.mp4"}
    assert "InvalidDataError" in failed["corrupted.mp4"]
    assert failed["zero.mp4"] == "empty file (0 bytes)"
    counts = manifest_counts()
    parsed = {pathlib.Path(p["source"].numpy().decode()).relative_to(VIDEOS).as_posix(): p
              for p in read_records(out, "val")}
    assert sorted(parsed) == sorted(r for r in SMALL if "corrupted" not in r)
    for rel, p in parsed.items():
        assert int(p["num_frames"]) == counts[f"videos/{rel}"] == len(p["frames"]), rel
        assert min(int(p["height"]), int(p["width"])) == 128
    # Rotated by the display matrix: 320 wide x 568 high -> 128 x 227.
    for rel in ("decord/video_90.mov", "decord/video_270.mov"):
        assert (int(parsed[rel]["width"]), int(parsed[rel]["height"])) == (128, 227)
        image = tf.io.decode_jpeg(parsed[rel]["frames"][0]).numpy()
        assert image.shape == (227, 128, 3)
    assert (int(parsed["decord/video_0.mov"]["width"]),
            int(parsed["decord/video_0.mov"]["height"])) == (227, 128)
    reference = video.decode_video(VIDEOS / "mmaction2" / "test.avi", short_side=128)
    frames = parsed["mmaction2/test.avi"]["frames"]
    for t in (0, 80, 163):
        assert psnr(tf.io.decode_jpeg(frames[t]).numpy(), reference.frames[t]) > 30


@needs_shared
def test_fps_and_max_frames_through_the_cli(tmp_path):
    src = VIDEOS / "mmaction2" / "demo_skeleton.mp4"  # 1080p, r 30, avg 28.05
    (tmp_path / "list.csv").write_text(f"{src},x\n")
    out = tmp_path / "out"
    assert cli.main(["--csv", str(tmp_path / "list.csv"), "--out", str(out),
                     "--fps", "10", "--max-frames", "20", "--workers", "1",
                     "--quiet"]) == 0
    (p,) = read_records(out, "train")
    assert int(p["num_frames"]) == 20 and float(p["fps"]) == 10.0
    assert (int(p["height"]), int(p["width"])) == (128, 228)
    reference = video.decode_video(src, short_side=128, fps=10, max_frames=20)
    last = tf.io.decode_jpeg(p["frames"][19]).numpy()
    assert psnr(last, reference.frames[19]) > 30
    manifest = json.loads((out / "train.manifest.json").read_text())
    assert manifest["settings"]["fps"] == 10.0 and manifest["settings"]["max_frames"] == 20


def test_mixed_labels_are_an_error_naming_the_first_other_row(tmp_path, capsys):
    (tmp_path / "list.csv").write_text("path,label\na.mp4,2\nb.mp4,10\nc.mp4,cat\n")
    with pytest.raises(ValueError, match=(
            r"list.csv:4: label 'cat' is a class name but .*list.csv:2 has a "
            r"class index \('2'\)")):
        SOURCES["csv"](annotations=str(tmp_path / "list.csv"))
    with pytest.raises(SystemExit) as info:
        cli.main(["--csv", str(tmp_path / "list.csv"), "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "list.csv:4: label 'cat'" in err and "Traceback" not in err
    (tmp_path / "list.json").write_text('[{"path": "a.mp4", "label": "cat"}, '
                                        '{"path": "b.mp4", "label": [1]}]')
    with pytest.raises(ValueError, match=r"list.json: item 1: label 1 is a class index"):
        SOURCES["json"](annotations=str(tmp_path / "list.json"), videos=None,
                        split="x")


def test_integer_labels_keep_their_value_and_a_labels_file_sets_the_order(
        synthetic_dir, tmp_path, capsys):
    a, b, c = sorted((synthetic_dir / "videos").glob("*.mp4"))[:3]
    (tmp_path / "ints.csv").write_text(f"{a},2\n{b},10\n{c},\n")
    out = tmp_path / "ints"
    argv = ["--workers", "1", "--quiet", "--short-side", "32"]
    assert cli.main(["--csv", str(tmp_path / "ints.csv"), "--out", str(out), *argv]) == 0
    labels = {p["source"].numpy().decode(): p["labels"].numpy().tolist()
              for p in read_records(out, "train")}
    assert labels == {str(a): [2], str(b): [10], str(c): []}
    manifest = json.loads((out / "train.manifest.json").read_text())
    assert manifest["label_names"] == [str(i) for i in range(11)]
    assert "classes:" not in capsys.readouterr().out  # indices: nothing chosen
    (tmp_path / "names.csv").write_text(f"{a},dog\n{b},cat\n")
    assert cli.main(["--csv", str(tmp_path / "names.csv"), "--out",
                     str(tmp_path / "sorted"), *argv]) == 0
    assert "classes: 2 names sorted (--labels FILE sets the order): 0=cat, 1=dog" in (
        capsys.readouterr().out)
    (tmp_path / "classes.txt").write_text("zebra\ndog\ncat\n")
    out = tmp_path / "ordered"
    assert cli.main(["--csv", str(tmp_path / "names.csv"), "--labels",
                     str(tmp_path / "classes.txt"), "--out", str(out), *argv]) == 0
    assert "classes:" not in capsys.readouterr().out
    labels = {p["source"].numpy().decode(): p["labels"].numpy().tolist()
              for p in read_records(out, "train")}
    assert labels == {str(a): [1], str(b): [2]}
    assert (out / "labels.txt").read_text() == "0,zebra\n1,dog\n2,cat\n"


@needs_shared
def test_ids_keep_the_extension_and_duplicates_are_reported(synthetic_dir, tmp_path,
                                                            capsys):
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "test.avi").write_bytes((VIDEOS / "mmaction2" / "test.avi").read_bytes())
    first = sorted((synthetic_dir / "videos").glob("*.mp4"))[0]
    (clip / "test.mp4").write_bytes(first.read_bytes())
    (tmp_path / "list.csv").write_text(
        "clip/test.avi,a\nclip/test.mp4,b\nclip/test.avi,a\n")
    out = tmp_path / "out"
    assert cli.main(["--csv", str(tmp_path / "list.csv"), "--out", str(out),
                     "--workers", "1", "--quiet", "--short-side", "32"]) == 0
    ids = sorted(p["id"].numpy().decode() for p in read_records(out, "train"))
    assert ids == ["clip/test.avi", "clip/test.mp4"]
    manifest = json.loads((out / "train.manifest.json").read_text())
    assert manifest["counts"]["skipped"] == 1 and manifest["counts"]["written"] == 2
    (skipped,) = manifest["skipped"]
    assert skipped["id"] == "clip/test.avi"
    assert skipped["reason"] == ("duplicate id 'clip/test.avi' (the same file); "
                                 "the first row is kept")
    assert f"  {clip / 'test.avi'}: duplicate id" in capsys.readouterr().err


def test_strict_fails_on_a_missing_file_and_lists_every_path(synthetic_dir, tmp_path,
                                                             capsys):
    good = sorted((synthetic_dir / "videos").glob("*.mp4"))[0]
    (tmp_path / "x.mp4").mkdir()  # a folder named like a video
    (tmp_path / "list.csv").write_text(f"{good},a\nabsent.mp4,a\nx.mp4,b\n")
    argv = ["--csv", str(tmp_path / "list.csv"), "--out", str(tmp_path / "out"),
            "--workers", "1", "--quiet", "--short-side", "32"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert f"  {tmp_path / 'absent.mp4'}: video file not found" in err
    assert f"  {tmp_path / 'x.mp4'}: is a directory, not a video file" in err
    assert cli.main(argv + ["--strict"]) == 1
    err = capsys.readouterr().err
    assert "2 video(s) not converted" in err
    assert f"  {tmp_path / 'absent.mp4'}: video file not found" in err
    assert f"  {tmp_path / 'x.mp4'}: is a directory, not a video file" in err
    # Only missing: strict still fails (it used to exit 0).
    (tmp_path / "missing.csv").write_text(f"{good},a\nabsent.mp4,a\n")
    argv[1] = str(tmp_path / "missing.csv")
    assert cli.main(argv + ["--strict"]) == 1
    assert f"{tmp_path / 'absent.mp4'}: video file not found" in capsys.readouterr().err


@needs_shared
def test_truncated_videos_fail_or_are_kept_and_marked(tmp_path):
    cuts = (("cut.webm", "ssv2/166766.webm"), ("cut.mp4", "mmaction2/test.mp4"))
    for name, src in cuts:
        data = (VIDEOS / src).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) * 4 // 10])
    (tmp_path / "list.csv").write_text(
        f"cut.webm,a\ncut.mp4,a\n{VIDEOS / 'moviepy' / 'no_duration.webm'},a\n")
    ann = SOURCES["csv"](annotations=str(tmp_path / "list.csv"))
    manifest = convert.convert(ann, tmp_path / "out", split="s", workers=1,
                               short_side=32, progress=False)
    reasons = {f["id"]: f["reason"] for f in manifest["failed"]}
    assert re.fullmatch(r"truncated: decoded \d+ of about 49 frames",
                        reasons["cut.webm"])
    # The mp4's index (moov) comes after its media: nothing can be decoded.
    assert reasons["cut.mp4"].startswith(
        "truncated: decoded 0 frames; the file ends inside its 'mdat' box")
    assert [p["id"].numpy().decode() for p in read_records(tmp_path / "out", "s")] == [
        str(VIDEOS / "moviepy" / "no_duration.webm")]
    kept = convert.convert(ann, tmp_path / "kept", split="s", workers=1,
                           short_side=32, progress=False, keep_truncated=True)
    assert [f["id"] for f in kept["failed"]] == ["cut.mp4"]  # no frame to keep
    assert kept["counts"]["written"] == 2
    assert kept["truncated"] == [{"id": "cut.webm", "path": str(tmp_path / "cut.webm"),
                                  "reason": reasons["cut.webm"]}]
