"""The hooks of a stage's training loop (`training/loop.py`), one concern each.

`trainer.Stage._hooks` assembles the list; a new concern (e.g. MLflow
tracking) is one `Hook` subclass here plus one line there. The list order
matters where a hook reads what an earlier one wrote:

- `PreemptionHook` first: later hooks see the stop it requests after a step
  (the step's log row is flushed, the checkpoint is saved).
- `EpochMetricsHook` before the progress bar and the step log (it adds
  `epoch_loss` and `clips_per_s` to the step's logs) and before
  `CheckpointHook` (it keeps the epoch's running sums in the checkpoint).
- At an epoch's end: metrics, then the checkpoint (written before the
  evaluation), the evaluation, the CSV row, the best model.
- `PendingEvalHook` last: it clears the "evaluation pending" record once the
  epoch's end is through, and on resume replays an epoch end that a crash or
  a signal interrupted (the evaluation and every hook after it).

Only the chief writes files (CSV, TensorBoard, best / final model, DONE);
every worker saves the checkpoint (a collective) at the same step.
"""

import json
import os
import time

import numpy as np
import tensorflow as tf
import tqdm

from klassterfork import files
from klassterfork.analysis.plot_training import plot_training
from klassterfork.config.loader import ConfigError
from klassterfork.data.reading.bad_records import BadRecordsError
from klassterfork.data.reading.bad_records import describe as describe_bad_record
from klassterfork.training import builders, run_logs
from klassterfork.training.loop import Hook
from klassterfork.training.preemption import OVER_BUDGET_VOTE, stop_votes
from klassterfork.training.stage_eval import EvaluationInterrupted


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


def save_keras_atomic(model, path):
    """`model.save` to a temporary name, then rename (no half-written model)."""
    with files.atomic_path(path) as tmp:
        model.save(tmp)


class PreemptionHook(Hook):
    """SIGTERM / SIGINT (`preemption.SignalWatcher`): every worker stops
    after the same step, with a checkpoint (training/preemption.py).

    Each step carries this worker's request (`loop.stop_flag`); the train
    step all-reduces it into `logs["stop"]`, so all workers read the same
    value after the same step.
    """

    def __init__(self, signals, *, multi_worker, stage_index, log):
        self.signals, self.multi_worker = signals, multi_worker
        self.stage_index, self.log = stage_index, log

    def before_step(self, loop):
        loop.stop_flag = 1.0 if self.signals.received else 0.0

    def after_step(self, loop, logs):
        # Any worker's signal (the all-reduced flag) stops every worker after
        # this same step; a lone worker also stops on its own signal that
        # arrived during the step. At an epoch's last step the epoch ends as
        # usual (checkpoint, evaluation, log row), then the run stops.
        if stop_votes(logs)[0] > 0 or (self.signals.received and not self.multi_worker):
            loop.request_stop("preempted", end_epoch=True)

    def end(self, loop):
        if loop.stop_reason != "preempted" or loop.finished:
            return
        cause = self.signals.name or "a signal to another worker"
        self.log(f"stage {self.stage_index}: stopped by {cause} after step {loop.step} of "
                 f"{loop.total_steps}; checkpoint ckpt-{loop.step} saved, logs flushed.")
        loop.result["preempted"] = cause


class NanCheckHook(Hook):
    """Raises `TrainingDiverged` when a step's loss is NaN or Inf."""

    def __init__(self, checkpoint_dir):
        self.checkpoint_dir = checkpoint_dir

    def after_step(self, loop, logs):
        if np.isfinite(logs["loss"]):
            return
        last = tf.train.latest_checkpoint(self.checkpoint_dir)
        raise TrainingDiverged(
            f"loss is {logs['loss']} at step {loop.step} (epoch {loop.epoch + 1}); "
            f"stopped. Last good checkpoint: {last or 'none'}. Lower the learning rate "
            "or clip gradients with optimizer.<Name>.global_clipnorm (e.g. optimizer: "
            "{SGD: {global_clipnorm: 20}}), then resume with -r."
        )


SUM_KEYS = ("loss", "top1", "top5", "count")


class EpochMetricsHook(Hook):
    """The epoch's running sums of loss, hits and clips, and its time.

    The sums (and seconds) so far live in `epoch_sums` (a float64 (5,)
    variable of the checkpoint), so a run resumed mid-epoch reports the
    whole epoch. Adds `epoch_loss` and `clips_per_s` (running) to each
    step's logs; fills the epoch's train metrics at its end.
    """

    def __init__(self, epoch_sums, current_lr):
        self.epoch_sums, self.current_lr = epoch_sums, current_lr
        self.sums, self.started = dict.fromkeys(SUM_KEYS, 0.0), time.perf_counter()

    def begin_epoch(self, loop):
        self.sums, carried = dict.fromkeys(SUM_KEYS, 0.0), 0.0
        if loop.step > loop.epoch * loop.steps_per_epoch:  # resumed mid-epoch
            saved = self.epoch_sums.numpy()
            self.sums = dict(zip(SUM_KEYS, (float(x) for x in saved[:4])))
            carried = float(saved[4])
        self.started = time.perf_counter() - carried

    def after_step(self, loop, logs):
        for k in self.sums:
            self.sums[k] += logs[k]
        elapsed = time.perf_counter() - self.started
        logs["epoch_loss"] = self.sums["loss"] / self.sums["count"]
        logs["clips_per_s"] = self.sums["count"] / max(elapsed, 1e-9)
        values = [self.sums[k] for k in SUM_KEYS] + [elapsed]
        self.epoch_sums.assign(tf.constant(values, tf.float64))

    def after_epoch(self, loop, logs):
        elapsed = time.perf_counter() - self.started
        count = max(self.sums["count"], 1.0)
        logs.update({
            "epoch": loop.epoch + 1, "step": loop.step,
            "loss": self.sums["loss"] / count, "top1": self.sums["top1"] / count,
            "top5": self.sums["top5"] / count, "lr": self.current_lr(),
            "clips_per_s": self.sums["count"] / max(elapsed, 1e-9), "time": elapsed,
        })
        self.epoch_sums.assign(tf.zeros([5], tf.float64))


class ProgressBarHook(Hook):
    """A tqdm bar per epoch: running loss and clips per second."""

    def __init__(self, *, epochs, enabled):
        self.epochs, self.enabled, self.bar = epochs, enabled, None

    def begin_epoch(self, loop):
        self.bar = tqdm.tqdm(total=loop.epoch_end - loop.step,
                             desc=f"epoch {loop.epoch + 1}/{self.epochs}",
                             disable=not self.enabled, mininterval=2.0, leave=False)

    def after_step(self, loop, logs):
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{logs['epoch_loss']:.3f}",
                             clips_s=f"{logs['clips_per_s']:.1f}")
        if loop.stopping or loop.step == loop.epoch_end:
            self.close(loop)

    def close(self, loop=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    end = abort = close


class StepLogHook(Hook):
    """Every `every_steps` steps a row of `log_steps.csv` and its
    TensorBoard scalars (chief only); flushes the writer on a stop."""

    def __init__(self, path, writer, *, every_steps, current_lr, chief):
        self.path, self.writer, self.every = path, writer, int(every_steps)
        self.current_lr, self.chief = current_lr, chief

    def after_step(self, loop, logs):
        if loop.step % self.every == 0 and self.chief:
            row = {"step": loop.step, "epoch": loop.epoch + 1,
                   "loss": logs["loss"] / logs["count"], "lr": self.current_lr(),
                   "clips_per_s": logs["clips_per_s"]}
            run_logs.append_step(self.path, row, self.writer)
        if loop.stopping:
            self.writer.flush()


class CheckpointHook(Hook):
    """`tf.train.CheckpointManager` saves: every `every_steps` steps within an
    epoch, at each epoch's end and on a stop; `stop_after_steps` stops the
    run (without that epoch's end) after that step.

    Every worker saves at the same step (a save is a collective); the
    replicas' batch-norm statistics are averaged first (`sync_replicas`).
    `cleanup` (at the end) removes a non-chief worker's throw-away copy.
    """

    def __init__(self, manager, *, epoch, sync_replicas, every_steps, stop_after_steps,
                 cleanup, log):
        self.manager, self.epoch, self.sync_replicas = manager, epoch, sync_replicas
        self.every = int(every_steps)
        self.stop_after = None if stop_after_steps is None else int(stop_after_steps)
        self.cleanup, self.log = cleanup, log

    def begin_epoch(self, loop):
        self.epoch.assign(loop.epoch)

    def after_step(self, loop, logs):
        if self.stop_after is not None and loop.step >= self.stop_after:
            loop.request_stop("stop_after_steps", end_epoch=False)
        periodic = loop.step % self.every == 0 and loop.step < loop.epoch_end
        if periodic or (loop.stopping and not loop.epoch_complete):
            self.save(loop)

    def after_epoch(self, loop, logs):
        self.epoch.assign(loop.epoch + 1)
        self.save(loop)

    def save(self, loop):
        self.sync_replicas()
        self.manager.save(checkpoint_number=loop.step)

    def end(self, loop):
        if loop.stop_reason == "stop_after_steps":
            self.log(f"stopped after step {loop.step} (train_loop.stop_after_steps)")
        self.cleanup()


class EvalHook(Hook):
    """Evaluation every `every_epochs` epochs and after the last one; a
    `ReduceOnPlateau` learning rate then takes the monitored metric.

    The epoch-end checkpoint is written before the evaluation; the
    plateau's new state is saved again at that step (`resave`), so a resume
    from it continues with the reduced rate.

    With `signals` the evaluation asks between batches whether a SIGTERM /
    SIGINT arrived: if so it stops there and the run stops as preempted,
    the epoch's end left undone (no CSV row, no best model). With
    `pending_path`, the epoch's train metrics are written there before the
    evaluation starts; `PendingEvalHook` replays that epoch end on resume
    (after a signal or a crash in the evaluation) and removes the file once
    the epoch's end is through.
    """

    def __init__(self, evaluate, *, every_epochs, optimizer, source, resave, log,
                 signals=None, pending_path=None):
        self.evaluate, self.every = evaluate, int(every_epochs)
        self.optimizer, self.source, self.resave, self.log = optimizer, source, resave, log
        self.signals, self.pending_path = signals, pending_path

    def after_epoch(self, loop, logs):
        if not (loop.step >= loop.total_steps or (loop.epoch + 1) % self.every == 0):
            return
        if self.pending_path:
            files.write_text_atomic(self.pending_path, json.dumps(
                {"step": loop.step, "epoch": loop.epoch, "logs": logs}, default=float))
        if self.signals is None:
            logs.update(self.evaluate())
        else:
            try:
                logs.update(self.evaluate(should_stop=lambda: bool(self.signals.received)))
            except EvaluationInterrupted:
                self.log(f"evaluation after step {loop.step} stopped by "
                         f"{self.signals.name or 'a signal'} between two batches; the "
                         f"checkpoint ckpt-{loop.step} is saved and -r runs it again")
                loop.interrupt_epoch_end("preempted")
                return
        plateau = builders.plateau_controller(self.optimizer)
        if plateau is None:
            return
        if plateau.monitor not in logs:
            raise ConfigError(
                self.source, "optimizer", f"ReduceOnPlateau monitors {plateau.monitor!r}, "
                f"which evaluation does not report. Reported: {', '.join(sorted(logs))}"
            )
        if plateau.update(logs[plateau.monitor]) == "stop":
            self.log(f"learning rate fell below last_lr: stopping after epoch {loop.epoch + 1}")
            loop.total_steps = loop.step  # this epoch was the last one
        self.resave(loop)


class EpochLogHook(Hook):
    """The epoch's row of `log.csv` and its TensorBoard scalars (chief
    only), and its metrics line (every worker)."""

    def __init__(self, path, fields, writer, *, chief, log):
        self.path, self.fields, self.writer = path, fields, writer
        self.chief, self.log = chief, log

    def after_epoch(self, loop, logs):
        if not loop.epoch_complete:  # an evaluation was interrupted
            return
        if self.chief:
            run_logs.append_epoch(self.path, self.fields, logs, self.writer)
        self.log(run_logs.format_metrics(logs))


class BestModelHook(Hook):
    """`best.keras`: the model of the best epoch by `key` (losses: lowest).

    A resumed stage starts from the best logged so far (else its first
    evaluation would overwrite best.keras whatever it scored).
    """

    def __init__(self, model, path, *, csv_path, key, chief):
        self.model, self.path, self.csv_path = model, path, csv_path
        self.key, self.chief, self.best = key, chief, -np.inf
        self.sign = -1.0 if key.endswith("loss") else 1.0

    def begin(self, loop):
        self.best = run_logs.best_logged(self.csv_path, self.key, loop.step)

    def after_epoch(self, loop, logs):
        if not loop.epoch_complete:  # an evaluation was interrupted
            return
        if self.chief and self.key in logs and self.sign * logs[self.key] > self.best:
            self.best = self.sign * logs[self.key]
            save_keras_atomic(self.model, self.path)


class FinalModelHook(Hook):
    """A finished stage: `model.keras`, the training curves and `DONE`
    (holding the last step) from the chief; the result gets the last
    epoch's metrics."""

    def __init__(self, model, dirs, *, step, plot, chief):
        self.model, self.dirs, self.step = model, dirs, step
        self.plot, self.chief = plot, chief

    def end(self, loop):
        if not loop.finished:
            return
        step = int(self.step.numpy())
        if self.chief:
            save_keras_atomic(self.model, self.dirs["model"])
            if self.plot and os.path.exists(self.dirs["csv"]):
                plot_training(self.dirs["csv"],
                              os.path.join(self.dirs["root"], "training_curves.png"))
            files.write_text_atomic(self.dirs["done"], f"{step}\n")  # local or remote
        loop.result.update({"step": step, **loop.epoch_logs})


class BadRecordHook(Hook):
    """A record failed to parse / decode, or a shard to read, in a step:
    names it in the stage's bad_records.jsonl and rebuilds the input at this
    same step without it (see data/reading/bad_records.py); the step runs
    again.

    Multi-worker: a step cannot run again on one worker (the peers wait in
    its collectives): the pipeline drops bad records itself
    (`Placement.skip_bad_records`), this hook logs each (marked
    `resume_exact: false`: docs/long_runs.md "Bad records"). A worker over
    the budget votes in the next step's all-reduced stop flag
    (`preemption.OVER_BUDGET_VOTE`); after it every worker raises the same
    paragraph, read from the shared file (exit 2 on each).

    Raises: ConfigError over datasets.train.max_bad_records; from
    `on_step_error`, the step's error when no record of its batches fails on
    its own (not the data's fault) or on a multi-worker run.
    """

    ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError)
    KEY = "datasets.train.max_bad_records"

    def __init__(self, bad_records, *, batches_per_step, rebuild, multi_worker, source, log):
        self.bad_records, self.batches = bad_records, int(batches_per_step)
        self.rebuild, self.multi_worker = rebuild, multi_worker
        self.source, self.log = source, log
        self.over, self.known = None, set()  # this worker's BadRecordsError; keys logged

    def begin(self, loop):
        entries = getattr(self.bad_records, "entries", [])
        self.known = {json.dumps(e, sort_keys=True) for e in entries}
        if not self.multi_worker:
            return
        self.bad_records.mark = {"resume_exact": False}  # what this run drops from now on
        # A record dropped in place is held there on resume (exact); a cut shortens epochs.
        late = [e for e in entries if e.get("resume_exact") is False and "readable" in e]
        if late and loop.step:
            self.log(f"resume at step {loop.step}: not exact: an earlier multi-worker run found "
                     f"{len(late)} shard(s) cut mid-run (e.g. {describe_bad_record(late[0])}); "
                     "they are cut from the epoch they were found in, so from there the order "
                     "and every clip's random draws differ from an uninterrupted run "
                     "(docs/long_runs.md, \"Bad records\")")

    def before_step(self, loop):
        if self.multi_worker:  # this worker's budget vote, beside its signal vote
            loop.stop_flag = loop.stop_flag % OVER_BUDGET_VOTE + (
                0.0 if self.over is None else OVER_BUDGET_VOTE)

    def after_step(self, loop, logs):
        over = getattr(self.bad_records, "over_budget", None)
        try:
            # Records dropped on tf.data service workers, reported as files.
            found = getattr(self.bad_records, "collect", list)()
        except BadRecordsError as err:
            found, over = [], err
            self.bad_records.over_budget = err  # the file now stays as it is
        if not self.multi_worker:
            for entry in found:
                self.log(f"skipped bad record: {describe_bad_record(entry)}")
            if over is not None:
                raise ConfigError(self.source, self.KEY, str(over)) from None
            return
        self._log_dropped()
        self.over = self.over or over
        if stop_votes(logs)[1]:  # the same step and the same paragraph on every worker
            shared = getattr(self.bad_records, "shared_budget_error", type(None))() or self.over
            raise ConfigError(self.source, self.KEY, (
                f"{shared or 'another worker counted too many bad records'} (Every "
                f"worker stops after step {loop.step}, without a checkpoint of it.)")) from None

    def _log_dropped(self):
        for entry in getattr(self.bad_records, "entries", []):
            key = json.dumps(entry, sort_keys=True)
            if key not in self.known and entry.get("set", "train") == "train":
                self.known.add(key)
                how = "from a later checkpoint is not exact" if "readable" in entry else (
                    "keeps its place")
                self.log(f"skipped bad record (dropped in the pipeline; -r {how}): "
                         f"{describe_bad_record(entry)}")

    def on_step_error(self, loop, err):
        if not isinstance(err, self.ERRORS):
            return False
        try:
            found = self.bad_records.diagnose(loop.step * self.batches, self.batches)
        except BadRecordsError as over:
            raise ConfigError(self.source, self.KEY, str(over)) from None
        if not found:
            raise err
        for entry in found:
            self.log(f"skipped bad record: {describe_bad_record(entry)}")
        if self.multi_worker:
            raise err
        loop.iterator = self.rebuild(loop.step)
        return True


PENDING_FILE = "eval_pending.json"


def pending_eval_path(root, task):
    """The stage's "evaluation pending" file of one process: `task` is
    `strategy.task_info`'s (type, id), or (None, None) for a single
    process (each worker of a multi-worker run replays its own)."""
    task_type, task_id = task
    name = PENDING_FILE if task_type is None else f"eval_pending.{task_type}{task_id}.json"
    return os.path.join(root, name)


class PendingEvalHook(Hook):
    """Last in the list: the epoch end an evaluation left pending.

    `begin` (resume): when `EvalHook.pending_path` names the step the run
    resumed at, that epoch's end runs again from `EvalHook` on (the
    evaluation, the plateau, the CSV row, the best model) with the train
    metrics saved before the evaluation; a record of another step is stale
    and removed. `after_epoch`: the epoch's end is through, the record goes.
    """

    def __init__(self, hooks, *, log):
        self.eval_hook = next(h for h in hooks if isinstance(h, EvalHook))
        self.after = hooks[hooks.index(self.eval_hook):]
        self.log = log

    def begin(self, loop):
        path = self.eval_hook.pending_path
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except FileNotFoundError:
            return
        if int(record["step"]) != loop.step:
            self.log(f"{path}: an evaluation pending at step {record['step']} is stale "
                     f"(resumed at step {loop.step}); removed")
            os.remove(path)
            return
        self.log(f"resumed at step {loop.step}: running the evaluation of epoch "
                 f"{int(record['epoch']) + 1} that a signal or a crash interrupted")
        resumed_epoch, loop.epoch = loop.epoch, int(record["epoch"])
        try:
            logs = dict(record["logs"])
            for hook in self.after:
                hook.after_epoch(loop, logs)
                if not loop.epoch_complete:  # interrupted again
                    return
            loop.epoch_logs = logs
        finally:
            loop.epoch = resumed_epoch
        self.after_epoch(loop, logs)

    def after_epoch(self, loop, logs):
        path = self.eval_hook.pending_path
        if loop.epoch_complete and os.path.exists(path):
            os.remove(path)
