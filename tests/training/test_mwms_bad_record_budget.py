"""The bad-record budget under MultiWorkerMirrored is decided together (issue
24): a worker over it votes through the all-reduced stop flag, every worker
stops after the same step with the same paragraph and exits 2 by itself, and
the launcher reports each worker's own status instead of stopping them.

Default run: the hooks of two "workers" (threads whose fake step sums their
stop flags, as the all-reduce does) and the launcher with stand-in workers.
Slow: `kf-train --workers 2` on 127.0.0.1 with corrupt records in one
worker's shard only."""

import json
import os
import re
import subprocess
import sys
import threading

import pytest

from klassterfork import exit_codes
from klassterfork.config.loader import ConfigError, Source
from klassterfork.data.reading.bad_records import BadRecordLog
from klassterfork.training import hooks, launcher
from klassterfork.training.loop import TrainLoop
from tests.training.test_launcher_signals import events, run_in_process

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = Source("c.hjson", "{\n datasets: {train: {max_bad_records: 1}}\n}\n")


def kf_train_two_workers(tmp_path, config):
    """`kf-train CONFIG --workers 2` on 127.0.0.1: (process, stdout + stderr)."""
    cfg = tmp_path / "c.hjson"
    cfg.write_text(json.dumps(config))
    proc = subprocess.run(
        [sys.executable, "-m", "klassterfork.cli.train", str(cfg), "--workers", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return proc, proc.stdout + proc.stderr


def entry(record):
    return {"shard": "train-00000-of-00002.tfrecord", "record": record,
            "video_id": f"v{record}", "error": "Unknown image file format", "epoch": 0}


def two_workers(path, bad_at_step):
    """Two loops in lockstep whose step sums both workers' stop flags (the
    all-reduce); worker 0's pipeline "drops" three records during step
    `bad_at_step` and goes over the budget of 1. Returns per worker
    (the error raised or None, the step it stopped at, its log lines)."""
    logs = [BadRecordLog(path), BadRecordLog(path)]
    for log in logs:
        log.register(0, lambda first, n: [], 1)
    flags, out = [0.0, 0.0], [None, None]
    barrier = threading.Barrier(2, timeout=60)

    def worker(i):
        log, lines, calls = logs[i], [], []

        def train_step(iterator, stop_flag):
            calls.append(1)
            if i == 0 and len(calls) == bad_at_step:  # what the pipeline does
                log.add([entry(r) for r in (1, 3, 5)])
                log.over_budget = log.shared_budget_error()
            flags[i] = stop_flag
            barrier.wait()
            reduced = sum(flags)
            barrier.wait()
            return {"loss": 1.0, "stop": reduced}

        loop = TrainLoop(train_step, iter(()), step=0, steps_per_epoch=4, total_steps=8)
        hook_list = [
            hooks.PreemptionHook(NoSignal(), multi_worker=True, stage_index=0,
                                 log=lines.append),
            hooks.BadRecordHook(log, batches_per_step=1, rebuild=None, multi_worker=True,
                                source=SOURCE, log=lines.append)]
        try:
            loop.run(hook_list)
        except ConfigError as err:
            out[i] = (err, loop.step, lines)
            return
        out[i] = (None, loop.step, lines)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out


class NoSignal:
    received, name = None, None


def test_an_over_budget_worker_stops_every_worker_after_the_same_step(tmp_path):
    path = str(tmp_path / "bad_records.jsonl")
    (err0, step0, lines0), (err1, step1, lines1) = two_workers(path, bad_at_step=2)
    # Worker 0 counts the budget exceeded during step 2 and votes in step 3;
    # worker 1, which read no bad record, learns it from the same reduced flag.
    assert step0 == step1 == 3
    assert err0 is not None and err1 is not None and str(err0) == str(err1)
    text = str(err0)
    assert text.startswith("c.hjson:2: datasets.train.max_bad_records: 3 bad records "
                           "exceed the budget of 1"), text
    assert "(Every worker stops after step 3, without a checkpoint of it.)" in text
    assert "v1, v3, v5" in text
    # Each dropped record is a named line on the worker that dropped it.
    assert [x for x in lines0 if x.startswith("skipped bad record")] == [
        "skipped bad record (dropped in the pipeline; -r keeps its place): "
        f"{os.path.basename(e['shard'])} record {e['record']} (video "
        f"'v{e['record']}', epoch 0): Unknown image file format" for e in map(entry, (1, 3, 5))]
    # Marked in the file as dropped in place: a resume holds them there
    # (docs/long_runs.md; tests/data/test_bad_records_resume_exact.py).
    saved = [json.loads(x) for x in open(path)]
    assert [e["resume_exact"] for e in saved] == [False] * 3


def test_past_the_budget_the_file_stays_as_the_paragraph_read_it(tmp_path):
    log = BadRecordLog(str(tmp_path / "bad_records.jsonl"))
    log.register(0, lambda first, n: [], 1)
    log.add([entry(1), entry(3)])
    log.over_budget = log.shared_budget_error()
    log.add([entry(5)])  # found by a read-ahead after the budget was exceeded
    assert len(log.entries) == 3 and len(BadRecordLog(log.path).entries) == 2
    assert "2 bad records exceed the budget of 1" in str(log.shared_budget_error())


def test_a_resume_after_a_shard_cut_mid_run_says_it_is_not_exact(tmp_path):
    # A record dropped in place is held there (exact: no line); a shard cut
    # mid-run shortens the epochs from the one it was found in.
    log = BadRecordLog(str(tmp_path / "bad_records.jsonl"))
    cut = dict(entry(6), readable=6, lost=2, error="truncated", video_id=None)
    log.add([dict(entry(1), resume_exact=False), dict(cut, resume_exact=False)])
    lines = []
    hook = hooks.BadRecordHook(BadRecordLog(log.path), batches_per_step=1, rebuild=None,
                               multi_worker=True, source=SOURCE, log=lines.append)
    loop = TrainLoop(lambda it, flag: {"loss": 1.0, "stop": 0.0}, iter(()), step=4,
                     steps_per_epoch=4, total_steps=8)
    loop.run([hook])
    assert len(lines) == 1 and lines[0].startswith(
        "resume at step 4: not exact: an earlier multi-worker run found 1 shard(s) cut "
        "mid-run (e.g. train-00000-of-00002.tfrecord: unreadable after record 6"), lines


def test_the_launcher_lets_every_worker_exit_2_by_itself(tmp_path):
    # Both stop after the same step, a moment apart: neither gets a signal.
    plan = {"0": {"exit": 2, "after_ready": 1}, "1": {"exit": 2, "after_ready": 0}}
    status, log = run_in_process(tmp_path, plan, lambda: None)
    assert status == exit_codes.CONFIG_ERROR, log
    assert events(tmp_path, 0)[1:] == ["exit 2"] and events(tmp_path, 1)[1:] == ["exit 2"]
    assert log[-1] == "failed: worker 0: 2, worker 1: 2", log


def test_a_worker_that_does_not_follow_a_2_is_stopped_and_named(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "GRACE_S", 0.5)
    plan = {"0": {}, "1": {"exit": 2, "after_ready": 0}}
    status, log = run_in_process(tmp_path, plan, lambda: None)
    assert status == exit_codes.CONFIG_ERROR, log
    assert events(tmp_path, 0)[1:] == ["signal SIGTERM", "checkpointed", "exit 75"]
    assert log[-1] == "failed: worker 0: 75, worker 1: 2; stopped by the launcher: worker 0"


@pytest.mark.slow  # two real MultiWorkerMirrored workers: about a minute on 2 cores
def test_kf_train_two_workers_over_the_budget_each_exit_2(tmp_path):
    from tests.data.test_bad_records import corrupt_frame
    from tests.training.tiny_data import tiny_config, write_split

    data = tmp_path / "data"
    shards = write_split(str(data), "train", 16, seed=0, num_frames=4)  # 2 shards
    write_split(str(data), "validation", 4, seed=1, num_frames=4)
    # Worker 0 reads shard 0 (shard_policy "file"), worker 1 shard 1: only
    # worker 0 meets the corrupt records.
    ids = [corrupt_frame(shards[0], r, 1) for r in (1, 3, 5)]
    config = json.loads(tiny_config(data, tmp_path / "exp", epochs=2,
                                    checkpoint_every_steps=1000))
    for block in config["datasets"].values():
        block["frame_step"] = 1  # 4 frames of 4: the garbage frame is in every clip
    config["datasets"]["train"]["max_bad_records"] = 1
    proc, out = kf_train_two_workers(tmp_path, config)
    assert proc.returncode == exit_codes.CONFIG_ERROR, out[-4000:]
    # Each worker ended with its own 2; the launcher signalled none of them.
    assert "failed: worker 0: 2, worker 1: 2\n" in out, out[-4000:]
    assert "stopped by the launcher" not in out and "Traceback" not in out, out[-4000:]
    paragraphs = [re.sub(r"^\[worker \d\] ", "", x) for x in out.splitlines()
                  if "datasets.train.max_bad_records:" in x]
    assert len(paragraphs) == 2 and paragraphs[0] == paragraphs[1], paragraphs
    assert sum(x.startswith("[worker 0] kf-train: config error: ") for x in
               out.splitlines()) == 1, out[-4000:]
    assert "exceed the budget of 1" in paragraphs[0] and ids[0] in paragraphs[0]
    stage = tmp_path / "exp" / "stage0"
    named = [json.loads(x)["video_id"] for x in open(stage / "bad_records.jsonl")]
    assert len(named) == len(set(named)) >= 2 and set(named) <= set(ids), named
    assert not (stage / "DONE").exists()


def service_run(tmp_path, corrupt, **train):
    """`kf-train --workers 2` through a local tf.data service (2 workers) on
    16 videos with records `corrupt` of shard 0 corrupt; (status, output,
    stage folder, the corrupt records' video ids)."""
    from klassterfork.data.runtime import service
    from tests.data.test_bad_records import corrupt_frame
    from tests.training.tiny_data import tiny_config, write_split

    data = tmp_path / "data"
    shards = write_split(str(data), "train", 16, seed=0, num_frames=4)
    write_split(str(data), "validation", 4, seed=1, num_frames=4)
    ids = [corrupt_frame(shards[0], r, 1) for r in corrupt]
    config = json.loads(tiny_config(data, tmp_path / "exp", epochs=2, plot=False,
                                    checkpoint_every_steps=1000))
    for block in config["datasets"].values():
        block["frame_step"] = 1  # 4 frames of 4: the garbage frame is in every clip
    config["datasets"]["train"].update(train)
    with service.LocalService(2, tmp_path / "svc") as svc:
        config["datasets"]["train"]["service"] = {"address": svc.address, "timeout_s": 60}
        cfg = tmp_path / "c.hjson"
        cfg.write_text(json.dumps(config))
        proc = subprocess.run(
            [sys.executable, "-m", "klassterfork.cli.train", str(cfg), "--workers", "2"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return proc.returncode, proc.stdout + proc.stderr, tmp_path / "exp" / "stage0", ids


@pytest.mark.slow  # two trainer workers and two tf.data service workers: ~2 min
def test_two_workers_through_the_service_name_a_corrupt_record_once(tmp_path):
    status, out, stage, ids = service_run(tmp_path, [2])
    assert status == 0, out[-4000:]
    assert (stage / "DONE").read_text().strip() == "8", out[-4000:]  # every step
    named = [json.loads(x)["video_id"] for x in open(stage / "bad_records.jsonl")]
    assert named == ids, named


@pytest.mark.slow  # as above
def test_two_workers_through_the_service_over_the_budget_each_exit_2(tmp_path):
    status, out, stage, ids = service_run(tmp_path, [1, 3, 5], max_bad_records=1)
    assert status == exit_codes.CONFIG_ERROR, out[-4000:]
    assert "failed: worker 0: 2, worker 1: 2\n" in out, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    paragraphs = [re.sub(r"^\[worker \d\] ", "", x) for x in out.splitlines()
                  if "datasets.train.max_bad_records:" in x]
    assert len(paragraphs) == 2 and paragraphs[0] == paragraphs[1], paragraphs
    assert not (stage / "DONE").exists()


def test_a_record_dropped_mid_run_is_held_in_its_place_on_resume(tmp_path):
    # docs/long_runs.md: a multi-worker run drops record R after the record
    # stage; a resume holds R in its place from the epoch it was found in (an
    # empty stand-in, not read), so its record stage gives the dropping run's
    # stream: the same records at the same positions in every pass. (Which
    # batch a resume starts at: tests/data/test_bad_records_resume_exact.py.)
    from klassterfork.data.reading import resume
    from tests.data.test_pipeline import video_record, write_shards

    paths = write_shards(tmp_path, [video_record(f"v{i}", 2, 0) for i in range(16)])
    counts = tuple(resume.count_records(p)[0] for p in paths)
    bad = (0, 3)

    def stream(hold):
        layout = resume.Layout(shards=resume.Shards(tuple(paths), counts, hold=hold),
                               file_seed=5, shuffle_seed=6, cycle_length=2,
                               shuffle_buffer=4, guarded=True)
        ds, _ = resume.records(layout, start_record=0)
        return [(int(e), int(f), int(r), x.numpy()) for e, f, r, x in ds.take(48)]

    full, held = stream(()), stream(((*bad, 1),))  # found in epoch 1
    assert [x[:3] for x in held] == [x[:3] for x in full]
    assert [x for x in held if not x[3]] == [(e, *bad, b"") for e in (1, 2)]
    assert [x for x in held if x[3]] == [x for x in full if x[1:3] != bad or x[0] < 1]


@pytest.mark.slow  # two real workers: ~40 s
def test_kf_train_two_workers_that_diverge_each_exit_3(tmp_path):
    # The launcher's other same-step status: a NaN loss is all-reduced, so
    # every worker sees it after the same step and exits 3 by itself.
    from tests.training.tiny_data import tiny_config, write_split

    data = tmp_path / "data"
    write_split(str(data), "train", 16, seed=0, num_frames=4)
    write_split(str(data), "validation", 4, seed=1, num_frames=4)
    config = json.loads(tiny_config(data, tmp_path / "exp", epochs=2))
    for block in config["datasets"].values():
        block["frame_step"] = 1
    config["optimizer"] = {"SGD": {"learning_rate": 1e30}}
    proc, out = kf_train_two_workers(tmp_path, config)
    assert proc.returncode == exit_codes.DIVERGED, out[-4000:]
    assert "failed: worker 0: 3, worker 1: 3\n" in out, out[-4000:]
    assert "stopped by the launcher" not in out and "Traceback" not in out, out[-4000:]
