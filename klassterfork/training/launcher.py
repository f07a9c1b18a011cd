"""`kf-train CONFIG --workers N`: N MultiWorkerMirrored processes on one machine.

Each process is `python -m klassterfork.cli.train` with the same arguments,
`train_loop.strategy=multi_worker`, `train_loop.cluster=tf_config` and its
own `TF_CONFIG` (worker i of N, free ports on 127.0.0.1). Output lines are
prefixed `[worker i]`. SIGTERM / SIGINT are forwarded to every worker (the
trainer stops them at the same step). The launcher exits with the first
failing worker's status (128 + signal for a killed one) after stopping the
others, or 0 when all succeed.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

GRACE_S = 30.0  # after the first failure, how long the others get to stop


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


def launch(argv, num_workers, *, log=None):
    """Runs `num_workers` trainer processes; returns the exit status.

    Args:
        argv: list of str. kf-train's arguments (`--workers` is removed).
        num_workers: int >= 1.
        log: callable(str) or None. Defaults to printing to stderr.
    """
    log = log or (lambda line: print(f"kf-train: {line}", file=sys.stderr, flush=True))
    worker_argv = strip_workers_flag(argv) + [
        "--set", "train_loop.strategy=multi_worker",
        "--set", "train_loop.cluster=tf_config"]
    configs = tf_configs(num_workers)
    addresses = json.loads(configs[0])["cluster"]["worker"]
    log(f"{num_workers} workers on 127.0.0.1 ({addresses}), each with "
        "train_loop.strategy=multi_worker, train_loop.cluster=tf_config")
    procs, threads = [], []
    for i, config in enumerate(configs):
        env = dict(os.environ, TF_CONFIG=config)
        proc = subprocess.Popen(
            [sys.executable, "-m", "klassterfork.cli.train", *worker_argv], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        thread = threading.Thread(target=_prefix, args=(proc.stdout, f"[worker {i}] "),
                                  daemon=True)
        thread.start()
        procs.append(proc)
        threads.append(thread)

    def forward(signum, _frame):
        log(f"forwarding {signal.Signals(signum).name} to {num_workers} workers")
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = _wait(procs, log)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for t in threads:
            t.join(timeout=5)
    return status


def _prefix(stream, prefix):
    for line in stream:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


def _status(code):
    return 128 - code if code < 0 else code  # killed by signal s: 128 + s


def _wait(procs, log):
    while True:
        codes = [p.poll() for p in procs]
        failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            index, code = failed[0]
            log(f"worker {index} failed with status {_status(code)}; "
                "stopping the others")
            _stop(procs)
            return _status(code)
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.2)


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
