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
"""

import os
import signal
import sys
import threading

from klassterfork import exit_codes

SIGNALS = (signal.SIGTERM, signal.SIGINT)


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


# The errors a collective op or the coordination service raises when a peer
# process is gone (connection refused or reset, heartbeat timeout, a peer's
# error propagated to the cluster).
PEER_FAILURES = (
    "UnavailableError", "AbortedError", "CancelledError", "DeadlineExceededError",
    "InternalError", "UnknownError", "FailedPreconditionError",
)


def is_peer_failure(err):
    """True when `err` (a `tf.errors.OpError`) is of a kind a lost peer causes."""
    return type(err).__name__ in PEER_FAILURES


def lost_workers(err, strategy):
    """The task ids of other workers that `err`'s message names, or []."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return []
    own = (resolver.task_type, resolver.task_id)
    message = str(err)
    found = []
    for job, addresses in resolver.cluster_spec().as_dict().items():
        items = addresses.items() if isinstance(addresses, dict) else enumerate(addresses)
        for index, address in items:
            named = (f"/job:{job}/replica:0/task:{index}" in message
                     or f"/job:{job}/task:{index}" in message or address in message)
            if named and (job, index) != own:
                found.append(f"{job} {index} ({address})")
    return found


def worker_lost_message(err, strategy, last_checkpoint, stage_index):
    """One paragraph for a multi-worker run whose peer died."""
    task_type, task_id = (strategy.cluster_resolver.task_type,
                          strategy.cluster_resolver.task_id)
    lost = lost_workers(err, strategy)
    who = ", ".join(lost) if lost else "a peer worker (the error names none)"
    first = _cause(str(err)) or type(err).__name__
    step = last_checkpoint.rsplit("-", 1)[-1] if last_checkpoint else None
    where = (f"the last checkpoint is step {step} of stage {stage_index} ({last_checkpoint})"
             if step else f"stage {stage_index} has no checkpoint yet (it restarts from step 0)")
    return (f"{task_type} {task_id}: lost contact with {who}; training cannot go on "
            f"with fewer workers; {where}. (TensorFlow: {type(err).__name__}: "
            f"{first[:300]}) Restart every worker with -r")


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
