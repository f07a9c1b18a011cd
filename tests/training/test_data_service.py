"""tf.data service (issue 12): `kf-data-service` processes on 127.0.0.1, the
trainer reading through them, the per-pass guarantee counted by video id,
what resume means, and the faults (worker SIGKILL, dispatcher restart,
unreachable address).

Every server here is a real `kf-data-service` process (`service.LocalService`),
so the batches travel over gRPC as they would between machines.
"""

import collections
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.cli.train import main as train_main
from klassterfork.config.loader import ConfigError, load_text
from klassterfork.data import pipeline, service
from klassterfork.training import builders
from klassterfork.training.service_input import trainer_input_fn
from tests.training.test_input_sharding import NUM_VIDEOS, write_data
from tests.training.tiny_data import tiny_config, write_split

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = 3


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    """A dispatcher (fault-tolerant, with a work dir) and 2 workers."""
    root = tmp_path_factory.mktemp("service")
    with service.LocalService(2, root / "logs", work_dir=root / "journal") as running:
        yield running


@pytest.fixture(scope="module")
def id_data(tmp_path_factory):
    """24 videos, 4 shards, label i = video i."""
    d = str(tmp_path_factory.mktemp("ids"))
    write_data(d)
    return d


@pytest.fixture(scope="module")
def motion_data(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("motion"))
    write_split(d, "train", 48, seed=0, num_shards=4)
    write_split(d, "validation", 8, seed=1)
    return d


def id_input_fn(data_dir, address, job, *, start_step=0, num_passes=3):
    """The service input over `id_data`; labels carry 1000 * pass + video id."""
    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, "train-*")))
    pass_of = {service.pass_seed(SEED, start_step, p): p for p in range(num_passes)}

    def make_dataset(seed, placement):
        ds = pipeline.train_dataset(files, clip_len=2, crop_size=16, seed=seed,
                                    shuffle_buffer=8, standardize="none", **placement)
        offset = 1000 * pass_of[seed]
        return ds.map(lambda x, y: (x, y + offset))

    config = {**service.SERVICE_DEFAULTS, "address": address, "timeout_s": 60}
    lines = []
    fn = service.service_input_fn(
        make_dataset, config, global_batch=4, seed=SEED, start_step=start_step,
        job_name=job, num_passes=num_passes, log=lines.append, watchdog=False)
    return fn, lines


def context(pipes, pipe):
    return tf.distribute.InputContext(num_input_pipelines=pipes, input_pipeline_id=pipe,
                                      num_replicas_in_sync=pipes)


def read_until_pass(iterators, last_pass):
    """Reads the consumers in turn until each has given a batch of `last_pass`.

    Returns per consumer the list of (pass, id, clip) it received.
    """
    got = [[] for _ in iterators]
    done = [False] * len(iterators)
    while not all(done):
        for k, it in enumerate(iterators):
            if done[k]:
                continue
            clips, labels = next(it)
            for clip, label in zip(clips.numpy(), labels.numpy()):
                got[k].append((int(label) // 1000, int(label) % 1000, clip))
            done[k] = any(p >= last_pass for p, _, _ in got[k])
    return got


def test_cli_ready_lines_and_sigterm(tmp_path):
    with service.LocalService(1, tmp_path, work_dir=tmp_path / "journal") as running:
        procs = [running.dispatcher, *running.workers]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in procs]
    assert codes == [0, 0]
    dispatcher = (tmp_path / "dispatcher.log").read_text()
    worker = (tmp_path / "worker0.log").read_text()
    assert f"ready on grpc://localhost:{running.port} (fault-tolerant, journal" in dispatcher
    assert "workers: 0 -> 1" in dispatcher
    assert "kf-data-service worker: ready on 127.0.0.1:" in worker
    assert "stopped on SIGTERM" in dispatcher and "stopped on SIGTERM" in worker
    assert os.listdir(tmp_path / "journal")  # the fault-tolerant journal


def test_help_is_fast_and_needs_no_tensorflow():
    code = ("import sys; from klassterfork.cli import data_service\n"
            "try: data_service.parse_args(['--help'])\n"
            "except SystemExit: pass\n"
            "assert 'tensorflow' not in sys.modules, 'TensorFlow imported by --help'")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "dispatcher" in out.stdout and "worker" in out.stdout


def test_two_consumers_share_each_pass_every_example_once(svc, id_data):
    # Two input pipelines = two consumers of one job (two MultiWorkerMirrored
    # workers): disjoint batches, and every video exactly once per pass.
    fn, _ = id_input_fn(id_data, svc.address, "two-consumers")
    its = [iter(fn(context(2, k))) for k in range(2)]
    got = read_until_pass(its, 1)
    assert all(len(g) > 0 for g in got)
    for p in (0,):
        ids = [i for g in got for q, i, _ in g if q == p]
        assert sorted(ids) == list(range(NUM_VIDEOS)), collections.Counter(ids)
    # Batches are per replica (global 4 / 2 pipelines): 2 clips, a short last
    # batch of a worker's share kept rather than dropped.
    first = next(its[0])
    assert first[0].shape[0] <= 2 and first[0].dtype == tf.uint8


def test_resume_is_a_new_complete_pass_in_a_new_order(svc, id_data):
    # What docs/clusters.md and the log line say: resume is not exact; the
    # resumed run starts a new pass (its own job) in a new order, in which
    # every example still comes exactly once.
    fresh, lines = id_input_fn(id_data, svc.address, "resume", start_step=0)
    resumed, resumed_lines = id_input_fn(id_data, svc.address, "resume", start_step=3)
    assert "resume is not exact" in lines[0] and "job resume-step3" in resumed_lines[0]
    a = read_until_pass([iter(fresh(context(1, 0)))], 1)[0]
    b = read_until_pass([iter(resumed(context(1, 0)))], 1)[0]
    for got in (a, b):
        assert sorted(i for p, i, _ in got if p == 0) == list(range(NUM_VIDEOS))
    # Not exact: the resumed pass is not the rest of the first run's stream.
    # The crops come from the new seed, so the clips of a video differ.
    clip_a = {i: c for p, i, c in a if p == 0}
    clip_b = {i: c for p, i, c in b if p == 0}
    differ = sum(not np.array_equal(clip_a[i], clip_b[i]) for i in range(NUM_VIDEOS))
    assert differ > NUM_VIDEOS // 2
    # And a pass differs from the next one of the same run (new seed per pass).
    clip_a1 = {i: c for p, i, c in a if p == 1}
    assert sum(not np.array_equal(clip_a[i], clip_a1[i]) for i in clip_a1) > len(clip_a1) // 2


def service_config(data_dir, exp, address, **loop):
    config = json.loads(tiny_config(data_dir, exp, **loop))
    config["datasets"]["train"]["service"] = {"address": address, "timeout_s": 30}
    return config


def final_losses(exp):
    with open(os.path.join(exp, "stage0", "log.csv")) as f:
        rows = f.read().splitlines()[1:]
    return [float(r.split(",")[2]) for r in rows]


def test_training_through_the_service_loss_falls(svc, motion_data, tmp_path, capsys):
    exp = tmp_path / "exp"
    path = tmp_path / "c.hjson"
    # 48 videos x 5 epochs = 240 clips through 2 workers.
    path.write_text(json.dumps(service_config(motion_data, exp, svc.address, epochs=5,
                                              plot=False), indent=1))
    assert train_main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "data service: " + svc.address in out and "resume is not exact" in out
    losses = final_losses(exp)
    assert len(losses) == 5 and losses[-1] < 0.85 * losses[0], losses


def test_config_errors_are_located(motion_data, tmp_path):
    def check(service_block, match, **extra):
        config = json.loads(tiny_config(motion_data, tmp_path / "e"))
        config["datasets"]["train"].update(service=service_block, **extra)
        stages, source = load_text(json.dumps(config, indent=1))
        block = stages[0]["datasets"]["train"]
        info = builders.dataset_info(block, source, "datasets.train")
        with pytest.raises(ConfigError, match=match):
            trainer_input_fn(block, info, source, "datasets.train", global_batch=4,
                             seed=1, start_step=0, total_steps=10, run_dir=str(tmp_path))

    check({"address": "grpc://127.0.0.1"}, r"service\.address: must be")
    check({"address": "grpc://127.0.0.1:1", "mode": "parallel_epochs"},
          r"service\.mode: .*same clips")
    check({"address": "grpc://127.0.0.1:1", "adress": 1}, r"service\.adress: unknown key")
    check({"address": "grpc://127.0.0.1:1"}, r"train\.repeat: is set by the data service",
          repeat=False)
    config = json.loads(tiny_config(motion_data, tmp_path / "e"))
    config["datasets"]["val"]["service"] = {"address": "grpc://127.0.0.1:1"}
    stages, source = load_text(json.dumps(config, indent=1))
    with pytest.raises(ConfigError, match=r"datasets\.val\.service: only datasets\.train"):
        builders.validate_stage(stages[0], source)


def test_unreachable_address_is_a_located_error_within_the_timeout(motion_data, tmp_path,
                                                                   capsys):
    port = service.free_port()  # nothing listens there
    config = service_config(motion_data, tmp_path / "exp", f"grpc://127.0.0.1:{port}")
    config["datasets"]["train"]["service"]["timeout_s"] = 2
    path = tmp_path / "c.hjson"
    path.write_text(json.dumps(config, indent=1))
    started = time.monotonic()
    assert train_main([str(path)]) == 2
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert f"datasets.train.service.address: no tf.data service dispatcher answers at " \
        f"grpc://127.0.0.1:{port} after 2 s" in err
    assert f"c.hjson:" in err and "Traceback" not in err
    assert elapsed < 60  # 2 s of retries plus building the stage, not a hang
