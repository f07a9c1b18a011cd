"""`kf-train CONFIG --workers N`: N MultiWorkerMirrored processes on one machine.

Each process is `python -m klassterfork.cli.train` with the same arguments,
`train_loop.strategy=multi_worker`, `train_loop.cluster=tf_config` and its
own `TF_CONFIG` (worker i of N, free ports on 127.0.0.1). Output lines are
prefixed `[worker i]`. The launcher's status is the job's, for a scheduler
(`klassterfork/exit_codes.py`, docs/long_runs.md "Exit statuses"):

- 0 when every worker finishes with 0.
- 75 (PREEMPTED) when a worker exits 75: the whole job is preempted. The
  workers not signalled yet get one SIGTERM (in a multi-worker run they stop
  at the same step anyway, through the all-reduced stop flag); all get
  `GRACE_S` to checkpoint and exit by themselves, then a second SIGTERM (which
  exits a worker at once), then SIGKILL after `KILL_AFTER_S`. Each worker's
  status is logged, and one that did not end with 75 is named.
- Any other failing status (1, 2, 3, 76, 128 + s for a worker killed by signal
  s): the others get SIGTERM, `GRACE_S`, then SIGKILL, and the launcher exits
  with the first failure's status. After a 2 or a 3 (`SAME_STEP`: the
  bad-record budget and a diverged loss are decided after the same step on
  every worker, through all-reduced values) the others first get `GRACE_S`
  to exit by themselves. Each worker's status is logged, and one the
  launcher stopped is named.
- A SIGTERM / SIGINT to the launcher is forwarded once to each worker (never
  to one already signalled: for a worker a second signal means "exit at once,
  no checkpoint"), and the launcher waits for them with no bound (a step may
  end with an evaluation). A second SIGTERM / SIGINT to the launcher SIGKILLs
  the workers and exits 128 + that signal.

Workers run in their own session (`start_new_session`): a terminal's Ctrl-C
goes to the launcher's process group only, so it reaches each worker once,
through the launcher. So does a `kill -TERM -<pgid>` of the launcher's group;
a SIGKILL of the launcher alone leaves the workers running (signal the
launcher instead, or let the scheduler kill the job's cgroup).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from klassterfork import exit_codes

# Set in each worker's environment: the launcher forwards every signal to
# every worker, so a worker may stop an evaluation on its own signal
# (training/trainer.py); under other launchers one worker may be signalled alone.
EVERY_WORKER_SIGNALLED = "KF_EVERY_WORKER_SIGNALLED"
GRACE_S = 30.0  # after a failure or a preemption, how long the others get
KILL_AFTER_S = 5.0  # after the second SIGTERM, before SIGKILL
POLL_S = 0.05  # how often worker statuses are read
PREEMPTED = exit_codes.PREEMPTED
# Failures every worker reaches by itself at the same step (module docstring).
SAME_STEP = (exit_codes.CONFIG_ERROR, exit_codes.DIVERGED)
LAUNCHER_SIGNALS = (signal.SIGTERM, signal.SIGINT)
WORKER_COMMAND = (sys.executable, "-m", "klassterfork.cli.train")


def strip_workers_flag(argv):
    """`argv` without `--workers N` / `--workers=N`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


def free_port():
    """A TCP port free on 127.0.0.1 now. (Not `data.service.free_port`: that
    module loads TensorFlow, which this parent process never needs.)"""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tf_configs(num_workers, host="127.0.0.1"):
    """TF_CONFIG text of each of `num_workers` workers on `host`."""
    cluster = {"worker": [f"{host}:{free_port()}" for _ in range(num_workers)]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            for i in range(num_workers)]


def launch(argv, num_workers, *, log=None, command=None):
    """Runs `num_workers` trainer processes; returns the job's exit status.

    Args:
        argv: list of str. kf-train's arguments (`--workers` is removed).
        num_workers: int >= 1.
        log: callable(str) or None. Defaults to printing to stderr.
        command: list of str or None. The program each worker runs, before
            its arguments (tests pass a stand-in). Defaults to
            `[sys.executable, "-m", "klassterfork.cli.train"]`.

    Returns:
        int. See the module docstring.
    """
    log = log or (lambda line: print(f"kf-train: {line}", file=sys.stderr, flush=True))
    command = list(command or WORKER_COMMAND)
    worker_argv = strip_workers_flag(argv) + [
        "--set", "train_loop.strategy=multi_worker",
        "--set", "train_loop.cluster=tf_config"]
    configs = tf_configs(num_workers)
    addresses = json.loads(configs[0])["cluster"]["worker"]
    log(f"{num_workers} workers on 127.0.0.1 ({addresses}), each with "
        "train_loop.strategy=multi_worker, train_loop.cluster=tf_config")
    workers = _Workers(log)
    # Installed before the first worker starts: a signal in between is
    # forwarded to the workers started so far, not lost.
    previous = {s: signal.signal(s, workers.on_signal) for s in LAUNCHER_SIGNALS}
    threads = []
    try:
        for i, config in enumerate(configs):
            proc = subprocess.Popen(
                [*command, *worker_argv], env=dict(os.environ, TF_CONFIG=config,
                                                 **{EVERY_WORKER_SIGNALLED: "1"}),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, bufsize=1,
                start_new_session=True)
            workers.procs.append(proc)
            thread = threading.Thread(target=_prefix, daemon=True,
                                      args=(proc.stdout, f"[worker {i}] "))
            thread.start()
            threads.append(thread)
        return _wait(workers)
    finally:
        workers.kill()  # only if launch itself failed: every worker has ended
        for s, handler in previous.items():
            signal.signal(s, handler)
        for t in threads:
            t.join(timeout=5)


class _Workers:
    """The worker processes and which of them the launcher has signalled."""

    def __init__(self, log):
        self.procs, self.log = [], log
        self.signalled = set()  # indices of workers sent a SIGTERM / SIGINT
        self.received = []  # the signals the launcher itself received
        self.escalated = None  # the launcher's second signal, once received
        self.pending = []  # signals received, not handled yet

    def running(self):
        return [i for i, p in enumerate(self.procs) if p.poll() is None]

    def forward(self, signum):
        """Sends `signum` to each running worker not signalled yet."""
        targets = [i for i in self.running() if i not in self.signalled]
        for i in targets:
            self.procs[i].send_signal(signum)
            self.signalled.add(i)
        return targets

    def on_signal(self, signum, _frame):
        # Only recorded here: the main loop acts on it within POLL_S (a
        # handler that printed could interrupt a print of the main thread).
        self.pending.append(signum)

    def handle_signals(self):
        while self.pending:
            self._handle(self.pending.pop(0))

    def _handle(self, signum):
        name = signal.Signals(signum).name
        self.received.append(signum)
        if len(self.received) > 1:
            self.log(f"second signal ({name}): killing the workers (SIGKILL), no "
                     f"checkpoint; exiting {exit_codes.SIGNAL_BASE + signum}")
            self.escalated = signum
            self.kill()
            return
        targets = self.forward(signum)
        self.log(f"forwarding {name} to {len(targets)} workers {targets} (once each; "
                 f"{name} again kills them)")

    def kill(self):
        for i in self.running():
            self.procs[i].kill()

    def wait_until(self, deadline):
        """True once every worker has ended; False at `deadline` or when the
        launcher received a second signal."""
        while self.running():
            self.handle_signals()
            if self.escalated or time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True

    def statuses(self):
        return ", ".join(f"worker {i}: {_status(p.poll())}"
                         for i, p in enumerate(self.procs) if p.poll() is not None)


def _prefix(stream, prefix):
    for line in stream:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


def _status(code):
    return 128 - code if code < 0 else code  # killed by signal s: 128 + s


def _wait(workers):
    """Waits for the job to end; returns its status (module docstring)."""
    while True:
        workers.handle_signals()
        if workers.escalated:
            for p in workers.procs:
                p.wait()
            return exit_codes.SIGNAL_BASE + workers.escalated
        codes = [_status(c) if c is not None else None
                 for c in (p.poll() for p in workers.procs)]
        failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0, PREEMPTED)]
        preempted = [i for i, c in enumerate(codes) if c == PREEMPTED]
        if failed:
            return _failed(workers, *failed[0])
        if preempted:
            return _preempted(workers, preempted[0])
        if all(c == 0 for c in codes):
            return 0
        time.sleep(POLL_S)


def _failed(workers, index, code):
    """Worker `index` failed with `code`: stops the others, returns `code`."""
    if code in SAME_STEP and workers.running():
        # They stop after the same step by themselves: SIGTERM would make
        # them checkpoint and exit 75 instead.
        workers.log(f"worker {index} failed with status {code}; waiting up to {GRACE_S:g} s "
                    "for the others, which stop after the same step by themselves")
        workers.wait_until(time.monotonic() + GRACE_S)
    stopped = workers.running()
    if stopped and not workers.escalated:
        workers.log(f"worker {index} failed with status {code}; stopping the others")
    _stop(workers, GRACE_S)
    if workers.escalated:
        return exit_codes.SIGNAL_BASE + workers.escalated
    workers.log(f"failed: {workers.statuses()}" + (
        f"; stopped by the launcher: {', '.join(f'worker {i}' for i in stopped)}"
        if stopped else ""))
    return code


def _preempted(workers, index):
    """A worker exited 75: lets the others checkpoint, returns 75."""
    targets = workers.forward(signal.SIGTERM)
    workers.log(f"worker {index} was preempted (status {PREEMPTED}): the job stops; "
                f"SIGTERM to {targets or 'no worker (all signalled already)'}; "
                f"waiting up to {GRACE_S:g} s for every worker to checkpoint and exit")
    if not workers.wait_until(time.monotonic() + GRACE_S):
        if workers.escalated:
            return _wait(workers)
        workers.log(f"still running after {GRACE_S:g} s: {workers.running()}; SIGTERM "
                    "again (exits at once, no checkpoint)")
        _stop(workers, KILL_AFTER_S)
    late = [f"worker {i} ({_status(p.poll())})" for i, p in enumerate(workers.procs)
            if _status(p.poll()) != PREEMPTED]
    workers.log(f"preempted: {workers.statuses()}" + (
        f"; {', '.join(late)} did not exit {PREEMPTED} by itself: `-r` resumes from "
        "the latest complete checkpoint, which may be older" if late else ""))
    return PREEMPTED


def _stop(workers, grace_s):
    """SIGTERM to the running workers, `grace_s` seconds, then SIGKILL."""
    for i in workers.running():
        workers.procs[i].terminate()
        workers.signalled.add(i)
    if not workers.wait_until(time.monotonic() + grace_s):
        if not workers.escalated:
            workers.log(f"still running after {grace_s:g} s: {workers.running()}; "
                        "SIGKILL")
    workers.kill()
    for p in workers.procs:
        p.wait()
