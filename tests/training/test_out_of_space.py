"""A full disk while training: one paragraph, exit 75, no `ckpt-N_temp` left,
the previous checkpoint intact, and `-r` on a roomier disk finishes the run
(issue 24, item 6)."""

import csv
import errno
import os
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

from klassterfork import exit_codes, out_of_space
from tests.training.tiny_data import tiny_config, write_split

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The message TF 2.21 gives for a CheckpointManager save on a full tmpfs
# (reproduced with a 1 MiB tmpfs; the test below gets it for real).
TF_SAVE_MESSAGE = (
    "{{function_node __wrapped__SaveV2_dtypes_3_device_/job:localhost/replica:0/task:0/"
    "device:CPU:0}} /x/ck/ckpt-1_temp/part-00000-of-00001.data-00000-of-00001.tempstate13"
    "; No space left on device [Op:SaveV2]")


@pytest.fixture
def tiny_fs(tmp_path):
    """A 1 MiB tmpfs: the tiny run's checkpoints (~180 KiB each) fill it."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def kf_train(*args):
    return subprocess.run(
        [sys.executable, "-m", "klassterfork.cli.train", *args], cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True, text=True, timeout=600)


def kf_lines(text):
    return [line for line in text.splitlines() if line.startswith("kf-train: out of space")]


def test_full_disk_exits_75_with_one_paragraph_and_resumes_elsewhere(tiny_fs, tmp_path):
    data = tmp_path / "data"
    write_split(str(data), "train", 24, seed=0)
    write_split(str(data), "validation", 8, seed=1)
    cfg = tmp_path / "c.hjson"
    cfg.write_text(tiny_config(data, tmp_path / "unused"))
    exp = tiny_fs / "exp"

    first = kf_train(str(cfg), "--experiment-dir", str(exp))
    assert first.returncode == exit_codes.OUT_OF_SPACE, first.stderr[-3000:]
    assert "Traceback" not in first.stderr
    [paragraph] = kf_lines(first.stderr)
    assert str(exp / "stage0" / "checkpoints") in paragraph
    assert "free there" in paragraph and " -r" in paragraph
    ckpts = exp / "stage0" / "checkpoints"
    assert not [n for n in os.listdir(ckpts) if n.endswith("_temp")]
    last = tf.train.latest_checkpoint(str(ckpts))
    assert last is not None
    tf.train.load_checkpoint(last)  # the previous checkpoint reads

    roomy = tmp_path / "roomy"
    shutil.copytree(exp, roomy)
    stale = roomy / "stage0" / "checkpoints" / "ckpt-99_temp"  # a killed run's
    stale.mkdir()
    (stale / "part-00000-of-00001.data-00000-of-00001.tempstate1").write_bytes(b"x")
    second = kf_train(str(cfg), "--experiment-dir", str(roomy), "-r")
    assert second.returncode == 0, second.stderr[-3000:]
    assert not stale.exists()
    assert "ckpt-99_temp" in second.stderr
    with open(roomy / "stage0" / "DONE") as f:
        assert int(f.read()) == 18  # 3 epochs x 24 videos / batch 4
    with open(roomy / "stage0" / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [6, 12, 18]


def test_recognises_the_kinds_of_out_of_space():
    assert out_of_space.is_out_of_space(OSError(errno.ENOSPC, "No space left on device"))
    assert out_of_space.is_out_of_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not out_of_space.is_out_of_space(OSError(errno.EACCES, "Permission denied"))
    full = tf.errors.ResourceExhaustedError(None, None, TF_SAVE_MESSAGE)
    assert out_of_space.is_out_of_space(full)
    oom = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
    assert not out_of_space.is_out_of_space(oom)
    try:  # raised while handling: the cause counts
        try:
            raise full
        except tf.errors.OpError:
            raise RuntimeError("closing the writer failed too") from None
    except RuntimeError as err:
        chained = err
    assert out_of_space.is_out_of_space(chained)
    assert out_of_space.error_path(full) == (
        "/x/ck/ckpt-1_temp/part-00000-of-00001.data-00000-of-00001.tempstate13")
    assert out_of_space.error_path(out_of_space.OutOfSpaceError("/a/log.csv")) == "/a/log.csv"


def test_report_removes_the_failed_checkpoint_folder(tmp_path):
    ckpts = tmp_path / "checkpoints"
    temp = ckpts / "ckpt-4_temp"
    temp.mkdir(parents=True)
    (ckpts / "ckpt-2.index").write_bytes(b"i" * 100)
    (ckpts / "ckpt-2.data-00000-of-00001").write_bytes(b"d" * 2000)
    err = tf.errors.ResourceExhaustedError(
        None, None, f"{temp}/part-0.tempstate1; No space left on device [Op:SaveV2]")
    text = out_of_space.report(err, resume_hint="kf-train c.hjson -r")
    assert not temp.exists() and (ckpts / "ckpt-2.index").exists()
    assert "\n" not in text
    assert f"writing {temp}/part-0.tempstate1" in text
    assert "2.1 KiB needed" in text  # 2100 bytes = 2.05 KiB, the previous checkpoint
    assert text.endswith("No space left on device [Op:SaveV2])")


def test_stale_checkpoint_temps_are_removed_with_a_log_line(tmp_path):
    keep = tmp_path / "stage0" / "checkpoints" / "ckpt-2.index"
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"")
    stale = [tmp_path / "stage0" / "checkpoints" / "ckpt-8_temp",
             tmp_path / "stage1" / "checkpoints" / "ckpt-10_temp"]
    for s in stale:
        s.mkdir(parents=True)
        (s / "part").write_bytes(b"x")
    (tmp_path / "notes_temp").mkdir()  # not a checkpoint's: kept
    lines = []
    removed = out_of_space.remove_checkpoint_temps(str(tmp_path), log=lines.append)
    assert sorted(removed) == sorted(str(s) for s in stale)
    assert not any(s.exists() for s in stale)
    assert keep.exists() and (tmp_path / "notes_temp").exists()
    assert len(lines) == 1 and all(str(s) in lines[0] for s in stale)
