"""`make demo` end to end (slow: ~5 minutes on 2 cores): generate the synthetic
set, convert it, train the demo recipe, and reach >= 90 % val top-1."""

import csv
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, env=None):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_demo_recipe_reaches_90_percent(tmp_path):
    raw, records = tmp_path / "synthetic", tmp_path / "records"
    run("tools/make_synthetic.py", "--out", str(raw), "--workers", "2", "--quiet")
    for split in ("train", "validation"):
        run("tools/convert_videos.py", "--dataset", "synthetic", "--annotations", str(raw),
            "--videos", str(raw / "videos"), "--split", split, "--out", str(records),
            "--short-side", "56", "--workers", "2", "--quiet")
    env = {"KF_DATA": str(records), "KF_EXPERIMENTS": str(tmp_path / "exp")}
    run("runs/train.py", "demo_r2plus1d_synthetic.hjson", "--set", "train_loop.progress=false",
        env=env)
    log = tmp_path / "exp" / "demo_r2plus1d_synthetic" / "stage0" / "log.csv"
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert float(rows[-1]["val_top1"]) >= 0.9
