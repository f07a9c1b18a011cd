"""One training stage: its model, optimizer, loss, data and checkpoint, and
its training through our own `strategy.run` loop (one code path for the
default strategy, MirroredStrategy and MultiWorkerMirroredStrategy).

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

The step loop is `loop.TrainLoop`; what happens around the steps
(checkpoints, preemption, bad records, logs, evaluation, best and final
model) are its hooks (`hooks.py`, assembled in `Stage._hooks`). What a stage
reads (its input function, steps per epoch, the data checks) is in
`stage_input.py`; its traced train step in `train_step.py`; its multi-view
evaluation in `stage_eval.py`; its CSV and TensorBoard logs in `run_logs.py`.
A whole config's stages are run by `experiment.Experiment`.
"""

import os
from functools import partial

import keras
import tensorflow as tf

from klassterfork import files
from klassterfork.config.loader import ConfigError
from klassterfork.data.reading.bad_records import FILE_NAME as BAD_RECORDS_FILE
from klassterfork.data.reading.bad_records import BadRecordLog
from klassterfork.training import builders, hooks, preemption, run_logs, stage_eval
from klassterfork.training import strategy as strategies

# Kept importable from here (tests, cli, runs/).
from klassterfork.training.hooks import TrainingDiverged, save_keras_atomic  # noqa: F401
from klassterfork.training.launcher import EVERY_WORKER_SIGNALLED
from klassterfork.training.loop import TrainLoop

# What a stage reads, kept importable from here (runs/, launcher, dry_run).
from klassterfork.training.stage_input import (  # noqa: F401
    check_data,
    planned_steps,
    steps_from_manifest,
    train_input_fn,
)
from klassterfork.training.tracking import MlflowHook
from klassterfork.training.train_step import make_sync_fn, make_train_step


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


class Stage:
    """One training stage: built from a resolved stage dict.

    Args:
        stage: dict. The stage config (see docs/design.md, "Configs").
        source: config Source, for located errors.
        experiment_dir: str. Where checkpoints, logs and models go.
        stage_index: int.
        strategy: tf.distribute.Strategy.
        loop: dict or None. The stage's resolved `train_loop`
            (`builders.train_loop_config`), when the caller has it.
    """

    def __init__(self, stage, source, *, experiment_dir, stage_index, strategy, loop=None,
                 tracking_run=None):
        self.stage, self.source = stage, source
        self.tracking_run = tracking_run  # tracking.MlflowRun (chief) or None
        self.loop = loop if loop is not None else builders.train_loop_config(stage, source)
        self.metrics = builders.metric_names(stage, source)
        self.strategy = strategy
        self.chief = strategies.is_chief(strategy)
        self.multi_worker = strategies.task_info(strategy)[0] is not None
        self.dirs = stage_dirs(experiment_dir, stage_index)
        self.stage_index = stage_index
        datasets = stage.get("datasets") or {}
        self._read_datasets(datasets)
        info = self.train_info or self.val_info
        self.label_names = info.label_names
        # Zero-shot: the train set's class-name embeddings are the targets.
        self.train_matrix = None
        if "train" in datasets:
            self.train_matrix = self._class_matrix(datasets, "train", self.train_info)
        seed = int(self.loop["seed"])
        if self.loop["deterministic"]:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(seed)

        self.global_batch = None
        self.steps_per_epoch = 1
        if self.train_info is not None:
            self.global_batch = int(datasets["train"]["batch_size"])
            self.steps_per_epoch = self.loop["steps_per_epoch"] or self._steps_from_manifest()
        with strategy.scope():
            self._build_model_and_optimizer()
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

    def _read_datasets(self, datasets):
        """The roles of `datasets` (train, val, val_<name>), their infos and
        class matrices, and the columns of log.csv."""
        source = self.source
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
            matrix = self._class_matrix(datasets, key, info)
            self.val_sets[key] = (datasets[key], info, matrix)
        self.val_info = self.val_sets[self.val_keys[0]][1] if self.val_keys else None
        self.csv_fields = list(run_logs.TRAIN_CSV_FIELDS)
        for key, (_, _, matrix) in self.val_sets.items():
            prefix = "val_" if key == "val" else f"{key}/"
            names = ("top1", "top5") if matrix is not None else ("loss", "top1", "top5")
            self.csv_fields += [prefix + n for n in names]
        self.csv_fields.append("time")

    def _class_matrix(self, datasets, key, info):
        """`datasets.<key>.class_embeddings`, checked against the head's
        `units` and the dataset's class count before anything trains."""
        names = info.label_names
        return builders.class_matrix(
            datasets[key], self.source, f"datasets.{key}",
            units=builders.embedding_units(self.stage),
            num_classes=len(names) if names else None)

    def _build_model_and_optimizer(self):
        """Model, frozen layers, loss and optimizer (with its slots), inside
        the strategy's scope."""
        stage, source, loop = self.stage, self.source, self.loop
        policy = loop["mixed_precision"] or "float32"
        num_classes = len(self.label_names) if self.label_names else None
        if self.train_matrix is not None:
            num_classes = None  # an embedding head, not a classifier
        keras.mixed_precision.set_global_policy(policy)
        try:
            self.model = builders.make_model(stage, source, num_classes=num_classes)
        finally:
            # Built layers keep their policy; later stages/tests start clean.
            keras.mixed_precision.set_global_policy("float32")
        self.frozen = builders.apply_freeze(self.model, loop["freeze"], source)
        if loop["sync_batchnorm"]:
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
                run_dir=self.dirs["root"], bad_records=self.bad_records,
            )
        else:
            fn = train_input_fn(
                self.train_block, self.train_info, self.source, "datasets.train",
                global_batch=self.global_batch, seed=self.seed, start_step=start_batch,
                bad_records=self.bad_records,
            )
        return iter(self.strategy.distribute_datasets_from_function(fn))

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
    def evaluate(self, predictions_dir=None, should_stop=None):
        """Multi-view evaluation on every validation set; returns metrics.

        `datasets.val` reports `val_loss`, `val_top1`, `val_top5`; a set named
        `val_<name>` reports `val_<name>/top1` etc. A set with
        `class_embeddings` is scored zero-shot: cosine between the
        clip-averaged, normalized features and its own class matrix. A set
        with `views_per_chunk` is read in chunks of views (bounded memory)
        and averaged per video; the scores equal the unchunked ones. A bad
        record is skipped and named in bad_records.jsonl (`*skipped`);
        `should_stop()` (asked between batches) raises
        `stage_eval.EvaluationInterrupted`.
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
                                          self.source, predictions_path=path,
                                          bad_records=self.bad_records,
                                          should_stop=should_stop)
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
            if not self.multi_worker or not preemption.is_peer_failure(err, self.strategy):
                raise
            last = tf.train.latest_checkpoint(self.dirs["checkpoints"])
            raise WorkerLost(preemption.worker_lost_message(
                err, self.strategy, last, self.stage_index,
                dump_dir=self.dirs["root"])) from None

    def _train(self, resume, previous_checkpoints, log, signals):
        loop, dirs = self.loop, self.dirs
        write_ckpt_dir = strategies.write_dir(dirs["checkpoints"], self.strategy)
        manager = tf.train.CheckpointManager(
            self.checkpoint, write_ckpt_dir, max_to_keep=int(loop["keep_checkpoints"])
        )
        self._restore_for_training(resume, previous_checkpoints, log)
        spe = self.steps_per_epoch
        start = int(self.step.numpy())
        iterator = self._train_iterator(start_batch=start)
        train_step = make_train_step(
            self.model, self.optimizer, self.loss_fn, self.strategy, self.step,
            global_batch=self.global_batch, class_matrix=self.train_matrix,
            jit_compile=loop["jit_compile"],
        )

        def one_step(iterator, stop_flag):
            out = train_step(iterator, tf.constant(stop_flag))
            return {k: float(v) for k, v in out.items()}

        files.makedirs(dirs["root"])  # local, gs://, ram:// (files.py)
        log(
            f"stage {self.stage_index}: {self.strategy.num_replicas_in_sync} replica(s), "
            f"global batch {self.global_batch} "
            f"({self.global_batch // self.strategy.num_replicas_in_sync} per replica), "
            f"{spe} steps/epoch, {loop['epochs']} epochs"
        )
        train_loop = TrainLoop(one_step, iterator, step=start,
                               steps_per_epoch=spe, total_steps=int(loop["epochs"]) * spe)
        return train_loop.run(self._hooks(manager, log, signals))

    def _restore_for_training(self, resume, previous_checkpoints, log):
        """Resumes from the stage's own latest checkpoint (cutting the CSV
        rows logged after it), or starts from the previous stage's weights."""
        dirs = self.dirs
        if tf.train.latest_checkpoint(dirs["checkpoints"]):
            if not resume:
                raise ConfigError(
                    self.source, "meta.experiment_dir", f"{dirs['checkpoints']} already holds "
                    "checkpoints: resume with -r, or choose another experiment_dir."
                )
            restored = self.restore(dirs["checkpoints"])
            log(f"resumed from {restored} at step {int(self.step.numpy())}")
            if self.chief:
                run_logs.truncate_rows((dirs["steps_csv"], dirs["csv"]),
                                       int(self.step.numpy()), log)
            if self.stage.get("init_weights"):
                log(f"stage {self.stage_index}: init_weights not loaded: the stage "
                    "resumes from its own checkpoint")
        elif previous_checkpoints:
            restored = self.restore(previous_checkpoints, model_only=True)
            if restored:
                log(f"stage {self.stage_index}: weights from {restored}"
                    + (" (init_weights, inherited from an earlier stage, not loaded)"
                       if self.stage.get("init_weights") else ""))
        elif self.stage.get("init_weights"):
            self._load_init_weights(log)

    def _load_init_weights(self, log):
        """`init_weights`: the pretrained file into the model (every worker
        alike), `init_report.json` in the stage folder, one log paragraph."""
        from klassterfork.weights import init_weights

        config = builders.init_weights_config(self.stage, self.source)
        try:
            report = init_weights.load_into(self.model, config["path"],
                                            exclude=config["exclude"],
                                            strict=config["strict"])
        except init_weights.InitWeightsError as err:
            raise ConfigError(self.source, "init_weights.path", str(err)) from None
        if self.chief:
            os.makedirs(self.dirs["root"], exist_ok=True)
            files.write_json_atomic(os.path.join(self.dirs["root"], "init_report.json"),
                                    report.to_json())
        log(f"stage {self.stage_index}: {report.paragraph()}")

    def _eval_signals(self, signals):
        """What evaluation watches for a signal: every process alone, but a
        multi-worker evaluation only when every worker gets the signal (the
        local launcher forwards it to all); a worker that stopped evaluating
        alone would leave its peers waiting in the next collective (exit 76).
        Otherwise the all-reduced flag stops every worker after the next step."""
        if not self.multi_worker or os.environ.get(EVERY_WORKER_SIGNALLED) == "1":
            return signals
        return None

    def _hooks(self, manager, log, signals):
        """The training loop's hooks, in order (see training/hooks.py): a new
        concern is one `Hook` class plus one line here."""
        loop, dirs, chief = self.loop, self.dirs, self.chief
        writer = tf.summary.create_file_writer(
            strategies.write_dir(dirs["tensorboard"], self.strategy))
        lr = partial(builders.current_lr, self.optimizer)
        checkpoints = hooks.CheckpointHook(
            manager, epoch=self.epoch, sync_replicas=make_sync_fn(self.model, self.strategy),
            every_steps=loop["checkpoint_every_steps"], log=log,
            stop_after_steps=loop["stop_after_steps"],
            cleanup=partial(strategies.remove_worker_dir, manager.directory, self.strategy))
        out = [
            hooks.PreemptionHook(signals, multi_worker=self.multi_worker,
                                 stage_index=self.stage_index, log=log),
            hooks.BadRecordHook(self.bad_records, log=log, source=self.source,
                                batches_per_step=self.strategy.num_replicas_in_sync,
                                rebuild=lambda step: self._train_iterator(start_batch=step),
                                multi_worker=self.multi_worker),
            hooks.NanCheckHook(dirs["checkpoints"]),
            hooks.EpochMetricsHook(self.epoch_sums, lr),
            hooks.ProgressBarHook(epochs=loop["epochs"], enabled=loop["progress"] and chief),
            hooks.StepLogHook(dirs["steps_csv"], writer, every_steps=loop["log_every_steps"],
                              current_lr=lr, chief=chief),
            checkpoints,
        ]
        if self.val_sets:
            out.append(hooks.EvalHook(
                self.evaluate, every_epochs=loop["eval_every_epochs"],
                optimizer=self.optimizer, source=self.source, resave=checkpoints.save,
                log=log, signals=self._eval_signals(signals),
                pending_path=hooks.pending_eval_path(
                    dirs["root"], strategies.task_info(self.strategy)[:2])))
        out += [
            hooks.EpochLogHook(dirs["csv"], self.csv_fields, writer, chief=chief, log=log),
            hooks.BestModelHook(self.model, dirs["best"], csv_path=dirs["csv"],
                                key=loop["best_metric"], chief=chief),
            hooks.FinalModelHook(self.model, dirs, step=self.step, plot=loop["plot"],
                                 chief=chief),
        ]
        if self.tracking_run is not None and chief:  # after FinalModelHook: its files
            out.append(MlflowHook(self.tracking_run, stage_index=self.stage_index,
                                  every_steps=loop["log_every_steps"],
                                  current_lr=lr, dirs=dirs))
        if self.val_sets:  # last: an evaluation a signal or a crash left pending
            out.append(hooks.PendingEvalHook(out, log=log))
        return out
