"""SIGTERM / SIGINT to real kf-train processes (issue 11): the run finishes its
step, checkpoints, flushes its logs and exits with exit_codes.PREEMPTED; `-r`
then loses 0 steps and ends with the weights of an uninterrupted run."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from klassterfork import exit_codes
from tests.training.test_fault_tolerance import latest_step
from tests.training.test_trainer import free_ports
from tests.training.tiny_data import tiny_config, write_split

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPOCHS, STEPS_PER_EPOCH = 4, 6  # 24 train videos, batch 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("preempt_data")
    write_split(str(d), "train", 24, seed=0)
    write_split(str(d), "validation", 8, seed=1)
    return d


def write_cfg(folder, data, **loop):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "c.hjson"
    # checkpoint_every_steps beyond the run: mid-epoch checkpoints come only
    # from the signal, so a lost step cannot hide behind a periodic save.
    path.write_text(tiny_config(data, folder / "exp", epochs=EPOCHS, deterministic=True,
                                checkpoint_every_steps=1000, keep_checkpoints=3,
                                log_every_steps=1, **loop))
    return path, folder / "exp"


def run_cli(*args):
    """kf-train in a fresh process, as a user (or a scheduler) runs it."""
    proc = subprocess.run([sys.executable, "runs/train.py", *map(str, args)], cwd=ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                          capture_output=True, text=True, timeout=300)
    return proc


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """A callable returning the experiment folder of the uninterrupted run.
    The run starts here and trains while the test's signalled run does
    (independent processes, mostly one-core start-up); the callable waits."""
    cfg, exp = write_cfg(tmp_path_factory.mktemp("full"), data)
    proc = start(cfg)

    def finished():
        if proc.returncode is None:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
        return exp

    yield finished
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def err_class(message):
    """The TensorFlow error class the paragraph names."""
    return message.split("(TensorFlow: ", 1)[1].split(":", 1)[0]


def logged_steps(exp):
    path = exp / "stage0" / "log_steps.csv"
    return [int(r["step"]) for r in csv_rows(path)] if path.exists() else []


def start(cfg, *extra, env=None):
    return subprocess.Popen(
        [sys.executable, "runs/train.py", str(cfg), *extra], cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_step(exp, step, procs, timeout=120):
    deadline = time.time() + timeout
    while not (logged_steps(exp) and logged_steps(exp)[-1] >= step):
        for p in procs:
            assert p.poll() is None, "a run ended before the signal: " + p.stderr.read()[-3000:]
        assert time.time() < deadline, "training made no progress"
        time.sleep(0.01)


# SIGINT goes through the same handler as SIGTERM; its full run is slow-marked
# (the second-signal test below sends it in the default run).
@pytest.mark.parametrize("signum", [signal.SIGTERM,
                                    pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_signal_then_resume_loses_no_step(data, uninterrupted, tmp_path, signum):
    cfg, exp = write_cfg(tmp_path, data)
    at = random.Random(os.getpid() + signum).randint(2, 15)  # of 24 steps
    proc = start(cfg)
    wait_for_step(exp, at, [proc])
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == exit_codes.PREEMPTED, err[-3000:]
    assert "Traceback" not in err
    saved = latest_step(exp / "stage0" / "checkpoints")
    # 0 steps lost: the checkpoint holds every step the run logged.
    assert at <= saved < EPOCHS * STEPS_PER_EPOCH
    assert logged_steps(exp) == list(range(1, saved + 1))
    name = signal.Signals(signum).name
    assert f"preempted ({name}) after step {saved}" in err
    assert f"kf-train {cfg} -r" in err  # the command to resume
    assert not (exp / "stage0" / "DONE").exists()
    # Rows a SIGKILLed run would have logged after its last checkpoint.
    with open(exp / "stage0" / "log_steps.csv", "a") as f:
        f.write(f"{saved + 1},1,0.5,0.01,10.0\n{saved + 2},1,0.5,0.01,10.0\n")

    proc = run_cli(cfg, "-r")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"log_steps.csv: removed 2 row(s) past step {saved}" in proc.stdout
    assert f"resumed from {exp / 'stage0' / 'checkpoints' / f'ckpt-{saved}'} at step {saved}" \
        in proc.stdout
    assert (exp / "stage0" / "DONE").read_text().strip() == str(EPOCHS * STEPS_PER_EPOCH)
    # No duplicate rows, none missing; the split epoch reports all its steps.
    assert logged_steps(exp) == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    reference = uninterrupted()
    rows, ref = csv_rows(exp / "stage0" / "log.csv"), csv_rows(reference / "stage0" / "log.csv")
    assert [r["epoch"] for r in rows] == [str(e) for e in range(1, EPOCHS + 1)]
    for r, f in zip(rows, ref):
        for key in ("loss", "top1", "val_top1"):
            assert float(r[key]) == pytest.approx(float(f[key]), abs=1e-6), (key, r, f)
    a = keras.saving.load_model(str(reference / "stage0" / "model.keras")).weights
    b = keras.saving.load_model(str(exp / "stage0" / "model.keras")).weights
    for wa, wb in zip(a, b):
        np.testing.assert_allclose(np.asarray(wa), np.asarray(wb), atol=1e-6, rtol=0)


@pytest.mark.slow  # 8-10 s; the first signal's path is the default run's
def test_second_signal_exits_at_once_without_checkpoint(data, tmp_path):
    cfg, exp = write_cfg(tmp_path, data)
    proc = start(cfg)
    wait_for_step(exp, 2, [proc])
    before = latest_step(exp / "stage0" / "checkpoints")
    # Two different signals: a second SIGTERM sent while the first is still
    # pending would merge with it (Linux queues one of each standard signal).
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    codes = {exit_codes.SIGNAL_BASE + s: s.name for s in (signal.SIGTERM, signal.SIGINT)}
    assert proc.returncode in codes, err[-3000:]
    assert f"second signal ({codes[proc.returncode]}): exiting at once" in err
    assert latest_step(exp / "stage0" / "checkpoints") == before


def test_sigterm_to_one_of_two_workers_checkpoints_both_at_one_step(data, tmp_path):
    cfg, exp = write_cfg(tmp_path, data, strategy="multi_worker")
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = [start(cfg, env={"TF_CONFIG": json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": i}})}) for i in range(2)]
    try:
        at = random.Random(os.getpid()).randint(2, 12)
        wait_for_step(exp, at, procs, timeout=180)
        procs[1].send_signal(signal.SIGTERM)  # the non-chief: the chief learns it
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == exit_codes.PREEMPTED, err[-3000:]
    steps = []
    for i, (out, _) in enumerate(outs):
        lines = [x for x in out.splitlines() if "stopped by" in x]
        assert len(lines) == 1, out[-2000:]
        steps.append(int(lines[0].split("after step ")[1].split()[0]))
        assert ("SIGTERM" in lines[0]) == (i == 1), lines[0]  # worker 0 saw no signal
    saved = latest_step(exp / "stage0" / "checkpoints")  # the chief's copy
    assert steps[0] == steps[1] == saved >= at
    assert logged_steps(exp) == list(range(1, saved + 1))


@pytest.mark.parametrize("resume", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_sigkill_of_one_worker_gives_one_paragraph_and_resumes(data, tmp_path, resume):
    """A surviving worker names the lost one, the last checkpoint step and
    the command to resume, and exits with WORKER_LOST instead of a traceback;
    `-r` on both workers then finishes the run."""
    cfg, exp = write_cfg(tmp_path, data, strategy="multi_worker")
    cfg.write_text(cfg.read_text().replace('"checkpoint_every_steps": 1000',
                                           '"checkpoint_every_steps": 2'))
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    env = [{"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
           for i in range(2)]
    procs = [start(cfg, env=e) for e in env]
    try:
        # Any step after the first checkpoint (step 2); early keeps it short.
        wait_for_step(exp, random.Random(os.getpid()).randint(3, 8), procs, timeout=180)
        procs[1].send_signal(signal.SIGKILL)
        _, err = procs[0].communicate(timeout=60)  # "within seconds", not a hang
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == exit_codes.WORKER_LOST, err[-3000:]
    assert "Traceback" not in err
    message = [x for x in err.splitlines() if x.startswith("kf-train: worker lost:")]
    assert len(message) == 1, err[-3000:]
    saved = latest_step(exp / "stage0" / "checkpoints")
    assert saved >= 2
    assert f"lost contact with worker 1 (127.0.0.1:{cluster['worker'][1].split(':')[1]})" \
        in message[0]
    assert f"the last checkpoint is step {saved} of stage 0" in message[0]
    # The whole gRPC error is kept in the stage folder, named in the paragraph.
    dump = exp / "stage0" / "worker_lost.worker0.txt"
    assert f"the whole error: {dump}" in message[0], message[0]
    assert dump.read_text().startswith(err_class(message[0]) + ": ")
    assert message[0].endswith(f"on this worker: kf-train {cfg} -r")
    if not resume:
        return
    procs = [start(cfg, "-r", env=e) for e in env]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert f"at step {saved}" in out
    assert (exp / "stage0" / "DONE").read_text().strip() == str(EPOCHS * STEPS_PER_EPOCH)
    assert logged_steps(exp) == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
