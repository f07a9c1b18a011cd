"""`kf-train` = `python runs/train.py CONFIG [-r] [-e] [--set k=v] [--print-config]`.

Trains every stage of a config in order (a later stage starts from the weights
of the one before), or with `-e` evaluates the latest checkpoint (or
`--checkpoint`) on `datasets.val` and writes a predictions file.

This module is the shell: flags, exit statuses and messages. What a run does
is `training/experiment.py`.
"""

import argparse
import json
import os
import shlex
import sys

from klassterfork import exit_codes, out_of_space

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
                        help="print the resolved stages as JSON (every dataset option "
                             "with its value) and exit")
    parser.add_argument("--experiment-dir", help="overrides meta.experiment_dir")
    parser.add_argument("--dry-run", action="store_true",
                        help="build everything and run 2 steps per stage on a tiny "
                             "generated stand-in dataset")
    parser.add_argument("--smoke", action="store_true",
                        help="train a few steps and evaluate a few videos on the real "
                             "records, in a temporary folder (before a long job)")
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
        return print_config(stages, source)
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
            return run_experiment(stages, source, args, signals)
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
    except Exception as err:
        if out_of_space.is_out_of_space(err):  # a full disk anywhere: requeue-able
            return out_of_space_exit(err, args)
        if not os.environ.get("TF_CONFIG"):
            raise
        # Multi-worker: any other error (a bug, a NaN check, a bad input) is
        # exit 1 with its whole traceback, never requeued; the collective
        # threads may still wait on the peers, so exit without teardown.
        from klassterfork.training import preemption

        print(preemption.failure_report(err), file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(exit_codes.FAILED)


def out_of_space_exit(err, args):
    """One paragraph (path, free space, what was removed); OUT_OF_SPACE."""
    print(f"kf-train: {out_of_space.report(err, resume_hint=resume_command(args))}",
          file=sys.stderr, flush=True)
    if os.environ.get("TF_CONFIG"):  # collective threads may wait on the peers
        sys.stdout.flush()
        os._exit(exit_codes.OUT_OF_SPACE)
    return exit_codes.OUT_OF_SPACE


def print_config(stages, source):
    """The resolved stages, each dataset block with every option of its spec."""
    from klassterfork.config.loader import ConfigError
    from klassterfork.training.builders import filled_stages

    try:
        print(json.dumps(filled_stages(stages, source), indent=2))
    except ConfigError as err:
        print(f"kf-train: config error: {err}", file=sys.stderr)
        return exit_codes.CONFIG_ERROR
    return 0


def run_experiment(stages, source, args, signals):
    """The flags as `experiment.Options`; the dry run or the experiment."""
    from klassterfork.training.experiment import Experiment, Options, dry_run

    options = Options(resume=args.resume, evaluate=args.evaluate, checkpoint=args.checkpoint,
                      experiment_dir=args.experiment_dir, resume_command=resume_command(args))
    if args.dry_run:
        return dry_run(stages, source, options)
    if args.smoke:
        from klassterfork.training.experiment import smoke_run

        return smoke_run(stages, source, options)
    return Experiment(stages, source, options, signals=signals).run()


def resume_command(args):
    """The kf-train command line that resumes this run."""
    parts = ["kf-train", args.config]
    for item in args.set:
        parts += ["--set", item]
    if args.experiment_dir:
        parts += ["--experiment-dir", args.experiment_dir]
    return shlex.join(parts + ["-r"])


if __name__ == "__main__":
    sys.exit(main())
