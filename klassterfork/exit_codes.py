"""Exit statuses of `kf-train`: the one place they are defined.

A scheduler or a wrapper script decides from the status alone what to do
next: resubmit with `-r` (PREEMPTED, WORKER_LOST), fix the config or the data
(CONFIG_ERROR, which also covers more bad records than
`datasets.train.max_bad_records` allows), lower the learning rate (DIVERGED). The README's
"Long runs" section and docs/long_runs.md list the same table; a test checks
that every constant here appears there.

PREEMPTED is 75, `EX_TEMPFAIL` of sysexits.h ("a temporary failure; the user
is invited to retry"), the status batch systems already treat as requeue.
A second signal kills the run at once with the shell's convention for a
death by signal, 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
"""

import signal

OK = 0  # every stage finished (or stopped at train_loop.stop_after_steps)
FAILED = 1  # anything else: e.g. `-e` found no checkpoint to evaluate
CONFIG_ERROR = 2  # the config or the data does not match what the run needs
# (unknown names, bad values, data checks before step 1, bad-record budget)
DIVERGED = 3  # loss NaN/Inf; the last good checkpoint is kept
PREEMPTED = 75  # SIGTERM/SIGINT: step finished, checkpoint saved; resume with -r
WORKER_LOST = 76  # a peer worker of a multi-worker run died; resume all with -r
SIGNAL_BASE = 128  # a second signal: exit at once with 128 + signum

MEANINGS = {
    OK: "finished",
    FAILED: "failed (see the message)",
    CONFIG_ERROR: "config or data error (incl. the bad-record budget): fix the named "
                  "key or file, then run again",
    DIVERGED: "training diverged (loss NaN/Inf): lower the learning rate, resume with -r",
    PREEMPTED: "stopped by SIGTERM/SIGINT after a checkpoint: resume with -r",
    WORKER_LOST: "a peer worker was lost: restart every worker with -r",
    SIGNAL_BASE + signal.SIGINT: "second SIGINT: killed at once, no checkpoint",
    SIGNAL_BASE + signal.SIGTERM: "second SIGTERM: killed at once, no checkpoint",
}
