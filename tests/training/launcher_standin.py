"""A stand-in for a kf-train worker, for the launcher's tests (not a test).

`python launcher_standin.py FOLDER PLAN ...`: worker `i` (from TF_CONFIG)
follows `PLAN[str(i)]` (JSON) and appends what happens to it to
`FOLDER/worker<i>.log`, one event a line:

- `ready pid=P pgid=G parent_pgid=L`, once its signal handlers are in;
- `signal SIGTERM` / `signal SIGINT` for every signal it receives;
- `checkpointed`, then `exit 75`: after its first signal it "checkpoints"
  for `checkpoint_s` seconds (default 0) and exits 75, as kf-train does;
- a second signal exits at once with 128 + signum (`exit 143`), as
  `preemption.SignalWatcher` does;
- with `"exit": N` it exits N as soon as it is ready (after `after_ready`'s
  worker is ready, when given), without waiting for a signal.
"""

import json
import os
import signal
import sys
import time

FOLDER, PLAN = sys.argv[1], json.loads(sys.argv[2])
INDEX = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
MINE = PLAN.get(str(INDEX), {})
received = []


def note(text):
    with open(os.path.join(FOLDER, f"worker{INDEX}.log"), "a") as f:
        f.write(text + "\n")


def handle(signum, _frame):
    received.append(signum)
    note(f"signal {signal.Signals(signum).name}")
    if len(received) > 1:
        note(f"exit {128 + signum}")
        os._exit(128 + signum)


def is_ready(index):
    path = os.path.join(FOLDER, f"worker{index}.log")
    return os.path.exists(path) and "ready" in open(path).read()


def main():
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)
    note(f"ready pid={os.getpid()} pgid={os.getpgid(0)} "
         f"parent_pgid={os.getpgid(os.getppid())}")
    if "exit" in MINE:
        while "after_ready" in MINE and not is_ready(MINE["after_ready"]):
            time.sleep(0.01)
        note(f"exit {MINE['exit']}")
        sys.exit(MINE["exit"])
    while not received:  # "training"
        time.sleep(0.01)
    time.sleep(MINE.get("checkpoint_s", 0))  # a second signal ends it here
    note("checkpointed")
    note("exit 75")
    sys.exit(75)


if __name__ == "__main__":
    main()
