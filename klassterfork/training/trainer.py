"""The training loop: our own `strategy.run` loop, one code path for the
default strategy, MirroredStrategy and MultiWorkerMirroredStrategy.

Why not `model.fit`: in Keras 3.15, `fit` under MultiWorkerMirroredStrategy
fails ("unsupported type PerReplica"), while this loop trains identically on 2
workers. The optimizer is built inside the strategy scope before the first
step (keras issue 23085), so its slots are mirrored like the model.

Checkpoints (`tf.train.CheckpointManager`) hold model, optimizer, step, epoch
and the dropout RNG states; the data position follows from the step (see
`Stage._train_iterator`), so `resume=True` continues at the exact step and
data position. TensorFlow writes checkpoint data under temporary names and
updates the `checkpoint` index file last, so a killed run never leaves a
half-written checkpoint as the latest one.

What a stage reads (its input function, steps per epoch, the data checks)
is in `stage_input.py`; its traced train step in `train_step.py`; its
multi-view evaluation in `stage_eval.py`; its CSV and TensorBoard logs in
`run_logs.py`.
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf
import tqdm

from klassterfork import files
from klassterfork.analysis.plot_training import plot_training
from klassterfork.config.loader import ConfigError
from klassterfork.data.reading.bad_records import FILE_NAME as BAD_RECORDS_FILE
from klassterfork.data.reading.bad_records import BadRecordLog, BadRecordsError
from klassterfork.data.reading.bad_records import describe as describe_bad_record
from klassterfork.training import builders, preemption, run_logs, stage_eval
from klassterfork.training import strategy as strategies
# What a stage reads, kept importable from here (runs/, launcher, dry_run).
from klassterfork.training.stage_input import (  # noqa: F401
    check_data, planned_steps, steps_from_manifest, train_input_fn)
from klassterfork.training.train_step import make_sync_fn, make_train_step


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class WorkerLost(RuntimeError):
    """A peer worker of a multi-worker run died; the message says which, the
    last checkpoint step and how to resume."""


def stage_dirs(experiment_dir, stage_index):
    root = os.path.join(experiment_dir, f"stage{stage_index}")
    return {
        "root": root,
        "checkpoints": os.path.join(root, "checkpoints"),
        "tensorboard": os.path.join(root, "tensorboard"),
        "csv": os.path.join(root, "log.csv"),
        "steps_csv": os.path.join(root, "log_steps.csv"),
        "done": os.path.join(root, "DONE"),
        "model": os.path.join(root, "model.keras"),
        "best": os.path.join(root, "best.keras"),
    }


def seed_generator_states(model):
    """The state variables of every Keras `SeedGenerator` in `model`.

    Dropout and other random layers draw from these; `model.weights` leaves
    them out, so without them a resumed run would redraw its dropout masks.
    """
    states = []
    for layer in model._flatten_layers(include_self=True):
        for generator in getattr(layer, "_seed_generators", []):
            states.append(generator.state.value)
    return states


def save_keras_atomic(model, path):
    """`model.save` to a temporary name, then rename (no half-written model)."""
    with files.atomic_path(path) as tmp:
        model.save(tmp)


class Stage:
    """One training stage: built from a resolved stage dict.

    Args:
        stage: dict. The stage config (see design.md, Configs).
        source: config Source, for located errors.
        experiment_dir: str. Where checkpoints, logs and models go.
        stage_index: int.
        strategy: tf.distribute.Strategy.
    """

    def __init__(self, stage, source, *, experiment_dir, stage_index, strategy):
        self.stage, self.source = stage, source
        self.loop = builders.train_loop_config(stage, source)
        self.metrics = builders.metric_names(stage, source)
        self.strategy = strategy
        self.chief = strategies.is_chief(strategy)
        self.multi_worker = strategies.task_info(strategy)[0] is not None
        self.dirs = stage_dirs(experiment_dir, stage_index)
        self.stage_index = stage_index
        datasets = stage.get("datasets") or {}
        self.val_keys = [k for k in datasets if k == "val" or k.startswith("val_")]
        if "train" not in datasets and not self.val_keys:
            raise ConfigError(source, "datasets", "needs a `train` and/or `val` dataset "
                              "(several validation sets are named val_<name>).")
        unknown = [k for k in datasets if k != "train" and k not in self.val_keys]
        if unknown:
            raise ConfigError(source, f"datasets.{unknown[0]}", "unknown dataset role. "
                              "Accepted: train, val, val_<name>")
        self.train_info = None
        if "train" in datasets:
            self.train_info = builders.dataset_info(datasets["train"], source, "datasets.train")
        self.val_sets = {}
        for key in self.val_keys:
            info = builders.dataset_info(datasets[key], source, f"datasets.{key}")
            matrix = builders.class_matrix(datasets[key], source, f"datasets.{key}")
            self.val_sets[key] = (datasets[key], info, matrix)
        self.val_info = self.val_sets[self.val_keys[0]][1] if self.val_keys else None
        self.csv_fields = list(run_logs.TRAIN_CSV_FIELDS)
        for key, (_, _, matrix) in self.val_sets.items():
            prefix = "val_" if key == "val" else f"{key}/"
            names = ("top1", "top5") if matrix is not None else ("loss", "top1", "top5")
            self.csv_fields += [prefix + n for n in names]
        self.csv_fields.append("time")
        info = self.train_info or self.val_info
        self.label_names = info.label_names
        # Zero-shot: the train set's class-name embeddings are the targets.
        self.train_matrix = None
        if "train" in datasets:
            self.train_matrix = builders.class_matrix(datasets["train"], source, "datasets.train")
        seed = int(self.loop["seed"])
        if self.loop["deterministic"]:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(seed)

        self.global_batch = None
        self.steps_per_epoch = 1
        if self.train_info is not None:
            self.global_batch = int(datasets["train"]["batch_size"])
            self.steps_per_epoch = self.loop["steps_per_epoch"] or self._steps_from_manifest()
        policy = self.loop["mixed_precision"] or "float32"
        with strategy.scope():
            num_classes = len(self.label_names) if self.label_names else None
            if self.train_matrix is not None:
                num_classes = None  # an embedding head, not a classifier
            keras.mixed_precision.set_global_policy(policy)
            try:
                self.model = builders.make_model(stage, source, num_classes=num_classes)
            finally:
                # Built layers keep their policy; later stages/tests start clean.
                keras.mixed_precision.set_global_policy("float32")
            self.frozen = builders.apply_freeze(self.model, self.loop["freeze"], source)
            if self.loop["sync_batchnorm"]:
                builders.synchronize_batchnorm(self.model)
            self.loss_fn = builders.make_loss(stage, source)
            self.optimizer = builders.make_optimizer(
                stage, source, steps_per_epoch=self.steps_per_epoch,
                global_batch=self.global_batch,
            )
            if policy == "mixed_float16":
                # float16 gradients underflow without a dynamic loss scale.
                self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
            # Build the optimizer's slots now, inside the scope (keras issue 23085).
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            # The running sums of the epoch in progress (loss, top1, top5,
            # clips, seconds): a run resumed mid-epoch reports the whole epoch.
            self.epoch_sums = tf.Variable(tf.zeros([5], tf.float64), trainable=False,
                                          name="epoch_sums")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.step, epoch=self.epoch,
            rng=seed_generator_states(self.model), epoch_sums=self.epoch_sums,
        )
        self.train_block = datasets.get("train")
        self.seed = seed
        self.bad_records = BadRecordLog(os.path.join(self.dirs["root"], BAD_RECORDS_FILE))

    def _train_iterator(self, *, start_batch):
        """A distributed iterator positioned after `start_batch` global steps.

        The data position is not stored in the checkpoint: the pipeline draws
        every random number from the example's index, so skipping the consumed
        examples before decoding resumes exactly. (TF 2.21's DistributedIterator
        cannot be checkpointed, and a plain iterator's checkpoint would hold
        the whole shuffle buffer of encoded videos.) Each input pipeline (one
        per worker) builds its own per-replica-batch dataset from its share of
        the data; see `train_input_fn`.
        """
        replicas = self.strategy.num_replicas_in_sync
        if self.global_batch % replicas:
            raise ConfigError(
                self.source, "datasets.train.batch_size",
                f"the global batch {self.global_batch} must divide evenly over the "
                f"{replicas} replicas.",
            )
        if self.train_block.get("service"):
            # The tf.data service runs this pipeline on its workers (issue 12).
            from klassterfork.training.service_input import trainer_input_fn

            fn = trainer_input_fn(
                self.train_block, self.train_info, self.source, "datasets.train",
                global_batch=self.global_batch, seed=self.seed, start_step=start_batch,
                run_dir=self.dirs["root"],
            )
        else:
            fn = train_input_fn(
                self.train_block, self.train_info, self.source, "datasets.train",
                global_batch=self.global_batch, seed=self.seed, start_step=start_batch,
                bad_records=self.bad_records,
            )
        return iter(self.strategy.distribute_datasets_from_function(fn))

    def _skip_bad_records(self, err, step, log):
        """A record failed to parse / decode, or a shard to read, in `step`:
        name it in the stage's bad_records.jsonl and rebuild the pipeline at
        this same step without it (see data/reading/bad_records.py).

        Raises:
            `err` when no record of the step's batches fails on its own (not
            the data's fault); ConfigError when the bad records exceed
            datasets.train.max_bad_records.
        """
        batches = self.strategy.num_replicas_in_sync  # one input pipeline here
        try:
            found = self.bad_records.diagnose(step * batches, batches)
        except BadRecordsError as over:
            raise ConfigError(self.source, "datasets.train.max_bad_records", str(over)) from None
        if not found:
            raise err
        for entry in found:
            log(f"skipped bad record: {describe_bad_record(entry)}")
        if self.multi_worker:  # the peers wait in this step's collectives
            raise err
        self.train_iterator = self._train_iterator(start_batch=step)

    def _steps_from_manifest(self):
        return steps_from_manifest(self.train_info, self.stage["datasets"]["train"],
                                   self.source)

    def _predict_fn(self, *, zero_shot, chunked=False):
        """`stage_eval.make_predict_fn` of the model, traced once per mode."""
        cache = self.__dict__.setdefault("_predict_fns", {})
        if (zero_shot, chunked) not in cache:
            cache[zero_shot, chunked] = stage_eval.make_predict_fn(
                self.model, zero_shot=zero_shot, chunked=chunked)
        return cache[zero_shot, chunked]

    # ---- evaluation ----------------------------------------------------------
    def evaluate(self, predictions_dir=None):
        """Multi-view evaluation on every validation set; returns metrics.

        `datasets.val` reports `val_loss`, `val_top1`, `val_top5`; a set named
        `val_<name>` reports `val_<name>/top1` etc. A set with
        `class_embeddings` is scored zero-shot: cosine between the
        clip-averaged, normalized features and its own class matrix. A set
        with `views_per_chunk` is read in chunks of views (bounded memory)
        and averaged per video; the scores equal the unchunked ones.
        """
        if not self.val_sets:
            raise ConfigError(self.source, "datasets", "evaluation needs a `val` dataset.")
        metrics = {}
        for key, (block, info, matrix) in self.val_sets.items():
            prefix = "val_" if key == "val" else f"{key}/"
            path = None
            if predictions_dir and self.chief:
                path = os.path.join(predictions_dir, f"predictions_{key}")
            out = stage_eval.evaluate_set(self._predict_fn, key, block, info, matrix,
                                          self.source, predictions_path=path)
            metrics.update({prefix + k: v for k, v in out.items()})
        return metrics

    # ---- training ------------------------------------------------------------
    def restore(self, checkpoint_dir, *, model_only=False):
        latest = tf.train.latest_checkpoint(checkpoint_dir)
        if latest is None:
            return None
        target = tf.train.Checkpoint(model=self.model) if model_only else self.checkpoint
        status = target.restore(latest)
        status.expect_partial()
        return latest

    def train(self, *, resume=False, previous_checkpoints=None, log=print, signals=None):
        """Runs the stage to its last epoch (or `stop_after_steps`).

        Args:
            resume: bool. Continue from the stage's latest checkpoint.
            previous_checkpoints: str or None. The previous stage's
                checkpoint folder: its weights start this stage.
            log: callable(str).
            signals: `preemption.SignalWatcher` or None. Once it has
                received a signal (on any worker), the stage stops after the
                step in progress with a checkpoint and returns
                `{"preempted": "SIGTERM", ...}`.

        Returns:
            dict: `step`, `stopped`, `preempted` (signal name or None) and
            the last epoch's metrics.

        Raises:
            WorkerLost: a peer of a multi-worker run died (instead of the
                collective op's error).
        """
        try:
            return self._train(resume, previous_checkpoints, log,
                               signals or preemption.NoSignals())
        except tf.errors.OpError as err:
            if not self.multi_worker or not preemption.is_peer_failure(err):
                raise
            last = tf.train.latest_checkpoint(self.dirs["checkpoints"])
            raise WorkerLost(preemption.worker_lost_message(
                err, self.strategy, last, self.stage_index)) from None

    def _train(self, resume, previous_checkpoints, log, signals):
        loop, dirs = self.loop, self.dirs
        write_ckpt_dir = strategies.write_dir(dirs["checkpoints"], self.strategy)
        manager = tf.train.CheckpointManager(
            self.checkpoint, write_ckpt_dir, max_to_keep=int(loop["keep_checkpoints"])
        )
        if tf.train.latest_checkpoint(dirs["checkpoints"]):
            if not resume:
                raise ConfigError(
                    self.source, "meta.experiment_dir", f"{dirs['checkpoints']} already holds "
                    "checkpoints: resume with -r, or choose another experiment_dir."
                )
            restored = self.restore(dirs["checkpoints"])
            log(f"resumed from {restored} at step {int(self.step.numpy())}")
            if self.chief:
                run_logs.truncate_rows((self.dirs["steps_csv"], self.dirs["csv"]),
                                       int(self.step.numpy()), log)
        elif previous_checkpoints:
            restored = self.restore(previous_checkpoints, model_only=True)
            if restored:
                log(f"stage {self.stage_index}: weights from {restored}")

        spe = self.steps_per_epoch
        total = int(loop["epochs"]) * spe
        self.train_iterator = self._train_iterator(start_batch=int(self.step.numpy()))
        stop_after = loop["stop_after_steps"]
        train_step = make_train_step(
            self.model, self.optimizer, self.loss_fn, self.strategy, self.step,
            global_batch=self.global_batch, class_matrix=self.train_matrix,
            jit_compile=loop["jit_compile"],
        )
        sync_replicas = make_sync_fn(self.model, self.strategy)
        writer = tf.summary.create_file_writer(
            strategies.write_dir(dirs["tensorboard"], self.strategy)
        )
        os.makedirs(dirs["root"], exist_ok=True)
        log(
            f"stage {self.stage_index}: {self.strategy.num_replicas_in_sync} replica(s), "
            f"global batch {self.global_batch} "
            f"({self.global_batch // self.strategy.num_replicas_in_sync} per replica), "
            f"{spe} steps/epoch, {loop['epochs']} epochs"
        )
        # A resumed stage keeps the best so far (else its first evaluation
        # would overwrite best.keras whatever it scored).
        best = run_logs.best_logged(dirs["csv"], loop["best_metric"], int(self.step.numpy()))
        metrics = {}
        while int(self.step.numpy()) < total:
            step = int(self.step.numpy())
            epoch = step // spe
            self.epoch.assign(epoch)
            sums = {"loss": 0.0, "top1": 0.0, "top5": 0.0, "count": 0.0}
            carried = 0.0
            if step > epoch * spe:  # resumed mid-epoch: the sums so far
                saved = self.epoch_sums.numpy()
                sums = dict(zip(sums, (float(x) for x in saved[:4])))
                carried = float(saved[4])
            epoch_end = (epoch + 1) * spe
            bar = tqdm.tqdm(
                total=epoch_end - step, desc=f"epoch {epoch + 1}/{loop['epochs']}",
                disable=not (loop["progress"] and self.chief), mininterval=2.0, leave=False,
            )
            started = time.perf_counter() - carried
            stopped = preempted = False
            while step < epoch_end:
                requested = 1.0 if signals.received else 0.0
                try:
                    out = train_step(self.train_iterator, tf.constant(requested))
                except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as err:
                    self._skip_bad_records(err, step, log)  # re-raises if not the data's
                    continue
                step += 1
                values = {k: float(v) for k, v in out.items()}
                if not np.isfinite(values["loss"]):
                    bar.close()
                    last = tf.train.latest_checkpoint(dirs["checkpoints"])
                    raise TrainingDiverged(
                        f"loss is {values['loss']} at step {step} (epoch {epoch + 1}); "
                        f"stopped. Last good checkpoint: {last or 'none'}. Lower the "
                        "learning rate or enable train_loop.global_clipnorm, then resume with -r."
                    )
                for k in sums:
                    sums[k] += values[k]
                rate = sums["count"] / max(time.perf_counter() - started, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{sums['loss'] / sums['count']:.3f}", clips_s=f"{rate:.1f}")
                if step % int(loop["log_every_steps"]) == 0 and self.chief:
                    row = {
                        "step": step, "epoch": epoch + 1,
                        "loss": values["loss"] / values["count"],
                        "lr": builders.current_lr(self.optimizer), "clips_per_s": rate,
                    }
                    run_logs.append_step(self.dirs["steps_csv"], row, writer)
                # Any worker's signal (the all-reduced flag) stops every worker
                # after this same step; a lone worker also stops on its own
                # signal that arrived during the step.
                preempted = values["stop"] > 0 or (signals.received and not self.multi_worker)
                if (step % int(loop["checkpoint_every_steps"]) == 0 and step < epoch_end) or (
                        preempted and step < epoch_end):
                    self._save_epoch_sums(sums, time.perf_counter() - started)
                    sync_replicas()
                    manager.save(checkpoint_number=step)
                if preempted or (stop_after is not None and step >= int(stop_after)):
                    stopped = True
                    break
            bar.close()
            elapsed = time.perf_counter() - started
            sync_replicas()
            if stopped and not preempted:
                self._save_epoch_sums(sums, elapsed)
                manager.save(checkpoint_number=step)
                log(f"stopped after step {step} (train_loop.stop_after_steps)")
                strategies.remove_worker_dir(write_ckpt_dir, self.strategy)
                return {"step": step, "stopped": True, "preempted": None}
            if preempted and step < epoch_end:
                return self._preempted(step, total, signals, manager, writer, log)
            # A signal during an epoch's last step: the epoch ends as usual
            # (evaluation, checkpoint, log row), then the run stops.
            count = max(sums["count"], 1.0)
            metrics = {
                "epoch": epoch + 1,
                "step": step,
                "loss": sums["loss"] / count,
                "top1": sums["top1"] / count,
                "top5": sums["top5"] / count,
                "lr": builders.current_lr(self.optimizer),
                "clips_per_s": sums["count"] / max(elapsed, 1e-9),
                "time": elapsed,
            }
            last_epoch = step >= total
            if self.val_sets and (
                last_epoch or (epoch + 1) % int(loop["eval_every_epochs"]) == 0
            ):
                metrics.update(self.evaluate())
                plateau = builders.plateau_controller(self.optimizer)
                if plateau is not None:
                    if plateau.monitor not in metrics:
                        raise ConfigError(
                            self.source, "optimizer", f"ReduceOnPlateau monitors "
                            f"{plateau.monitor!r}, which evaluation does not report. "
                            f"Reported: {', '.join(sorted(metrics))}"
                        )
                    if plateau.update(metrics[plateau.monitor]) == "stop":
                        log(f"learning rate fell below last_lr: stopping after epoch {epoch + 1}")
                        total = step  # finishes this epoch as the last one
            self.epoch.assign(epoch + 1)
            self.epoch_sums.assign(tf.zeros([5], tf.float64))
            manager.save(checkpoint_number=step)
            if self.chief:
                run_logs.append_epoch(self.dirs["csv"], self.csv_fields, metrics, writer)
                key = loop["best_metric"]
                sign = -1.0 if key.endswith("loss") else 1.0
                if key in metrics and sign * metrics[key] > best:
                    best = sign * metrics[key]
                    save_keras_atomic(self.model, dirs["best"])
            log(run_logs.format_metrics(metrics))
            if preempted and step < total:
                return self._preempted(step, total, signals, manager, writer, log)
        strategies.remove_worker_dir(write_ckpt_dir, self.strategy)
        if self.chief:
            save_keras_atomic(self.model, dirs["model"])
            if loop["plot"] and os.path.exists(dirs["csv"]):
                plot_training(dirs["csv"], os.path.join(dirs["root"], "training_curves.png"))
            with open(dirs["done"], "w") as f:
                f.write(f"{int(self.step.numpy())}\n")
        return {"step": int(self.step.numpy()), "stopped": False, "preempted": None, **metrics}

    def _preempted(self, step, total, signals, manager, writer, log):
        """Flushes the logs after the preemption checkpoint; the result."""
        writer.flush()
        strategies.remove_worker_dir(manager.directory, self.strategy)
        cause = signals.name or "a signal to another worker"
        log(f"stage {self.stage_index}: stopped by {cause} after step {step} of {total}; "
            f"checkpoint ckpt-{step} saved, logs flushed.")
        return {"step": step, "stopped": True, "preempted": cause}

    def _save_epoch_sums(self, sums, seconds):
        values = [sums["loss"], sums["top1"], sums["top5"], sums["count"], seconds]
        self.epoch_sums.assign(tf.constant(values, tf.float64))
