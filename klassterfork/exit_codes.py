"""Exit statuses of `kf-train`: the one place they are defined.

A scheduler or a wrapper script decides from the status alone what to do
next. `kf-train --workers N` (training/launcher.py) exits with the same
statuses for the whole job.

| status | name | requeue? | what to do next |
|---|---|---|---|
| 0 | OK | no | nothing: finished |
| 1 | FAILED | no | read the whole traceback: a bug or a bad input |
| 2 | CONFIG_ERROR | no | fix the named key or file (or the bad records) |
| 3 | DIVERGED | no | lower the learning rate, then resume with -r |
| 75 | PREEMPTED | yes | resume with -r: the last step's checkpoint is saved |
| 75 | OUT_OF_SPACE | yes | free space, then resume with -r (previous checkpoint intact) |
| 76 | WORKER_LOST | yes | a peer or the data service is gone: all workers -r |
| 130, 143 | SIGNAL_BASE + signum | if a scheduler sent them | resume with -r |

OUT_OF_SPACE is the same 75 with its own one-paragraph message (the path,
the free space, what was removed; klassterfork/out_of_space.py): a full
disk or quota is temporary too, and nothing was corrupted.

PREEMPTED is 75, `EX_TEMPFAIL` of sysexits.h ("a temporary failure; the user
is invited to retry"), the status batch systems already treat as requeue. A
multi-worker job is preempted as a whole: when one worker exits 75 the
launcher lets the others checkpoint and exits 75 too. WORKER_LOST is given
only when the error names another worker of the cluster and is of a kind a
lost connection gives (training/preemption.py `is_peer_failure`), or when the
tf.data service stops answering (data/runtime/service.py); any other error is
FAILED, so a deterministic bug is not requeued forever. A second signal kills
the run at once with the shell's convention for a death by signal, 128 + the
signal number (130 for SIGINT, 143 for SIGTERM): requeue-able, and nothing
after the previous checkpoint is kept.

The README's "Long runs" section and docs/long_runs.md list the same table;
a test checks that every constant here appears there.
"""

import signal

OK = 0  # every stage finished (or stopped at train_loop.stop_after_steps)
FAILED = 1  # anything else: an error that is not a lost peer, `-e` without a checkpoint
CONFIG_ERROR = 2  # the config or the data does not match what the run needs
# (unknown names, bad values, data checks before step 1, bad-record budget)
DIVERGED = 3  # loss NaN/Inf; the last good checkpoint is kept
PREEMPTED = 75  # SIGTERM/SIGINT: step finished, checkpoint saved; resume with -r
OUT_OF_SPACE = 75  # ENOSPC/EDQUOT while writing: temporaries removed; free space, -r
WORKER_LOST = 76  # a peer worker (or the tf.data service) was lost; resume all with -r
SIGNAL_BASE = 128  # a second signal: exit at once with 128 + signum

MEANINGS = {
    OK: "finished",
    FAILED: "failed (see the whole traceback): do not requeue, fix the cause",
    CONFIG_ERROR: "config or data error (incl. the bad-record budget): fix the named "
                  "key or file, then run again",
    DIVERGED: "training diverged (loss NaN/Inf): lower the learning rate, resume "
              "with -r",
    PREEMPTED: "stopped by SIGTERM/SIGINT after a checkpoint, or out of space "
               "(OUT_OF_SPACE, the previous checkpoint intact): resume with -r",
    WORKER_LOST: "a peer worker (or the tf.data service) was lost: restart every "
                 "worker with -r",
    SIGNAL_BASE + signal.SIGINT: "second SIGINT: killed at once, no checkpoint",
    SIGNAL_BASE + signal.SIGTERM: "second SIGTERM: killed at once, no checkpoint",
}
