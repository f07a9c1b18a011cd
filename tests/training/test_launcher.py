"""`kf-train CONFIG --workers N` (issue 12): N MultiWorkerMirrored processes on
127.0.0.1 that end with identical weights, the first failure's status, and
SIGTERM forwarded to every worker."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import pytest

from klassterfork import exit_codes
from klassterfork.data.runtime import service
from klassterfork.training import launcher
from klassterfork.training.cluster import weights_digest
from tests.training.tiny_data import tiny_config, write_split

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_strip_workers_flag_and_tf_configs():
    stripped = launcher.strip_workers_flag(["c.hjson", "--workers", "2", "-r"])
    assert stripped == ["c.hjson", "-r"]
    assert launcher.strip_workers_flag(["--workers=3", "c.hjson"]) == ["c.hjson"]
    configs = [json.loads(c) for c in launcher.tf_configs(3)]
    workers = configs[0]["cluster"]["worker"]
    assert len(set(workers)) == 3 and all(w.startswith("127.0.0.1:") for w in workers)
    tasks = [{"type": "worker", "index": i} for i in range(3)]
    assert [c["task"] for c in configs] == tasks
    assert all(c["cluster"] == configs[0]["cluster"] for c in configs)


def test_first_failure_status_is_the_launchers(tmp_path):
    # Both workers fail on a config error (status 2): so does the launcher.
    missing = str(tmp_path / "missing.hjson")
    assert launcher.launch([missing, "--workers", "2"], 2, log=lambda line: None) == \
        exit_codes.CONFIG_ERROR


def run_launcher(config_path, tmp_path, *extra):
    log = open(tmp_path / "launcher.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "klassterfork.cli.train", str(config_path),
         "--workers", "2", *extra], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def write_data(tmp_path):
    """(data dir, experiment dir): 32 train videos in 4 shards, 8 validation."""
    data = tmp_path / "data"
    write_split(str(data), "train", 32, seed=0, num_shards=4)
    write_split(str(data), "validation", 8, seed=1)
    return data, tmp_path / "exp"


@pytest.mark.slow
def test_two_workers_through_the_service_end_with_identical_weights(tmp_path):
    data, exp = write_data(tmp_path)
    config = json.loads(tiny_config(data, exp, epochs=2, plot=False))
    with service.LocalService(2, tmp_path / "svc") as svc:
        config["datasets"]["train"]["service"] = {"address": svc.address,
                                                  "timeout_s": 60}
        path = tmp_path / "c.hjson"
        path.write_text(json.dumps(config, indent=1))
        proc = run_launcher(path, tmp_path)
        code = proc.wait(timeout=900)
    out = (tmp_path / "launcher.log").read_text()
    assert code == 0, out
    digests = dict(re.findall(
        r"\[worker \d\] worker (\d): final weights sha256 (\w+)", out))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], out
    # The digest is of the weights the chief saved (an independent read).
    model = keras.models.load_model(exp / "stage0" / "model.keras")
    assert weights_digest(model) == digests["0"]
    assert "2 replica(s), global batch 4 (2 per replica)" in out
    assert "resume is not exact" in out


# Default (issue 24): the one real launcher preemption of the default run.
def test_sigterm_is_forwarded_to_every_worker(tmp_path):
    data, exp = write_data(tmp_path)
    path = tmp_path / "c.hjson"
    path.write_text(tiny_config(data, exp, epochs=200, plot=False, log_every_steps=1))
    proc = run_launcher(path, tmp_path)
    steps = exp / "stage0" / "log_steps.csv"
    deadline = time.monotonic() + 600
    while not (steps.exists() and len(steps.read_text().splitlines()) > 3):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == exit_codes.PREEMPTED
    out = (tmp_path / "launcher.log").read_text()
    assert "forwarding SIGTERM to 2 workers" in out


@pytest.mark.slow  # two launches of 2 workers: a few minutes on 2 cores
def test_sigterm_during_evaluation_stops_it_and_resume_runs_it(tmp_path):
    # Issue 24: every worker stops its evaluation at the next batch and
    # exits 75; the epoch-end checkpoint is already written; -r runs the
    # pending evaluation first and finishes with every step and row.
    data = tmp_path / "data"
    write_split(str(data), "train", 16, seed=0, num_shards=2)
    write_split(str(data), "validation", 400, seed=1)  # a long evaluation
    exp = tmp_path / "exp"
    path = tmp_path / "c.hjson"
    path.write_text(tiny_config(data, exp, epochs=2, plot=False))
    proc = run_launcher(path, tmp_path)
    pending = exp / "stage0" / "eval_pending.worker0.json"
    deadline = time.monotonic() + 600
    while not pending.exists():
        assert proc.poll() is None and time.monotonic() < deadline, \
            (tmp_path / "launcher.log").read_text()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out_log = tmp_path / "launcher.log"
    assert proc.wait(timeout=300) == exit_codes.PREEMPTED, out_log.read_text()
    out = out_log.read_text()
    step = json.loads(pending.read_text())["step"]
    assert out.count(f"evaluation after step {step} stopped by SIGTERM") == 2, out
    checkpoints = exp / "stage0" / "checkpoints"
    assert f"ckpt-{step}" in (checkpoints / "checkpoint").read_text()
    os.rename(out_log, tmp_path / "first.log")
    proc = run_launcher(path, tmp_path, "-r")
    assert proc.wait(timeout=600) == 0, out_log.read_text()
    out = out_log.read_text()
    assert f"at step {step}" in out and "running the evaluation of epoch 1" in out, out
    rows = (exp / "stage0" / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",," not in r for r in rows[1:]), rows
    assert (exp / "stage0" / "DONE").read_text().strip() == "8"
    assert (exp / "stage0" / "best.keras").exists()
