"""`training/hooks.py`: each hook on the real `TrainLoop` with a fake train
step and stand-ins for what it acts on (signals, checkpoint manager, model,
bad-record log). Expected steps, sums and rows are worked out by hand."""

import csv
import math

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.config.loader import ConfigError, Source
from klassterfork.data.reading.bad_records import BadRecordsError
from klassterfork.training import hooks
from klassterfork.training.loop import Hook, TrainLoop
from klassterfork.training.schedules import ReduceOnPlateau

SPE = 3  # steps per epoch in every test


def step_logs(losses=None, stop=0.0):
    """A fake train step: step i (from 1) has loss losses[i-1] (summed over 4
    clips), 2 top-1 and 3 top-5 hits; `stop` is the all-reduced flag."""
    state = {"i": 0}

    def train_step(iterator, stop_flag):
        state["i"] += 1
        loss = 4.0 if losses is None else losses[state["i"] - 1]
        return {"loss": loss, "top1": 2.0, "top5": 3.0, "count": 4.0,
                "stop": stop(state["i"]) if callable(stop) else stop + stop_flag}

    return train_step


def run(hook_list, *, step=0, total=6, train_step=None):
    loop = TrainLoop(train_step or step_logs(), iter(()), step=step, steps_per_epoch=SPE,
                     total_steps=total)
    return loop, loop.run(hook_list)


class Metrics(Hook):
    """What EpochMetricsHook adds for the hooks after it, as plain values."""

    def after_step(self, loop, logs):
        logs.setdefault("epoch_loss", 1.0)
        logs.setdefault("clips_per_s", 10.0)


class Signals:
    def __init__(self, received=None):
        self.received = received

    @property
    def name(self):
        return "SIGTERM" if self.received else None


# ---- PreemptionHook ----------------------------------------------------------
def test_preemption_stops_every_worker_on_the_all_reduced_flag():
    lines = []
    # A peer's signal: this worker saw none, the reduced flag says 1 after step 2.
    hook = hooks.PreemptionHook(Signals(), multi_worker=True, stage_index=0, log=lines.append)
    loop, result = run([hook], train_step=step_logs(stop=lambda i: float(i == 2)))
    assert loop.step == 2 and result == {"step": 2, "stopped": True,
                                         "preempted": "a signal to another worker"}
    assert lines == ["stage 0: stopped by a signal to another worker after step 2 of 6; "
                     "checkpoint ckpt-2 saved, logs flushed."]


def test_preemption_own_signal_goes_into_the_step_and_stops_a_lone_worker():
    signals, flags = Signals(), []

    def train_step(iterator, stop_flag):
        flags.append(stop_flag)
        if len(flags) == 4:
            signals.received = 15  # arrives during step 4
        return {"loss": 1.0, "stop": 0.0}

    hook = hooks.PreemptionHook(signals, multi_worker=False, stage_index=1, log=print)
    loop, result = run([hook], train_step=train_step)
    assert flags == [0.0] * 4 and loop.step == 4 and result["preempted"] == "SIGTERM"
    # On a multi-worker run only the reduced flag stops (the peers must agree).
    signals.received = 15
    loop, result = run([hooks.PreemptionHook(signals, multi_worker=True, stage_index=1,
                                             log=print)], train_step=train_step)
    assert flags[4:] == [1.0] * 6 and result["stopped"] is False


def test_preemption_at_the_last_step_of_the_run_is_a_finished_run():
    hook = hooks.PreemptionHook(Signals(15), multi_worker=False, stage_index=0, log=print)
    _, result = run([hook], step=5)
    assert result == {"step": 6, "stopped": False, "preempted": None}


# ---- NanCheckHook --------------------------------------------------------------
def test_nan_loss_raises_training_diverged_naming_step_and_checkpoint(tmp_path):
    losses = [1.0, 1.0, 1.0, math.nan]
    with pytest.raises(hooks.TrainingDiverged, match=r"loss is nan at step 4 \(epoch 2\); "
                       r"stopped. Last good checkpoint: none"):
        run([hooks.NanCheckHook(str(tmp_path))], train_step=step_logs(losses))


# ---- EpochMetricsHook ----------------------------------------------------------
def test_epoch_metrics_sums_and_the_resumed_sums_of_the_checkpoint():
    sums = tf.Variable(tf.zeros([5], tf.float64))
    seen = []

    class Epochs(Hook):
        def after_step(self, loop, logs):
            seen.append((logs["epoch_loss"], sums.numpy()[:4].tolist()))

        def after_epoch(self, loop, logs):
            seen.append(dict(logs))

    hook = hooks.EpochMetricsHook(sums, current_lr=lambda: 0.5)
    run([hook, Epochs()], total=3, train_step=step_logs([4.0, 8.0, 12.0]))
    # Per clip: losses 1, 2, 3 over 4 clips each; 2/4 top-1, 3/4 top-5.
    assert seen[0] == (1.0, [4.0, 2.0, 3.0, 4.0])
    assert seen[1] == (1.5, [12.0, 4.0, 6.0, 8.0])
    epoch = seen[3]
    assert {k: epoch[k] for k in ("epoch", "step", "loss", "top1", "top5", "lr")} == {
        "epoch": 1, "step": 3, "loss": 2.0, "top1": 0.5, "top5": 0.75, "lr": 0.5}
    assert epoch["time"] >= 0 and epoch["clips_per_s"] > 0
    assert sums.numpy().tolist() == [0.0] * 5  # zeroed for the checkpoint at the epoch end

    # Resumed at step 1 with the checkpoint's sums of step 1 (loss 4, 7 s).
    sums.assign([4.0, 2.0, 3.0, 4.0, 7.0])
    seen.clear()
    run([hooks.EpochMetricsHook(sums, current_lr=lambda: 0.5), Epochs()], step=1,
        total=3, train_step=step_logs([8.0, 12.0]))
    assert seen[-1]["loss"] == 2.0 and seen[-1]["time"] >= 7.0


# ---- ProgressBarHook -----------------------------------------------------------
def test_progress_bar_counts_the_epochs_steps_and_closes():
    counts = []

    class Probe(Hook):
        def after_step(self, loop, logs):
            counts.append((bar.bar.n, bar.bar.total) if bar.bar is not None else None)

    bar = hooks.ProgressBarHook(epochs=2, enabled=True)
    run([Metrics(), bar, Probe()], step=1)
    assert counts == [(1, 2), None, (1, 3), (2, 3), None]  # closed at each epoch end
    assert bar.bar is None


# ---- StepLogHook ---------------------------------------------------------------
class CountingWriter:
    def __init__(self, path):
        self.writer, self.flushes = tf.summary.create_file_writer(path), 0

    def as_default(self, step):
        return self.writer.as_default(step=step)

    def flush(self):
        self.flushes += 1


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_step_log_rows_every_n_steps_on_the_chief_and_a_flush_on_stop(tmp_path):
    writer = CountingWriter(str(tmp_path / "tb"))
    path = tmp_path / "log_steps.csv"
    stop = hooks.PreemptionHook(Signals(), multi_worker=True, stage_index=0, log=print)
    hook = hooks.StepLogHook(str(path), writer, every_steps=2, current_lr=lambda: 0.1,
                             chief=True)
    run([stop, Metrics(), hook], train_step=step_logs(stop=lambda i: float(i == 5)))
    rows = read_rows(path)
    assert [(r["step"], r["epoch"]) for r in rows] == [("2", "1"), ("4", "2")]
    assert float(rows[0]["loss"]) == 1.0 and float(rows[0]["lr"]) == 0.1
    assert writer.flushes == 1  # after step 5, the stop
    other = tmp_path / "other.csv"
    run([Metrics(), hooks.StepLogHook(str(other), writer, every_steps=1,
                                      current_lr=lambda: 0.1, chief=False)])
    assert not other.exists()


# ---- CheckpointHook ------------------------------------------------------------
class Manager:
    def __init__(self):
        self.saved = []

    def save(self, checkpoint_number):
        self.saved.append(checkpoint_number)


def checkpoint_hook(manager, lines, stop_after=None, every=2):
    syncs = []
    hook = hooks.CheckpointHook(
        manager, epoch=tf.Variable(0, dtype=tf.int64), every_steps=every,
        sync_replicas=lambda: syncs.append(1), stop_after_steps=stop_after,
        cleanup=lambda: lines.append("cleanup"), log=lines.append)
    return hook, syncs


def test_checkpoints_every_n_steps_within_epochs_and_at_epoch_ends():
    manager, lines = Manager(), []
    hook, syncs = checkpoint_hook(manager, lines)
    _, result = run([hook])
    # every 2: 2, 4 (6 is an epoch end: saved once); epoch ends 3, 6.
    assert manager.saved == [2, 3, 4, 6] and len(syncs) == 4
    assert int(hook.epoch.numpy()) == 2 and lines == ["cleanup"]
    assert result["stopped"] is False


@pytest.mark.parametrize("stop_after, saved, epoch", [(4, [2, 3, 4], 1), (3, [2, 3], 0)])
def test_stop_after_steps_saves_that_step_and_skips_its_epoch_end(stop_after, saved, epoch):
    manager, lines = Manager(), []
    hook, _ = checkpoint_hook(manager, lines, stop_after=stop_after)
    loop, result = run([hook])
    assert manager.saved == saved and result["stopped"] is True
    # Stopped at step 3, the checkpoint's epoch is still 0: the epoch did not end.
    assert int(hook.epoch.numpy()) == epoch
    assert lines == [f"stopped after step {stop_after} (train_loop.stop_after_steps)",
                     "cleanup"]


def test_a_preemption_saves_its_step_once_and_an_epoch_end_once():
    for at, saved in ((1, [1]), (3, [3])):
        manager = Manager()
        hook, _ = checkpoint_hook(manager, [], every=100)
        stop = hooks.PreemptionHook(Signals(), multi_worker=True, stage_index=0, log=print)
        run([stop, hook], train_step=step_logs(stop=lambda i, at=at: float(i == at)))
        assert manager.saved == saved


# ---- EvalHook ------------------------------------------------------------------
class Optimizer:
    def __init__(self, schedule=None):
        self._learning_rate = schedule


def eval_hook(values, optimizer, resaves, lines, every=2, source=None):
    it = iter(values)
    return hooks.EvalHook(lambda: {"val_loss": next(it), "val_top1": 0.5},
                          every_epochs=every, optimizer=optimizer, source=source,
                          resave=lambda loop: resaves.append(loop.step), log=lines.append)


def test_evaluation_every_n_epochs_and_after_the_last():
    seen, resaves = [], []

    class Probe(Hook):
        def after_epoch(self, loop, logs):
            seen.append((loop.step, logs.get("val_loss")))

    hook = eval_hook([1.0, 2.0], Optimizer(), resaves, [])
    run([hook, Probe()], total=9)
    assert seen == [(3, None), (6, 1.0), (9, 2.0)] and resaves == []


def test_reduce_on_plateau_stops_below_last_lr_and_resaves_its_state():
    plateau = ReduceOnPlateau(0.1, factor=0.5, patience=1, last_lr=0.06)
    resaves, lines = [], []
    hook = eval_hook([1.0, 1.0, 1.0], Optimizer(plateau), resaves, lines, every=1)
    loop, result = run([hook], total=9)
    # epoch 1 sets best 1.0; epoch 2 does not improve: 0.1 x 0.5 < 0.06, stop.
    assert loop.step == 6 and result["stopped"] is False and loop.finished
    assert lines == ["learning rate fell below last_lr: stopping after epoch 2"]
    assert resaves == [3, 6] and float(plateau.scale.numpy()) == 0.5


def test_reduce_on_plateau_monitoring_an_unreported_metric_is_a_config_error():
    plateau = ReduceOnPlateau(0.1, monitor="val_top5")
    source = Source("c.hjson", "{\n  optimizer: {SGD: {}}\n}\n")
    hook = eval_hook([1.0], Optimizer(plateau), [], [], every=1, source=source)
    with pytest.raises(ConfigError, match=r"c.hjson:2: optimizer: ReduceOnPlateau monitors "
                       r"'val_top5'.*Reported: val_loss, val_top1"):
        run([hook])


# ---- EpochLogHook, BestModelHook, FinalModelHook -------------------------------
def test_epoch_log_row_on_the_chief_and_the_line_everywhere(tmp_path):
    writer, lines = tf.summary.create_file_writer(str(tmp_path / "tb")), []

    class Fill(Hook):
        def after_epoch(self, loop, logs):
            logs.update(epoch=loop.epoch + 1, step=loop.step, loss=0.25)

    path = tmp_path / "log.csv"
    run([Fill(), hooks.EpochLogHook(str(path), ["epoch", "step", "loss", "val_top1"], writer,
                                    chief=True, log=lines.append)])
    assert read_rows(path) == [{"epoch": "1", "step": "3", "loss": "0.25", "val_top1": ""},
                               {"epoch": "2", "step": "6", "loss": "0.25", "val_top1": ""}]
    assert lines == ["epoch=1 step=3 loss=0.25", "epoch=2 step=6 loss=0.25"]
    run([Fill(), hooks.EpochLogHook(str(tmp_path / "w1.csv"), ["epoch"], writer,
                                    chief=False, log=lines.append)])
    assert not (tmp_path / "w1.csv").exists() and len(lines) == 4


class Model:
    def __init__(self):
        self.version = 0

    def save(self, path):
        with open(path, "w") as f:
            f.write(str(self.version))


@pytest.mark.parametrize("key, logged, scores, kept", [
    ("val_top1", "0.8", [0.7, 0.9, 0.85], "2"),   # higher is better
    ("val_loss", "0.5", [0.6, 0.4, 0.45], "2"),   # lower is better
    ("val_top1", "0.95", [0.7, 0.9, 0.85], None),  # the resumed best stays
])
def test_best_model_keeps_the_best_epoch_including_the_logged_one(tmp_path, key, logged,
                                                                   scores, kept):
    (tmp_path / "log.csv").write_text(f"epoch,step,{key}\n1,3,{logged}\n2,6,0.99\n")
    model, it = Model(), iter(scores)

    class Score(Hook):
        def after_epoch(self, loop, logs):
            model.version = loop.epoch
            logs[key] = next(it)

    hook = hooks.BestModelHook(model, str(tmp_path / "best.keras"), key=key, chief=True,
                               csv_path=str(tmp_path / "log.csv"))
    run([Score(), hook], step=3, total=12)  # resumed at step 3: the row at 6 is not read
    best = tmp_path / "best.keras"
    assert (best.read_text() if best.exists() else None) == kept


def test_final_model_and_done_only_for_a_finished_run(tmp_path):
    dirs = {"root": str(tmp_path), "model": str(tmp_path / "model.keras"),
            "csv": str(tmp_path / "log.csv"), "done": str(tmp_path / "DONE")}

    class Fill(Hook):
        def after_epoch(self, loop, logs):
            logs.update(epoch=loop.epoch + 1, loss=0.5)

    step = tf.Variable(6, dtype=tf.int64)
    final = hooks.FinalModelHook(Model(), dirs, step=step, plot=False, chief=True)
    stop = hooks.PreemptionHook(Signals(), multi_worker=True, stage_index=0, log=print)
    _, result = run([stop, Fill(), final], train_step=step_logs(stop=lambda i: float(i == 4)))
    assert result["stopped"] is True and not (tmp_path / "DONE").exists()
    _, result = run([Fill(), final])
    assert (tmp_path / "DONE").read_text() == "6\n" and (tmp_path / "model.keras").exists()
    assert result == {"step": 6, "stopped": False, "preempted": None, "epoch": 2,
                      "loss": 0.5}


# ---- BadRecordHook -------------------------------------------------------------
class BadRecords:
    def __init__(self, found=(), over=False):
        self.found, self.over, self.asked = list(found), over, []

    def diagnose(self, first_batch, num_batches):
        self.asked.append((first_batch, num_batches))
        if self.over:
            raise BadRecordsError("2 bad records exceed the budget of 1")
        return self.found


def failing_step(fail_at):
    """Fails once, at step `fail_at` (from 1), with a decoding error."""
    calls = []

    def train_step(iterator, stop_flag):
        calls.append(next(iterator, None))
        if len(calls) == fail_at:
            raise tf.errors.InvalidArgumentError(None, None, "Unknown image file format")
        return {"loss": 1.0}

    return train_step, calls


def bad_record_hook(log, lines, multi_worker=False, rebuilt=None):
    source = Source("c.hjson", "{\n datasets: {train: {max_bad_records: 1}}\n}\n")
    return hooks.BadRecordHook(
        log, batches_per_step=2, multi_worker=multi_worker, source=source,
        log=lines.append, rebuild=lambda step: rebuilt.append(step) or iter([f"at{step}"] * 9))


def test_a_bad_record_is_named_and_the_input_rebuilt_at_that_step():
    entry = {"shard": "a.tfrecord", "record": 2, "video_id": "v4", "error": "x"}
    log, lines, rebuilt = BadRecords([entry]), [], []
    train_step, calls = failing_step(3)
    loop = TrainLoop(train_step, iter(["s1", "s2", "s3"]), step=0, steps_per_epoch=3,
                     total_steps=6)
    loop.run([bad_record_hook(log, lines, rebuilt=rebuilt)])
    assert log.asked == [(4, 2)] and rebuilt == [2]  # step 3 = batches 4, 5 of 2 replicas
    assert calls == ["s1", "s2", "s3"] + ["at2"] * 4 and loop.step == 6
    assert len(lines) == 1 and lines[0].startswith("skipped bad record: ")


@pytest.mark.parametrize("found, over, multi_worker, error", [
    ([], False, False, tf.errors.InvalidArgumentError),  # no record fails alone
    ([{"shard": "a", "record": 1, "video_id": "v", "error": "x"}], False, True,
     tf.errors.InvalidArgumentError),  # the peers wait in this step's collectives
    ([], True, False, ConfigError),  # over the budget
])
def test_bad_record_errors_it_does_not_recover_from(found, over, multi_worker, error):
    train_step, _ = failing_step(1)
    hook = bad_record_hook(BadRecords(found, over), [], multi_worker=multi_worker,
                           rebuilt=[])
    with pytest.raises(error):
        run([hook], train_step=train_step)
    assert hook.on_step_error(None, ValueError("not tf")) is False


def test_the_hooks_do_not_share_mutable_defaults():
    a = hooks.EpochMetricsHook(tf.Variable(tf.zeros([5], tf.float64)), lambda: 0.0)
    b = hooks.EpochMetricsHook(tf.Variable(tf.zeros([5], tf.float64)), lambda: 0.0)
    a.sums["loss"] = 1.0
    assert b.sums["loss"] == 0.0 and np.isfinite(a.started)
