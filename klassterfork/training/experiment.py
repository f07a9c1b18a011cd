"""A config's stages, run as one experiment (what `kf-train` does).

`Experiment(stages, source, options).run()` validates every stage, creates
the strategy, checks the data, writes `config.resolved.json` into the
experiment folder and then either trains the stages in order (a later stage
starts from the weights of the one before; `-r` resumes the first unfinished
one and trains a finished one on when its config now plans more epochs) or,
with `-e`, evaluates a checkpoint. It returns the exit status.

Other ways to run a config are functions that prepare stages and options and
then run an `Experiment`: `dry_run` (`--dry-run`: 2 steps per stage on tiny
generated stand-in data, in a temporary folder). A `--smoke` mode (a few
steps and a few evaluation batches on the real records, in a temporary
experiment folder) belongs beside it: copies of the stages with
`train_loop.stop_after_steps` and an evaluation limit, `Options` with a
temporary `experiment_dir`, then `Experiment(...).run()`.
"""

import dataclasses
import os
import shutil
import sys
import tempfile

import tensorflow as tf

from klassterfork import exit_codes, files, out_of_space
from klassterfork.config.loader import ConfigError
from klassterfork.files import write_json_atomic
from klassterfork.training import builders, tracking
from klassterfork.training import strategy as strategies
from klassterfork.training.trainer import Stage, check_data, planned_steps, stage_dirs


@dataclasses.dataclass
class Options:
    """How to run the stages (the kf-train flags).

    Attributes:
        resume: bool. `-r`: continue from the latest checkpoints.
        evaluate: bool. `-e`: evaluate instead of training.
        checkpoint: str or None. `--checkpoint`: what `-e` evaluates.
        experiment_dir: str or None. Overrides `meta.experiment_dir`.
        resume_command: str. The command line that resumes this run
            (printed when the run is preempted).
        check_data: bool. Check the data against its manifests first.
    """

    resume: bool = False
    evaluate: bool = False
    checkpoint: str | None = None
    experiment_dir: str | None = None
    resume_command: str = "kf-train CONFIG -r"
    check_data: bool = True


def warn(text):
    print(f"kf-train: warning: {text}", file=sys.stderr)


class Experiment:
    """The stages of one config and where they run.

    Args:
        stages: list of resolved stage dicts.
        source: config Source, for located errors.
        options: `Options`.
        signals: `preemption.SignalWatcher` or None.

    Raises (from the constructor): ConfigError for an unknown `train_loop`
    key of any stage.
    """

    def __init__(self, stages, source, options, *, signals=None):
        self.stages, self.source, self.options = stages, source, options
        self.signals = signals
        # Each stage's resolved train_loop, once; the stages and checks get it.
        self.loops = [builders.train_loop_config(stage, source) for stage in stages]
        meta = stages[-1].get("meta") or {}
        name = meta.get("name") or os.path.splitext(os.path.basename(source.path))[0]
        self.experiment_dir = (options.experiment_dir or meta.get("experiment_dir")
                               or os.path.join("experiments", name))
        self.strategy = None
        self.tracking_run = None  # the chief's tracking.MlflowRun while training

    def run(self):
        """Trains (or with `options.evaluate` evaluates); the exit status.

        Names, arguments and values first (`builders.validate_stage` runs no
        TensorFlow op): a typo fails in a second, before any data is read or
        any worker waits. Then the strategy: logical CPU devices and
        MultiWorkerMirrored's collectives must be configured before anything
        starts TensorFlow's runtime.
        """
        for stage in self.stages:
            builders.validate_stage(stage, self.source)
        self.strategy = self._make_strategy()
        if self.options.check_data:
            # The data against its manifest, before step 1. After the strategy:
            # reading records starts TensorFlow's runtime, and MultiWorkerMirrored
            # must configure its collectives before that.
            for stage in self.stages:
                check_data(stage, self.source, warn=warn)
        if self.signals is not None:
            self.signals.install()  # over the handler a multi-worker strategy installs
        files.makedirs(self.experiment_dir)  # local, gs://, ram:// (files.py)
        if strategies.is_chief(self.strategy):
            # A killed run's unfinished `ckpt-N_temp` folders (out_of_space.py).
            out_of_space.remove_checkpoint_temps(self.experiment_dir, log=warn)
            write_json_atomic(os.path.join(self.experiment_dir, "config.resolved.json"),
                              self.stages)
        if self.options.evaluate:
            return self.evaluate()
        if strategies.is_chief(self.strategy):  # MLflow, when the config has `tracking`
            self.tracking_run = tracking.start_run(
                self.stages, self.source, self.experiment_dir, resume=self.options.resume)
        try:
            return tracking.run_tracked(self.tracking_run, self.train)
        except ConfigError as err:
            if strategies.task_info(self.strategy)[0] is None:
                raise
            # Multi-worker: every worker raises it after the same step (the
            # bad-record budget's vote, hooks.BadRecordHook). A normal exit
            # aborted there ("terminate called without an active exception",
            # status 134: tf.data's read-ahead threads were still running), so
            # print what kf-train prints and exit without teardown, as a
            # worker that lost a peer does; everything is written.
            print(f"kf-train: config error: {err}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(exit_codes.CONFIG_ERROR)

    def _make_strategy(self):
        first = self.loops[0]
        if first["logical_cpu_devices"]:
            strategies.split_cpu(first["logical_cpu_devices"])
        try:
            return strategies.make_strategy(first["strategy"], first["devices"],
                                            cluster=first["cluster"])
        except ValueError as err:
            key = "train_loop.cluster" if "cluster" in str(err) else "train_loop.strategy"
            raise ConfigError(self.source, key, str(err)) from None

    def stage(self, index):
        """The built `Stage` of stage `index`."""
        return Stage(self.stages[index], self.source, experiment_dir=self.experiment_dir,
                     stage_index=index, strategy=self.strategy, loop=self.loops[index],
                     tracking_run=self.tracking_run)

    # ---- training ------------------------------------------------------------
    def train(self):
        """Every stage in order; the exit status."""
        previous, result, stage = None, {}, None
        for index in range(len(self.stages)):
            dirs = stage_dirs(self.experiment_dir, index)
            if files.exists(dirs["done"]) and self._is_complete(index, dirs["done"]):
                previous = dirs["checkpoints"]
                continue
            stage = self.stage(index)
            result = stage.train(resume=self.options.resume, previous_checkpoints=previous,
                                 signals=self.signals)
            if result.get("preempted"):
                print(f"kf-train: preempted ({result['preempted']}) after step "
                      f"{result['step']} of stage {index}: checkpoint saved, nothing lost. "
                      f"Resume: {self.options.resume_command}", file=sys.stderr)
                return exit_codes.PREEMPTED
            if result.get("stopped"):
                return exit_codes.OK
            previous = dirs["checkpoints"]
        task_type, task_id = strategies.task_info(self.strategy)
        if task_type is not None and result:
            from klassterfork.training.cluster import weights_digest

            # Every worker ends with the same weights; this line lets one check it.
            print(f"{task_type} {task_id}: final weights sha256 {weights_digest(stage.model)}")
        if strategies.is_chief(self.strategy):
            dirs = stage_dirs(self.experiment_dir, len(self.stages) - 1)
            print(f"checkpoints: {dirs['checkpoints']}")
            print(f"CSV log:     {dirs['csv']}")
            print(f"TensorBoard: tensorboard --logdir {dirs['tensorboard']}")
            print(f"model:       {dirs['model']}")
        return exit_codes.OK

    def _is_complete(self, index, done_path):
        """A stage with a DONE marker: True when it is complete (skipped);
        False when the config now plans more steps (it trains on, `-r` only).

        Raises:
            ConfigError: without `-r`, or when a later stage has started.
        """
        if not self.options.resume:
            raise ConfigError(
                self.source, "meta.experiment_dir", f"{self.experiment_dir} already holds "
                "a finished run: resume with -r, or choose another experiment_dir."
            )
        with files.open_file(done_path) as f:
            done_step = int(f.read().split()[0])
        planned = planned_steps(self.stages[index], self.source)
        if planned is None or done_step >= planned:
            print(f"stage {index}: already complete at step {done_step} "
                  f"(the config plans {planned}), skipped")
            return True
        check_extension(self.stages, self.source, self.experiment_dir, index, done_step)
        print(f"stage {index}: finished at step {done_step}; the config now plans "
              f"{planned} steps (train_loop.epochs): training on")
        return False

    # ---- -e ------------------------------------------------------------------
    def evaluate(self):
        """`-e`: the last stage's model from `options.checkpoint` or the latest
        checkpoint of the last stage that has one, on its validation sets;
        predictions and eval_metrics.json in its folder. The exit status."""
        index = len(self.stages) - 1
        stage, dirs = self.stage(index), stage_dirs(self.experiment_dir, index)
        restored = self._restore_for_evaluation(stage, index)
        if not restored:
            print(f"kf-train: no checkpoint under {self.experiment_dir} to evaluate.",
                  file=sys.stderr)
            return exit_codes.FAILED
        metrics = stage.evaluate(predictions_dir=dirs["root"])
        print(f"evaluated {restored}")
        for key in stage.val_keys:
            prefix = "val_" if key == "val" else f"{key}/"
            print(f"{key}: top-1 {metrics[prefix + 'top1']:.4f}  top-5 "
                  f"{metrics[prefix + 'top5']:.4f}  ({metrics[prefix + 'videos']} videos)  "
                  f"predictions: {os.path.join(dirs['root'], 'predictions_' + key)}.npz/.json")
        if strategies.is_chief(self.strategy):
            write_json_atomic(os.path.join(dirs["root"], "eval_metrics.json"), metrics)
        return exit_codes.OK

    def _restore_for_evaluation(self, stage, index):
        """What `-e` evaluates, restored into `stage`; None when nothing is."""
        checkpoint = self.options.checkpoint
        restored = None
        if checkpoint and files.isdir(checkpoint):
            restored = stage.restore(checkpoint)
        if checkpoint and not restored:
            stage.checkpoint.restore(checkpoint).expect_partial()
            restored = checkpoint
        for i in range(index, -1, -1):
            if restored:
                break
            restored = stage.restore(stage_dirs(self.experiment_dir, i)["checkpoints"],
                                     model_only=True)
        return restored


def check_extension(stages, source, experiment_dir, index, done_step):
    """A finished stage may train on (more epochs) only if no later stage has
    started from its weights."""
    for later in range(index + 1, len(stages)):
        if tf.train.latest_checkpoint(stage_dirs(experiment_dir, later)["checkpoints"]):
            raise ConfigError(
                source, "train_loop.epochs", f"stage {index} finished at step {done_step} "
                f"and stage {later} has already trained from its weights; only the last "
                "started stage can be extended (start a new experiment_dir instead)."
            )


def dry_run(stages, source, options):
    """`--dry-run`: checks the real config and data, then builds every stage
    and trains it 2 steps on tiny generated stand-in data in a temporary
    folder (`training/dry_run.py`). The exit status."""
    from klassterfork.training.dry_run import tiny_stages

    # The real config and data first: the stand-in copies clamp batch sizes
    # and invent frames, so they would hide both kinds of error.
    missing = []
    for stage in stages:
        builders.validate_stage(stage, source)
        missing += [m for m in check_data(stage, source, warn=warn, missing_ok=True)
                    if m not in missing]
    for item in missing:
        warn(f"{source.path}: {item}: data checks skipped; the recipe runs on "
             "generated stand-in data only.")
    workdir = tempfile.mkdtemp(prefix="kf_dry_run_")
    try:
        tiny = tiny_stages(stages, workdir)
        tiny_options = dataclasses.replace(options, experiment_dir=None, check_data=False)
        code = Experiment(tiny, source, tiny_options).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if code == 0:
        data = (f"data NOT checked (not found): {', '.join(missing)}" if missing
                else "data checked against the manifests")
        print(f"dry run OK: {len(stages)} stage(s) built and trained 2 steps each; {data}")
    return code


def smoke_run(stages, source, options):
    """`--smoke`: the real config on the real records, a few steps per
    stage and a few validation videos, in a temporary folder removed at the
    end (`training/smoke.py`). Missing data is an error here. The exit
    status."""
    from klassterfork.training.smoke import SMOKE_STEPS, SMOKE_VIDEOS, smoke_stages

    for stage in stages:
        builders.validate_stage(stage, source)
        check_data(stage, source, warn=warn)
    workdir = tempfile.mkdtemp(prefix="kf_smoke_")
    try:
        small = smoke_stages(stages, source, workdir)
        small_options = dataclasses.replace(options, experiment_dir=None, check_data=False,
                                            resume=False, evaluate=False)
        code = Experiment(small, source, small_options).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if code == 0:
        print(f"smoke OK: {len(stages)} stage(s) trained {SMOKE_STEPS} steps each on the "
              f"real records and evaluated {SMOKE_VIDEOS} videos per validation set; "
              "nothing written outside a temporary folder")
    return code
