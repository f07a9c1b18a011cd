"""`kf-train` in a multi-worker run (TF_CONFIG set): an error that is neither a
preemption nor a lost peer exits 1 (`exit_codes.FAILED`, never requeued) with
the whole traceback on stderr (issue 24); without TF_CONFIG it propagates."""

import json
import os
import subprocess
import sys

from klassterfork import exit_codes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The CLI with the config loading, the allocator line and the experiment
# replaced: the experiment raises a deterministic error deep in a call chain.
CHILD = """
import sys
from klassterfork.cli import train
from klassterfork.config import loader
from klassterfork.data.runtime import allocator
loader.find_config = lambda name, runs: name
loader.load = lambda path, overrides: ([{}], path)
allocator.describe = lambda tuned: "allocator stand-in"
allocator.tune_for_records = lambda: None
def check_for_nan(step):
    raise FloatingPointError(f"loss is NaN at step {step} (stand-in NaN check)")
def run_experiment(stages, source, args, signals):
    check_for_nan(7)
train.run_experiment = run_experiment
sys.exit(train.main(["config.hjson"]))
"""


def run_child(tf_config):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_deterministic_error_on_a_worker_exits_1_with_the_whole_traceback():
    tf_config = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                 "task": {"type": "worker", "index": 1}}
    proc = run_child(tf_config)
    assert proc.returncode == exit_codes.FAILED, proc.stderr
    err = proc.stderr
    assert "kf-train: failed with FloatingPointError (exit 1" in err, err
    # The whole chain of frames, down to the function that raised.
    assert "Traceback (most recent call last):" in err, err
    assert "in run_experiment" in err and "in check_for_nan" in err, err
    assert err.rstrip().endswith(
        "FloatingPointError: loss is NaN at step 7 (stand-in NaN check)"), err


def test_without_tf_config_the_error_propagates():
    proc = run_child(None)
    assert proc.returncode == 1, proc.stderr
    assert "kf-train: failed with" not in proc.stderr, proc.stderr
    assert "FloatingPointError: loss is NaN at step 7" in proc.stderr, proc.stderr
