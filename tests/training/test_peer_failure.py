"""A lost peer is recognised by what the error says (issue 24): its class (or
the coordination service's report) AND the name of another task of the
cluster; anything else is an ordinary failure with its whole traceback."""

import json
from types import SimpleNamespace

import pytest
import tensorflow as tf

from klassterfork import exit_codes
from klassterfork.training import preemption

WORKERS = ["127.0.0.1:41233", "127.0.0.1:5123", "127.0.0.1:5999"]
PEER = "/job:worker/replica:0/task:1"
# What TF 2.21 raised on worker 0 when worker 1 was SIGKILLed mid-step
# (test_preemption's SIGKILL test, copied from its log).
REAL = ("Collective ops is aborted by: recvmsg:Connection reset by peer\n"
        "Additional GRPC error information from remote target "
        "/job:worker/replica:0/task:1 while calling "
        "/tensorflow.WorkerService/RecvBuf:\n"
        ':UNKNOWN:Error received from peer  {grpc_status:14, grpc_message:"recvmsg:'
        'Connection reset by peer"}\n'
        "The error could be from a previous operation. Restart your program to reset.")


def strategy(task_id=0):
    """A stand-in strategy: only its cluster resolver is read."""
    spec = tf.train.ClusterSpec({"worker": WORKERS})
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        spec, task_type="worker", task_id=task_id)
    return SimpleNamespace(cluster_resolver=resolver)


CASES = [  # (error class, message, lost workers as seen by worker 0)
    (tf.errors.UnavailableError, REAL, ["worker 1 (127.0.0.1:5123)"]),
    (tf.errors.DeadlineExceededError, "no reply from 127.0.0.1:5999 in 30 s",
     ["worker 2 (127.0.0.1:5999)"]),
    (tf.errors.AbortedError, f"{PEER} and /job:worker/task:2 gone",
     ["worker 1 (127.0.0.1:5123)", "worker 2 (127.0.0.1:5999)"]),
    # The coordination service's report counts whatever the class.
    (tf.errors.InternalError, "The following tasks are unhealthy (stopped sending "
     f"heartbeats):\n{PEER}\nThe tasks have crashed.", ["worker 1 (127.0.0.1:5123)"]),
    (tf.errors.UnknownError, f"Task {PEER} heartbeat timeout. This indicates that "
     "the remote task has failed", ["worker 1 (127.0.0.1:5123)"]),
]
ORDINARY = [  # names no peer, or is not an error a lost connection gives
    (tf.errors.InternalError, "Blas xGEMM launch failed: a.shape=[4,8]"),
    (tf.errors.UnknownError, f"JIT compilation failed on {PEER}"),  # a bug, peer named
    (tf.errors.FailedPreconditionError, f"Could not find variable dense/kernel {PEER}"),
    (tf.errors.CancelledError, "Cancelled: RecvBuf"),
    # Unavailable naming no other task: not a peer of this run (a tf.data
    # service, a file system): an ordinary failure (documented in preemption.py).
    (tf.errors.UnavailableError, "failed to connect to all addresses; last error: "
     "ipv4:10.0.0.7:5050: Connection refused"),
    (tf.errors.UnavailableError, "/job:worker/replica:0/task:0 stopped"),  # own task
    (tf.errors.UnavailableError, "/job:worker/replica:0/task:10 gone"),  # not task:1
    (tf.errors.UnavailableError, "127.0.0.1:51234 gone"),  # not 127.0.0.1:5123
]


@pytest.mark.parametrize("cls, message, lost", CASES)
def test_a_named_peer_is_lost(cls, message, lost):
    err = cls(None, None, message)
    assert preemption.is_peer_failure(err, strategy())
    assert preemption.lost_workers(err, strategy()) == lost


@pytest.mark.parametrize("cls, message", ORDINARY)
def test_anything_else_is_an_ordinary_failure(cls, message):
    assert not preemption.is_peer_failure(cls(None, None, message), strategy())


def test_the_own_task_is_never_lost_seen_from_another():
    err = tf.errors.UnavailableError(None, None, REAL)  # names task 1
    assert not preemption.is_peer_failure(err, strategy(task_id=1))
    assert preemption.lost_workers(err, strategy(task_id=2)) == [
        "worker 1 (127.0.0.1:5123)"]


def test_without_a_strategy_the_cluster_comes_from_tf_config(monkeypatch):
    err = tf.errors.UnavailableError(None, None, REAL)
    config = {"cluster": {"worker": WORKERS}, "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert not preemption.is_peer_failure(err)  # task 1 is this process
    config["task"]["index"] = 0
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert preemption.is_peer_failure(err)
    assert preemption.lost_workers(err) == ["worker 1 (127.0.0.1:5123)"]
    monkeypatch.delenv("TF_CONFIG")  # no cluster at all: any named task
    assert preemption.lost_workers(err) == ["worker 1"]
    gone = tf.errors.UnavailableError(None, None, "gone")
    assert not preemption.is_peer_failure(gone)


def test_worker_lost_message_keeps_the_cause_and_files_the_whole_error(tmp_path):
    long_line = "recvmsg:Connection reset by peer " + "x" * 400  # over 300 chars
    message = REAL.replace("recvmsg:Connection reset by peer", long_line, 1)
    err = tf.errors.UnavailableError(None, None, message)
    ckpt = str(tmp_path / "checkpoints" / "ckpt-8")
    text = preemption.worker_lost_message(err, strategy(), ckpt, 0,
                                          dump_dir=str(tmp_path))
    path = tmp_path / "worker_lost.worker0.txt"
    assert "\n" not in text
    assert text == (
        "worker 0: lost contact with worker 1 (127.0.0.1:5123); training cannot go on "
        f"with fewer workers; the last checkpoint is step 8 of stage 0 ({ckpt}). "
        f"(TensorFlow: UnavailableError: Collective ops is aborted by: {long_line}; "
        f"the whole error: {path}) Restart every worker with -r")
    assert path.read_text() == f"UnavailableError: {message}\n"
    text = preemption.worker_lost_message(err, strategy(), None, 1)
    assert "stage 1 has no checkpoint yet" in text
    assert "the whole error was not kept)" in text


def nested_failure():
    def inner():
        message = "line one\n" + "y" * 500 + "\nline three"
        raise tf.errors.InternalError(None, None, message)
    inner()


def test_failure_report_is_the_whole_traceback():
    with pytest.raises(tf.errors.InternalError) as info:
        nested_failure()
    report = preemption.failure_report(info.value)
    head, rest = report.split("\n", 1)
    assert head.startswith("kf-train: failed with InternalError "
                           f"(exit {exit_codes.FAILED}: neither a preemption")
    assert rest.startswith("Traceback (most recent call last):")
    assert "in nested_failure" in rest and "in inner" in rest  # every frame
    assert rest.rstrip().endswith("line one\n" + "y" * 500 + "\nline three")
