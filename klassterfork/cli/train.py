"""`kf-train` = `python runs/train.py CONFIG [-r] [-e] [--set k=v] [--print-config]`.

Trains every stage of a config in order (a later stage starts from the weights
of the one before), or with `-e` evaluates the latest checkpoint (or
`--checkpoint`) on `datasets.val` and writes a predictions file.
"""

import argparse
import json
import os
import shlex
import sys

from klassterfork import exit_codes

RUNS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "runs")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kf-train", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="config path, or a bare file name found under runs/")
    parser.add_argument("-r", "--resume", action="store_true",
                        help="resume from the latest checkpoint of the experiment")
    parser.add_argument("-e", "--evaluate", action="store_true",
                        help="evaluate the latest (or --checkpoint) checkpoint on datasets.val")
    parser.add_argument("--checkpoint", help="checkpoint prefix to evaluate with -e")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train_loop.epochs=3")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved stages as JSON and exit")
    parser.add_argument("--experiment-dir", help="overrides meta.experiment_dir")
    parser.add_argument("--dry-run", action="store_true",
                        help="build everything and run 2 steps per stage on a tiny "
                             "generated stand-in dataset")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="start N MultiWorkerMirrored processes on 127.0.0.1, each "
                             "with its TF_CONFIG (training/launcher.py)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from klassterfork.config.loader import ConfigError, find_config, load

    try:
        path = find_config(args.config, RUNS_DIR)
        stages, source = load(path, args.set)
    except ConfigError as err:
        print(f"kf-train: config error: {err}", file=sys.stderr)
        return exit_codes.CONFIG_ERROR
    if args.print_config:
        print(json.dumps(stages, indent=2))
        return 0
    if args.workers is not None:
        from klassterfork.training.launcher import launch

        if args.workers < 1:
            print(f"kf-train: --workers must be >= 1. Received: {args.workers}",
                  file=sys.stderr)
            return exit_codes.CONFIG_ERROR
        return launch(sys.argv[1:] if argv is None else list(argv), args.workers)
    from klassterfork.data.runtime import allocator
    from klassterfork.training.preemption import SignalWatcher
    from klassterfork.training.trainer import TrainingDiverged, WorkerLost

    print(f"kf-train: {allocator.describe(allocator.tune_for_records())}", flush=True)

    try:
        # SIGTERM / SIGINT from here on: finish the step, checkpoint, exit
        # with exit_codes.PREEMPTED (a second signal exits at once).
        with SignalWatcher() as signals:
            if args.dry_run:
                return dry_run(stages, source, args)
            return run(stages, source, args, signals=signals)
    except ConfigError as err:
        print(f"kf-train: config error: {err}", file=sys.stderr)
        return exit_codes.CONFIG_ERROR
    except TrainingDiverged as err:
        print(f"kf-train: training diverged: {err}", file=sys.stderr)
        return exit_codes.DIVERGED
    except WorkerLost as err:
        print(f"kf-train: worker lost: {err}; on this worker: {resume_command(args)}",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        # The collective runtime's threads still wait on the dead peer and
        # would hold a normal interpreter exit; everything is written.
        os._exit(exit_codes.WORKER_LOST)


def resume_command(args):
    """The kf-train command line that resumes this run."""
    parts = ["kf-train", args.config]
    for item in args.set:
        parts += ["--set", item]
    if args.experiment_dir:
        parts += ["--experiment-dir", args.experiment_dir]
    return shlex.join(parts + ["-r"])


def dry_run(stages, source, args):
    import shutil
    import tempfile

    from klassterfork.training import builders
    from klassterfork.training.dry_run import tiny_stages
    from klassterfork.training.trainer import check_data

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
        args.experiment_dir = None
        code = run(tiny, source, args, check=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if code == 0:
        data = (f"data NOT checked (not found): {', '.join(missing)}" if missing
                else "data checked against the manifests")
        print(f"dry run OK: {len(stages)} stage(s) built and trained 2 steps each; {data}")
    return code


def check_extension(stages, source, experiment_dir, index, done_step):
    """A finished stage may train on (more epochs) only if no later stage has
    started from its weights."""
    import tensorflow as tf

    from klassterfork.config.loader import ConfigError
    from klassterfork.training.trainer import stage_dirs

    for later in range(index + 1, len(stages)):
        if tf.train.latest_checkpoint(stage_dirs(experiment_dir, later)["checkpoints"]):
            raise ConfigError(
                source, "train_loop.epochs", f"stage {index} finished at step {done_step} "
                f"and stage {later} has already trained from its weights; only the last "
                "started stage can be extended (start a new experiment_dir instead)."
            )


def warn(text):
    print(f"kf-train: warning: {text}", file=sys.stderr)


def run(stages, source, args, signals=None, check=True):
    from klassterfork.files import write_json_atomic
    from klassterfork.training import builders
    from klassterfork.training import strategy as strategies
    from klassterfork.training.trainer import Stage, check_data, planned_steps, stage_dirs

    for stage in stages:
        # Names and arguments first: a typo fails in a second, before any data is read.
        builders.validate_stage(stage, source)
    first_loop = builders.train_loop_config(stages[0], source)
    if first_loop["logical_cpu_devices"]:
        strategies.split_cpu(first_loop["logical_cpu_devices"])
    try:
        strategy = strategies.make_strategy(first_loop["strategy"], first_loop["devices"],
                                            cluster=first_loop["cluster"])
    except ValueError as err:
        from klassterfork.config.loader import ConfigError

        key = "train_loop.cluster" if "cluster" in str(err) else "train_loop.strategy"
        raise ConfigError(source, key, str(err)) from None
    if check:
        # The data against its manifest, before step 1. After the strategy:
        # reading records starts TensorFlow's runtime, and MultiWorkerMirrored
        # must configure its collectives before that.
        for stage in stages:
            check_data(stage, source, warn=warn)
    if signals is not None:
        signals.install()  # over the handler a multi-worker strategy installs
    meta = stages[-1].get("meta") or {}
    name = meta.get("name") or os.path.splitext(os.path.basename(source.path))[0]
    experiment_dir = args.experiment_dir or meta.get("experiment_dir") or os.path.join(
        "experiments", name
    )
    os.makedirs(experiment_dir, exist_ok=True)
    chief = strategies.is_chief(strategy)
    if chief:
        write_json_atomic(os.path.join(experiment_dir, "config.resolved.json"), stages)

    if args.evaluate:
        index = len(stages) - 1
        stage = Stage(stages[index], source, experiment_dir=experiment_dir,
                      stage_index=index, strategy=strategy)
        dirs = stage_dirs(experiment_dir, index)
        restored = stage.restore(args.checkpoint) if args.checkpoint and os.path.isdir(
            args.checkpoint) else None
        if args.checkpoint and not restored:
            stage.checkpoint.restore(args.checkpoint).expect_partial()
            restored = args.checkpoint
        if not restored:
            for i in range(index, -1, -1):
                restored = stage.restore(stage_dirs(experiment_dir, i)["checkpoints"],
                                         model_only=True)
                if restored:
                    break
        if not restored:
            print(f"kf-train: no checkpoint under {experiment_dir} to evaluate.",
                  file=sys.stderr)
            return 1
        metrics = stage.evaluate(predictions_dir=dirs["root"])
        print(f"evaluated {restored}")
        for key in stage.val_keys:
            prefix = "val_" if key == "val" else f"{key}/"
            print(f"{key}: top-1 {metrics[prefix + 'top1']:.4f}  top-5 "
                  f"{metrics[prefix + 'top5']:.4f}  ({metrics[prefix + 'videos']} videos)  "
                  f"predictions: {os.path.join(dirs['root'], 'predictions_' + key)}.npz/.json")
        if chief:
            write_json_atomic(os.path.join(dirs["root"], "eval_metrics.json"), metrics)
        return 0

    previous = None
    result = {}
    for index, stage_cfg in enumerate(stages):
        dirs = stage_dirs(experiment_dir, index)
        if os.path.exists(dirs["done"]):
            if not args.resume:
                from klassterfork.config.loader import ConfigError

                raise ConfigError(
                    source, "meta.experiment_dir", f"{experiment_dir} already holds a "
                    "finished run: resume with -r, or choose another experiment_dir."
                )
            with open(dirs["done"]) as f:
                done_step = int(f.read().split()[0])
            planned = planned_steps(stage_cfg, source)
            if planned is None or done_step >= planned:
                print(f"stage {index}: already complete at step {done_step} "
                      f"(the config plans {planned}), skipped")
                previous = dirs["checkpoints"]
                continue
            check_extension(stages, source, experiment_dir, index, done_step)
            print(f"stage {index}: finished at step {done_step}; the config now plans "
                  f"{planned} steps (train_loop.epochs): training on")
        stage = Stage(stage_cfg, source, experiment_dir=experiment_dir,
                      stage_index=index, strategy=strategy)
        result = stage.train(resume=args.resume, previous_checkpoints=previous,
                             signals=signals)
        if result.get("preempted"):
            print(f"kf-train: preempted ({result['preempted']}) after step {result['step']} "
                  f"of stage {index}: checkpoint saved, nothing lost. Resume: "
                  f"{resume_command(args)}", file=sys.stderr)
            return exit_codes.PREEMPTED
        if result.get("stopped"):
            return exit_codes.OK
        previous = dirs["checkpoints"]
    task_type, task_id = strategies.task_info(strategy)
    if task_type is not None and result:
        from klassterfork.training.cluster import weights_digest

        # Every worker ends with the same weights; this line lets one check it.
        print(f"{task_type} {task_id}: final weights sha256 {weights_digest(stage.model)}")
    if chief:
        dirs = stage_dirs(experiment_dir, len(stages) - 1)
        print(f"checkpoints: {dirs['checkpoints']}")
        print(f"CSV log:     {dirs['csv']}")
        print(f"TensorBoard: tensorboard --logdir {dirs['tensorboard']}")
        print(f"model:       {dirs['model']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
