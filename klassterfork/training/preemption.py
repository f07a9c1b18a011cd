"""Stopping a run cleanly on SIGTERM / SIGINT, on every worker at one step.

A scheduler sends SIGTERM before it preempts a machine; a user presses
Ctrl-C (SIGINT). Either one asks the run to finish the step in progress,
write a checkpoint, flush its logs and exit with `exit_codes.PREEMPTED`; a
second signal exits at once (`exit_codes.SIGNAL_BASE + signum`).

Agreement across workers. Under MultiWorkerMirroredStrategy the signal may
reach one worker only, and every worker must save the same step (a checkpoint
save is a collective). The train step therefore carries each worker's "stop
requested" flag as one more value of the SUM all-reduce that already returns
the step's loss: every worker reads the same reduced value after the same
step, so they all stop after that step, with no extra thread or round trip.

Why not `tf.distribute.experimental.PreemptionCheckpointHandler` (TF 2.21,
`distribute/failure_handling/failure_handling.py`), which does this
alignment through the coordination service: (1) it is a no-op on GCE CPU
VMs ("does not support usage with TPU or CPU device on GCP") and installs
only a SIGTERM handler (no SIGINT) or a watcher polled once a second;
(2) its step agreement uses cluster-wide keys that are written once per
coordination service, so the second stage of a multi-stage config in the same
processes would see the first stage's "stop watching" value and no longer
align; (3) it restores the latest checkpoint itself when constructed and adds
its own run counter to our checkpoint, which we resume from the step variable
and the data position; (4) it saves at the start of the *next* `run` call, so
a signal during the last step of an epoch waits for the whole evaluation.
The all-reduced flag gives the same guarantee (all workers stop after the
same step) and the checkpoint goes through our own `CheckpointManager`.

The same flag carries the bad-record budget (`hooks.BadRecordHook`): a
worker over it adds `OVER_BUDGET_VOTE`, so every worker learns after the
same step that one is over and stops there with exit 2 (the budget counts
every worker's records; without the vote one worker would stop alone and
leave its peers waiting in the next collective).
"""

import json
import os
import re
import signal
import sys
import threading
import traceback

from klassterfork import exit_codes, files

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The all-reduced stop flag is a sum: one per worker signalled plus
# OVER_BUDGET_VOTE per worker over the bad-record budget (times the replica
# count: the train step all-reduces it, then sums the replicas' copies).
# float32 keeps the signal part while the sum stays below 2**24.
OVER_BUDGET_VOTE = 4096.0


def stop_votes(logs):
    """(signal votes, bad-record budget votes) of a step's flag: each > 0
    when any worker voted (each is scaled by the replica count)."""
    total = float(logs.get("stop", 0.0))
    return total % OVER_BUDGET_VOTE, total // OVER_BUDGET_VOTE


class SignalWatcher:
    """Records the first SIGTERM / SIGINT; a second one exits at once.

    Used as a context manager around training: the previous handlers come
    back on exit. Outside the main thread (where Python cannot install
    handlers) it watches nothing.

    Attributes:
        received: int or None. The first signal's number.
    """

    def __init__(self, stream=None):
        self.received = None
        self._previous = {}
        self._stream = stream

    @property
    def name(self):
        return signal.Signals(self.received).name if self.received else None

    def __enter__(self):
        return self.install()

    def install(self):
        """(Re)installs the handlers. TensorFlow's coordination service agent
        (MultiWorkerMirroredStrategy) sets its own C-level SIGTERM handler
        when the strategy is created, which hides ours: call this again
        after creating a strategy."""
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                previous = signal.signal(signum, self._handle)
                self._previous.setdefault(signum, previous)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        return False

    def _handle(self, signum, frame):
        del frame
        stream = self._stream or sys.stderr
        name = signal.Signals(signum).name
        if self.received is not None:
            stream.write(f"kf-train: second signal ({name}): exiting at once, "
                         "no checkpoint.\n")
            stream.flush()
            os._exit(exit_codes.SIGNAL_BASE + signum)
        self.received = signum
        stream.write(f"kf-train: {name} received: finishing the current step, then "
                     f"checkpointing and exiting ({name} again exits at once).\n")
        stream.flush()


class NoSignals:
    """Stands in for a `SignalWatcher` when the caller installs none."""

    received = None
    name = None

    def install(self):
        return self


# A lost peer is recognised by what the error says, not by its class alone:
# the class must be one a dead connection gives (or the message must be the
# coordination service's heartbeat / failed-task report), AND the message must
# name another task of the cluster (`/job:worker/replica:0/task:1` or its
# address). Anything else is an ordinary failure, exit 1 with its whole
# traceback, never requeued as "worker lost" (`exit_codes.WORKER_LOST`): an
# InternalError, UnknownError, FailedPrecondition or Cancelled (a bug or a bad
# input, even when a peer's name appears in it), and any error that names no
# other task, an Unavailable included (a tf.data service, a file system or a
# server that is not a worker of this run; a real lost peer is named: TF 2.21
# says "... from remote target /job:worker/replica:0/task:1 ...").
PEER_FAILURES = ("UnavailableError", "DeadlineExceededError", "AbortedError")
# What the coordination service says of a peer whatever the error's class
# (TF 2.21 coordination_service.cc: "... tasks are unhealthy (stopped sending
# heartbeats)", "Task /job:worker/replica:0/task:1 ... failed", "heartbeat
# timeout").
_COORDINATION = re.compile(
    r"heartbeat|tasks? (are|is) unhealthy|task\s+\S*/job:\S+.*\bfail", re.IGNORECASE)
_TASK = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)(?!\d)")


def is_peer_failure(err, strategy=None):
    """True when `err` says that another worker of the cluster is gone.

    Args:
        err: Exception, usually a `tf.errors.OpError`.
        strategy: a `tf.distribute` strategy with a `cluster_resolver`, or
            None. Without one the cluster is read from `TF_CONFIG`; with
            neither, any task the message names counts (this process cannot
            tell its own). Defaults to None.

    Returns:
        bool. The error's class is one of `PEER_FAILURES` (or its message
        is the coordination service's report of a failed task) and its
        message names a task other than this one (`lost_workers`).
    """
    kind = type(err).__name__ in PEER_FAILURES or bool(_COORDINATION.search(str(err)))
    return kind and bool(lost_workers(err, strategy))


def _cluster(strategy):
    """(own (job, index) or None, {job: {index: address}}) of this process,
    from `strategy.cluster_resolver`, else `TF_CONFIG`, else ({}, None)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None:
        spec = resolver.cluster_spec().as_dict()
        own = (resolver.task_type, resolver.task_id)
    else:
        try:
            config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        except ValueError:
            config = {}
        spec, task = config.get("cluster") or {}, config.get("task") or {}
        own = (task.get("type"), task.get("index")) if task else None
    cluster = {job: dict(a.items() if isinstance(a, dict) else enumerate(a))
               for job, a in spec.items()}
    return own, cluster


def lost_workers(err, strategy=None):
    """The other tasks `err`'s message names, as "job index (address)", or [].

    A task is named by `/job:J/replica:0/task:I` (or `/job:J/task:I`) or by
    its address; `task:1` does not match `task:10`, nor `host:123` match
    `host:1234`. `strategy`: as in `is_peer_failure`.
    """
    own, cluster = _cluster(strategy)
    message = str(err)
    named = {(job, int(index)) for job, index in _TASK.findall(message)}
    if not cluster:
        return [f"{job} {index}" for job, index in sorted(named)]
    found = []
    for job, addresses in cluster.items():
        for index, address in addresses.items():
            by_address = re.search(re.escape(address) + r"(?!\d)", message)
            if ((job, int(index)) in named or by_address) and (job, index) != own:
                found.append(f"{job} {index} ({address})")
    return found


def worker_lost_message(err, strategy, last_checkpoint, stage_index, *, dump_dir=None):
    """One paragraph for a multi-worker run whose peer died.

    The paragraph names the lost workers, the checkpoint `-r` resumes from
    and the one line of the TensorFlow error that says what went wrong, in
    full. The whole error (the gRPC dump, many lines) goes to a file in the
    stage folder, which the paragraph names, so that N workers' logs keep
    one readable paragraph each.

    Args:
        err: the `tf.errors.OpError`.
        strategy: the run's strategy (its `cluster_resolver` names this task).
        last_checkpoint: str or None. `tf.train.latest_checkpoint` of the stage.
        stage_index: int.
        dump_dir: str or None. The stage folder: the whole error is written
            there (atomically) to `worker_lost.<task type><task id>.txt`.
            None writes no file and the paragraph says so. Defaults to None.

    Returns:
        str. One line.
    """
    task_type, task_id = (strategy.cluster_resolver.task_type,
                          strategy.cluster_resolver.task_id)
    lost = lost_workers(err, strategy)
    who = ", ".join(lost) if lost else "a peer worker (the error names none)"
    first = _cause(str(err)) or type(err).__name__
    step = last_checkpoint.rsplit("-", 1)[-1] if last_checkpoint else None
    where = (f"the last checkpoint is step {step} of stage {stage_index} "
             f"({last_checkpoint})" if step else
             f"stage {stage_index} has no checkpoint yet (it restarts from step 0)")
    if dump_dir is None:
        whole = "the whole error was not kept"
    else:
        path = os.path.join(dump_dir, f"worker_lost.{task_type}{task_id}.txt")
        files.write_text_atomic(path, f"{type(err).__name__}: {err}\n")
        whole = f"the whole error: {path}"
    return (f"{task_type} {task_id}: lost contact with {who}; training cannot go on "
            f"with fewer workers; {where}. (TensorFlow: {type(err).__name__}: "
            f"{first}; {whole}) Restart every worker with -r")


def failure_report(err):
    """What to print for an error that is not a lost peer: its whole traceback.

    Nothing is cut: the exception chain, every frame and the whole TensorFlow
    message (for an `OpError`, the op and the gRPC details a bug report needs).
    The caller exits with `exit_codes.FAILED` (a scheduler does not requeue).

    Args:
        err: Exception, as caught (its `__traceback__` is used).

    Returns:
        str. A "kf-train: failed with <error> (exit 1 ...)" line, then the
            traceback, as Python prints it.
    """
    head = (f"kf-train: failed with {type(err).__name__} (exit {exit_codes.FAILED}: "
            "neither a preemption nor a lost peer worker; fix the cause, then run "
            "again). The whole traceback:")
    lines = traceback.format_exception(type(err), err, err.__traceback__)
    return head + "\n" + "".join(lines)


_CAUSE_WORDS = ("reset by peer", "refused", "socket closed", "heartbeat", "unavailable",
                "failed to connect", "deadline", "task", "peer")


def _cause(message):
    """The line of a TensorFlow error message that says what went wrong."""
    lines = [x.strip() for x in message.splitlines() if x.strip()]
    for word in _CAUSE_WORDS:
        for line in lines:
            if word in line.lower() and not line.startswith(("[[", "File ")):
                return line
    return lines[0] if lines else ""
