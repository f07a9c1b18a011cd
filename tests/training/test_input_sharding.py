"""The trainer's input: one pipeline per worker (`train_input_fn`), per-replica
batches, exact resume in global steps, the `shard_policy` config key, and
steps per epoch with repeated views.

Video i carries label i, so a batch's labels say which videos it holds.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.config.loader import ConfigError, load_text
from klassterfork.data import pipeline, records
from klassterfork.training import builders
from klassterfork.training.trainer import Stage, train_input_fn
from tests.training.tiny_data import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_VIDEOS = 24


def write_data(directory, num_shards=4):
    """24 videos of 6 frames, video i in shard i % num_shards, label i."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    frames = [tf.io.encode_jpeg(rng.integers(0, 255, (24, 32, 3), np.uint8)).numpy()
              for _ in range(6)]
    for s in range(num_shards):
        path = os.path.join(directory, records.shard_name("train", s, num_shards))
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(s, NUM_VIDEOS, num_shards):
                writer.write(records.write(video_id=f"v{i}", frames=frames, labels=[i],
                                           fps=12.0, height=24, width=32))
    manifest = {"counts": {"written": NUM_VIDEOS},
                "label_names": [f"c{i}" for i in range(NUM_VIDEOS)]}
    with open(os.path.join(directory, "train.manifest.json"), "w") as f:
        json.dump(manifest, f)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sharding")
    write_data(str(d))
    return str(d)


def train_block(data_dir, **extra):
    return {"dir": data_dir, "split": "train", "clip_len": 2, "crop_size": 16,
            "batch_size": 4, "shuffle_buffer": 8, "standardize": "none", **extra}


def input_fn(data_dir, start_step=0, **extra):
    config = {"datasets": {"train": train_block(data_dir, **extra)},
              "model": {"R2Plus1D": {}}}
    stages, source = load_text(json.dumps(config, indent=1))
    block = stages[0]["datasets"]["train"]
    info = builders.dataset_info(block, source, "datasets.train")
    return train_input_fn(block, info, source, "datasets.train", global_batch=4,
                          seed=3, start_step=start_step)


def context(pipes, pipe, replicas):
    return tf.distribute.InputContext(num_input_pipelines=pipes, input_pipeline_id=pipe,
                                      num_replicas_in_sync=replicas)


def labels(ds, n):
    return [int(v) for _, y in ds.take(n) for v in y.numpy()]


def test_two_workers_per_replica_batches_disjoint_shards(data_dir):
    # 2 workers x 1 replica: per-replica batch 2, 4 shard files -> "file".
    seen = []
    for worker in range(2):
        ds = input_fn(data_dir)(context(2, worker, 2))
        assert ds.element_spec[0].shape[0] == 2
        got = labels(ds, 6)  # one epoch: 24 videos / global batch 4 = 6 steps
        assert len(set(got)) == 12
        assert {v % 4 for v in got} == {worker, worker + 2}  # its own files
        seen.append(set(got))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(NUM_VIDEOS))


def test_shard_policy_config_key_reaches_the_pipeline(data_dir):
    seen = []
    for worker in range(2):
        # Files read one after the other: "data" takes every 2nd record of
        # each file, where "file" would give this worker 2 whole files.
        fn = input_fn(data_dir, shard_policy="data", cycle_length=1)
        ds = fn(context(2, worker, 2))
        got = set(labels(ds, 6))
        assert len(got) == 12
        assert {v % 4 for v in got} == {0, 1, 2, 3}  # records of every file
        seen.append(got)
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(NUM_VIDEOS))
    with pytest.raises(ConfigError, match=r"datasets\.train.*shard_policy"):
        input_fn(data_dir, shard_policy="by_file")(context(2, 0, 2))
    # The trainer places the pipeline; the config cannot.
    with pytest.raises(ConfigError, match=r"train\.input_pipeline_id: is set"):
        input_fn(data_dir, input_pipeline_id=1)(context(2, 0, 2))


@pytest.mark.parametrize("pipes, replicas", [(2, 2), (1, 2), (1, 1)])
def test_resume_in_global_steps_is_exact(data_dir, pipes, replicas):
    per_step = replicas // pipes  # batches each pipeline gives per global step
    for pipe in range(pipes):
        full = list(input_fn(data_dir)(context(pipes, pipe, replicas))
                    .take(5 * per_step).as_numpy_iterator())
        resumed = list(input_fn(data_dir, start_step=3)(context(pipes, pipe, replicas))
                       .take(2 * per_step).as_numpy_iterator())
        assert len(resumed) == len(full[3 * per_step:]) == 2 * per_step
        for (xf, yf), (xr, yr) in zip(full[3 * per_step:], resumed):
            np.testing.assert_array_equal(xf, xr)
            np.testing.assert_array_equal(yf, yr)


MIRRORED = r"""
import json, sys
import numpy as np
import tensorflow as tf
from klassterfork.training import strategy as strategies
strategies.split_cpu(2)
sys.path.insert(0, sys.argv[2])
from tests.training.test_input_sharding import input_fn
strategy = strategies.make_strategy("mirrored")
out = {"replicas": strategy.num_replicas_in_sync}
for start in (0, 2):
    it = iter(strategy.distribute_datasets_from_function(input_fn(sys.argv[1], start)))
    steps = []
    for _ in range(4 - start):
        clips, labels = next(it)
        parts = strategy.experimental_local_results(clips)
        steps.append({
            "shapes": [list(p.shape) for p in parts],
            "labels": [y.numpy().tolist()
                       for y in strategy.experimental_local_results(labels)],
            "sums": [int(np.asarray(p, np.int64).sum()) for p in parts],
        })
    out[start] = steps
single = input_fn(sys.argv[1])(tf.distribute.InputContext())
out["single"] = [{"labels": y.tolist(), "sums": [int(c[:2].astype(np.int64).sum()),
                                                 int(c[2:].astype(np.int64).sum())]}
                 for c, y in single.take(4).as_numpy_iterator()]
print("RESULT" + json.dumps(out))
"""


def test_mirrored_two_cpu_replicas_get_per_replica_batches(data_dir):
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED, data_dir, ROOT], cwd=ROOT, capture_output=True,
        text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][0]
    out = json.loads(line[len("RESULT"):])
    assert out["replicas"] == 2
    for step, single in zip(out["0"], out["single"]):
        assert step["shapes"] == [[2, 2, 16, 16, 3]] * 2  # global 4 -> 2 per replica
        # One pipeline, two replicas: the global batch is the one-device batch,
        # split in order (replica 0 the first half), clip for clip.
        assert sum(step["labels"], []) == single["labels"]
        assert step["sums"] == single["sums"]
    assert out["2"] == out["0"][2:]  # resumed at step 2


def test_steps_per_epoch_count_repeated_views(tmp_path, data_dir):
    config = json.loads(tiny_config(data_dir, tmp_path / "exp"))
    config["datasets"] = {"train": train_block(data_dir, repeated_views=2)}
    config["model"]["R2Plus1D"]["input_shape"] = [2, 16, 16, 3]
    stages, source = load_text(json.dumps(config, indent=1))
    stage = Stage(stages[0], source, experiment_dir=str(tmp_path / "exp"),
                  stage_index=0, strategy=tf.distribute.get_strategy())
    assert stage.steps_per_epoch == NUM_VIDEOS * 2 // 4  # 12: every video, 2 views
    # ...which is one pass of the views stream: 48 clips, each video twice.
    ds = pipeline.train_dataset(stage.train_info.files, clip_len=2, crop_size=16,
                                batch_size=4, repeated_views=2, repeat=False, seed=0)
    got = labels(ds, 100)
    assert len(got) == 4 * stage.steps_per_epoch
    assert sorted(got) == sorted(list(range(NUM_VIDEOS)) * 2)
