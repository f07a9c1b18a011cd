"""`kf-convert --runner beam`: Beam's DirectRunner (2 processes, multi-
processing) writes the same records and manifest as the local runner, and a
re-run after a kill skips the complete shards.

A few short real videos plus failures (an empty file, a cut webm, a missing
file) keep each Beam run around ten seconds.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

# Beam is a test dependency (setup.py extras): a failed import is a broken
# environment and fails here, it does not skip the byte-identity tests.
import apache_beam  # noqa: E402, F401

from klassterfork.data.conversion import beam_convert, convert
from klassterfork.data import records  # noqa: E402
from klassterfork.data.conversion.sources import SOURCES  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
pytestmark = pytest.mark.skipif(not VIDEOS.is_dir(), reason="../shared/data absent")

SMALL = ["decord/video_0.mov", "decord/video_90.mov", "decord/unordered.mov",
         "mmaction2/rawvideo_part_0.mp4", "ssv2/166766.webm",
         "moviepy/no_duration.webm"]
SETTINGS = dict(split="val", short_side=32, num_shards=3)


def examples(out):
    """{id: (labels, frame JPEG bytes, fps, height, width)} from the shards,
    read with TensorFlow's reader and `records.parse`."""
    import tensorflow as tf

    files = sorted(str(f) for f in pathlib.Path(out).glob("val-*.tfrecord"))
    out = {}
    for serialized in tf.data.TFRecordDataset(files):
        p = records.parse(serialized)
        out[p["id"].numpy().decode()] = (
            p["labels"].numpy().tolist(), p["frames"].numpy().tolist(),
            float(p["fps"]), int(p["height"]), int(p["width"]))
    return out


def manifest(out):
    data = json.loads((pathlib.Path(out) / "val.manifest.json").read_text())
    data.pop("runner")
    return data


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The CSV and the local runner's output (the reference)."""
    tmp = tmp_path_factory.mktemp("beam")
    webm = (VIDEOS / "ssv2" / "166766.webm").read_bytes()
    (tmp / "cut.webm").write_bytes(webm[: len(webm) * 4 // 10])
    (tmp / "empty.mp4").write_bytes(b"")
    rows = [f"{VIDEOS / rel},{i % 2}" for i, rel in enumerate(SMALL)]
    rows += ["cut.webm,1", "empty.mp4,0", "absent.mp4,1"]
    (tmp / "list.csv").write_text("\n".join(rows) + "\n")
    annotation = SOURCES["csv"](annotations=str(tmp / "list.csv"))
    convert.convert(annotation, tmp / "local", workers=2, progress=False, **SETTINGS)
    return tmp, annotation


@pytest.fixture(scope="module")
def beam_out(dataset):
    tmp, annotation = dataset
    out = tmp / "beam"
    result = beam_convert.run(annotation, out, workers=2, **SETTINGS)
    assert result["runner"]["beam_runner"] == "DirectRunner"
    return out


def test_beam_direct_runner_writes_what_the_local_runner_writes(dataset, beam_out):
    tmp, _ = dataset
    local = examples(tmp / "local")
    assert sorted(local) == sorted(str(VIDEOS / rel) for rel in SMALL)
    assert examples(beam_out) == local
    assert manifest(beam_out) == manifest(tmp / "local")
    reasons = {pathlib.Path(f["path"]).name: f["reason"]
               for f in manifest(beam_out)["failed"]}
    assert reasons["empty.mp4"] == "empty file (0 bytes)"
    assert reasons["cut.webm"].startswith("truncated: decoded ")
    assert manifest(beam_out)["missing"][0]["path"].endswith("absent.mp4")
    for name in (f"val-{k:05d}-of-00003.tfrecord" for k in range(3)):
        assert (beam_out / name).read_bytes() == (tmp / "local" / name).read_bytes()
    assert (beam_out / "labels.txt").read_text() == "0,0\n1,1\n"


def stamps(out):
    """(inode, mtime_ns) of each complete shard (file and report present)."""
    out = pathlib.Path(out)
    return {f.name: (f.stat().st_ino, f.stat().st_mtime_ns)
            for f in out.glob("val-*.tfrecord")
            if (out / convert.STATE_DIR / f"{f.name}.json").exists()}


def test_rerun_skips_complete_shards(dataset, beam_out):
    tmp, annotation = dataset
    before = stamps(beam_out)
    assert len(before) == 3
    lost = "val-00001-of-00003.tfrecord"
    (beam_out / lost).unlink()  # as if killed between its report and rename
    beam_convert.run(annotation, beam_out, workers=2, **SETTINGS)
    after = stamps(beam_out)
    assert {k: v for k, v in after.items() if k != lost} == {
        k: v for k, v in before.items() if k != lost}
    assert after[lost] != before[lost]
    assert examples(beam_out) == examples(tmp / "local")


def test_rerun_after_a_kill_completes_and_keeps_complete_shards(dataset):
    tmp, annotation = dataset
    out = tmp / "killed"
    cmd = [sys.executable, "-m", "klassterfork.cli.convert", "--csv",
           str(tmp / "list.csv"), "--out", str(out), "--split", "val",
           "--short-side", "32", "--num-shards", "3", "--workers", "2", "--quiet",
           "--runner", "beam"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not stamps(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its Beam workers
    proc.wait()
    complete = stamps(out)
    assert not (out / "val.manifest.json").exists() or len(complete) == 3
    beam_convert.run(annotation, out, workers=2, **SETTINGS)
    after = stamps(out)
    assert {k: after[k] for k in complete} == complete  # not rewritten
    assert len(after) == 3
    assert examples(out) == examples(tmp / "local")
    assert manifest(out) == manifest(tmp / "local")
