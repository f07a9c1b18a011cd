"""`kf-train --workers N` as a scheduler sees it (issue 24): a worker's exit 75
preempts the whole job without a second signal to anyone, a failure stops
the others, and a signal to the launcher reaches each worker exactly once.

The workers are stand-ins (`launcher_standin.py`: real processes that log
every signal they receive), so each test takes about a second."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from klassterfork import exit_codes
from klassterfork.training import launcher

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STANDIN = [sys.executable,
           os.path.join(os.path.dirname(__file__), "launcher_standin.py")]
HANG_S = 60  # a guard against a hang only; no test asserts a duration


def events(folder, index):
    path = folder / f"worker{index}.log"
    return path.read_text().splitlines() if path.exists() else []


def ready(folder, index):
    """The stand-in's `ready` line as a dict of ints, waiting for it."""
    deadline = time.monotonic() + HANG_S
    while not [e for e in events(folder, index) if e.startswith("ready")]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {index} never became ready")
        time.sleep(0.01)
    line = events(folder, index)[0]
    return {k: int(v) for k, v in (x.split("=") for x in line.split()[1:])}


def wait_for(folder, index, event):
    deadline = time.monotonic() + HANG_S
    while event not in events(folder, index):
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {index}: no {event!r}: {events(folder, index)}")
        time.sleep(0.01)


def run_in_process(tmp_path, plan, act):
    """launch() with 2 stand-ins; `act()` runs in a thread once both are ready.
    Returns (status, launcher log lines)."""
    lines = []

    def then():
        for i in range(2):
            ready(tmp_path, i)
        act()

    thread = threading.Thread(target=then, daemon=True)
    thread.start()
    status = launcher.launch([str(tmp_path), json.dumps(plan)], 2, log=lines.append,
                             command=STANDIN)
    thread.join(timeout=HANG_S)
    return status, lines


@pytest.mark.parametrize("signalled", ["worker 1", "launcher"])
def test_a_preempted_worker_preempts_the_job_and_lets_the_others_checkpoint(
        tmp_path, signalled):
    # Worker 1 stops at once; worker 0 (the chief) "checkpoints" for 2 s.
    # Either worker 1 alone was signalled (by a scheduler: the launcher
    # forwards SIGTERM to worker 0), or the launcher was (it forwarded to both).
    plan = {"0": {"checkpoint_s": 2}, "1": {}}

    def act():
        if signalled == "launcher":
            os.kill(os.getpid(), signal.SIGTERM)  # handled by launch() here
        else:
            os.kill(ready(tmp_path, 1)["pid"], signal.SIGTERM)

    status, log = run_in_process(tmp_path, plan, act)
    assert status == exit_codes.PREEMPTED, log
    # Worker 0 got one SIGTERM (a second one would have exited it 143 at once,
    # mid-save) and ended by itself after its checkpoint.
    assert events(tmp_path, 0)[1:] == ["signal SIGTERM", "checkpointed", "exit 75"]
    assert events(tmp_path, 1)[1:] == ["signal SIGTERM", "checkpointed", "exit 75"]
    assert "preempted: worker 0: 75, worker 1: 75" in log, log


def test_a_failed_worker_stops_the_others_with_its_status(tmp_path):
    plan = {"0": {}, "1": {"exit": 1, "after_ready": 0}}
    status, log = run_in_process(tmp_path, plan, lambda: None)
    assert status == exit_codes.FAILED, log
    assert events(tmp_path, 1)[1:] == ["exit 1"]
    assert events(tmp_path, 0)[1:] == ["signal SIGTERM", "checkpointed", "exit 75"]
    assert "worker 1 failed with status 1; stopping the others" in log


def test_a_worker_that_does_not_end_after_a_preemption_is_stopped(tmp_path,
                                                                 monkeypatch):
    # Worker 0 "checkpoints" for an hour: after GRACE_S it gets its second
    # SIGTERM (exits 143 at once); the job's status stays 75, and the log
    # names worker 0.
    monkeypatch.setattr(launcher, "GRACE_S", 0.5)
    plan = {"0": {"checkpoint_s": 3600}, "1": {}}
    status, log = run_in_process(
        tmp_path, plan, lambda: os.kill(ready(tmp_path, 1)["pid"], signal.SIGTERM))
    assert status == exit_codes.PREEMPTED, log
    assert events(tmp_path, 0)[1:] == ["signal SIGTERM", "signal SIGTERM", "exit 143"]
    assert "worker 0 (143) did not exit 75 by itself" in log[-1], log


def start_launcher(tmp_path, plan):
    """The launcher as its own process (and process group, as a shell's job)."""
    code = ("import sys; from klassterfork.training import launcher; "
            "sys.exit(launcher.launch(sys.argv[1:3], 2, command=sys.argv[3:]))")
    return subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path), json.dumps(plan), *STANDIN],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def finish(proc, folder):
    """The launcher's (status, output); kills what a failed test left behind."""
    try:
        out, _ = proc.communicate(timeout=HANG_S)
        return proc.returncode, out
    finally:
        for p in [proc] + [ready(folder, i)["pid"] for i in range(2)
                           if events(folder, i)]:
            pid = p.pid if isinstance(p, subprocess.Popen) else p
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def test_ctrl_c_reaches_each_worker_once_through_the_launcher(tmp_path):
    proc = start_launcher(tmp_path, {"0": {"checkpoint_s": 0.3}, "1": {}})
    workers = [ready(tmp_path, i) for i in range(2)]
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    status, out = finish(proc, tmp_path)
    assert status == exit_codes.PREEMPTED, out
    for i, w in enumerate(workers):
        # Its own process group: the terminal's SIGINT did not reach it.
        assert w["pgid"] == w["pid"] != w["parent_pgid"] == proc.pid
        assert events(tmp_path, i)[1:] == ["signal SIGINT", "checkpointed", "exit 75"]
    assert "forwarding SIGINT to 2 workers [0, 1]" in out


def test_a_second_signal_to_the_launcher_kills_the_workers(tmp_path):
    proc = start_launcher(tmp_path, {"0": {"checkpoint_s": 3600},
                                     "1": {"checkpoint_s": 3600}})
    pids = [ready(tmp_path, i)["pid"] for i in range(2)]
    proc.send_signal(signal.SIGTERM)
    for i in range(2):
        wait_for(tmp_path, i, "signal SIGTERM")
    proc.send_signal(signal.SIGINT)
    status, out = finish(proc, tmp_path)
    assert status == exit_codes.SIGNAL_BASE + signal.SIGINT, out
    for i, pid in enumerate(pids):
        assert events(tmp_path, i)[1:] == ["signal SIGTERM"]  # then SIGKILL
        assert not os.path.exists(f"/proc/{pid}")
    assert "second signal (SIGINT): killing the workers (SIGKILL)" in out
