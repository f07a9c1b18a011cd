"""MLflow experiment tracking: one MLflow run per experiment (issue 23).

A config turns it on with a `tracking` block (in the first stage; later
stages inherit it and may not change it):

    tracking: {mlflow: {experiment: "NAME", tracking_uri: "URI", run_name: "NAME"}}

`tracking_uri` is optional: without it MLflow's own rule applies
(`MLFLOW_TRACKING_URI`, else MLflow's default store). Only the chief logs.

- At the start (`start_run`): the server is checked with a short timeout (an
  unreachable one is a `ConfigError` located at `tracking.mlflow.tracking_uri`,
  or at `tracking` when the URI came from `MLFLOW_TRACKING_URI`), the run is
  created (or, with `-r`, the run whose id `mlflow_run.json` in the
  experiment folder keeps is continued), the resolved config's values are
  logged as params (dotted keys, `stage<i>.` first in a multi-stage config)
  and `config.resolved.json` as an artifact.
- During training (`MlflowHook`): `loss`, `top1`, `lr`, `clips_per_s` at
  every logged step (`train_loop.log_every_steps`, the rows of
  log_steps.csv) with the global step; every evaluation's metrics as `val/*`
  (`val_top1` -> `val/top1`; `val_<name>/top1` as is); at a stage's end
  `model.keras`, `best.keras` and its PNGs (training curves, any confusion
  matrix) under `stage<i>/`. A multi-stage config's metrics are named
  `stage<i>/loss` etc.
- A failure of any MLflow call after the start costs no training: one
  warning paragraph, then nothing more is sent to MLflow for the rest of the
  process (`MlflowRun.call`); log.csv and log_steps.csv keep everything.

MLflow's HTTP client retries a lost server for minutes by default; unless
they are set already, `start_run` sets `MLFLOW_HTTP_REQUEST_MAX_RETRIES=2`,
`MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1` and `MLFLOW_HTTP_REQUEST_TIMEOUT=30`
for this process, so a lost server costs seconds, once.
"""

import glob
import json
import numbers
import os
import sys
import time
import urllib.error
import urllib.request

from klassterfork import exit_codes
from klassterfork.config.loader import ConfigError
from klassterfork.files import write_json_atomic
from klassterfork.training.loop import Hook

RUN_FILE = "mlflow_run.json"  # in the experiment folder: the run `-r` continues
ACCEPTED = ("experiment", "tracking_uri", "run_name")
PROBE_TIMEOUT_S = 5.0
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
MAX_PARAM_LENGTH = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH (3.17)
STATUS_OF_EXIT = {exit_codes.OK: "FINISHED", exit_codes.PREEMPTED: "KILLED"}


def settings(stages, source):
    """The checked `tracking.mlflow` block (a dict), or None without one.

    Raises:
        ConfigError: a later stage changes `tracking`, an unknown key, or
            `experiment` is missing or not a string.
    """
    block = stages[0].get("tracking")
    if any(stage.get("tracking") != block for stage in stages[1:]):
        raise ConfigError(source, "tracking", "one MLflow run covers every stage: state "
                          "`tracking` in the first stage only (later stages inherit it).")
    if block is None:
        return None
    if not isinstance(block, dict) or set(block) != {"mlflow"}:
        got = sorted(block) if isinstance(block, dict) else type(block).__name__
        raise ConfigError(source, "tracking", f"accepted: {{mlflow: {{...}}}}. Received: {got}")
    cfg = block["mlflow"]
    if not isinstance(cfg, dict):
        raise ConfigError(source, "tracking.mlflow", "must be a dict with keys "
                          f"{', '.join(ACCEPTED)}. Received: {cfg!r}")
    for key, value in cfg.items():
        if key not in ACCEPTED:
            raise ConfigError(source, f"tracking.mlflow.{key}",
                              f"unknown key. Accepted: {', '.join(ACCEPTED)}")
        if not (isinstance(value, str) and value) and not (value is None and key != "experiment"):
            raise ConfigError(source, f"tracking.mlflow.{key}",
                              f"must be a non-empty string. Received: {value!r}")
    if "experiment" not in cfg:
        raise ConfigError(source, "tracking.mlflow", "needs `experiment` (the MLflow "
                          "experiment's name).")
    return cfg


def flatten(value, prefix=""):
    """A nested config as `{dotted.key: str}`: dicts recurse, strings stay,
    everything else (numbers, lists, null) is its JSON text."""
    if isinstance(value, dict) and value:
        out = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value if isinstance(value, str) else json.dumps(value)}


def config_params(stages):
    """The params of the resolved stages (`stage<i>.` first when several)."""
    if len(stages) == 1:
        return flatten(stages[0])
    return flatten({f"stage{i}": stage for i, stage in enumerate(stages)})


def warn(text):
    print(f"kf-train: warning: {text}", file=sys.stderr, flush=True)


def tracking_uri(cfg):
    """(uri, key to locate errors at, where it came from)."""
    import mlflow

    if cfg.get("tracking_uri"):
        return cfg["tracking_uri"], "tracking.mlflow.tracking_uri", "tracking_uri"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], "tracking", "MLFLOW_TRACKING_URI"
    return mlflow.get_tracking_uri(), "tracking", "MLflow's default tracking URI"


def check_reachable(uri, source, key, origin):
    """An http(s) tracking server answers within `PROBE_TIMEOUT_S` (any HTTP
    status counts as an answer); other stores are checked by their first call.

    Raises:
        ConfigError: no answer.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return  # it answered
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(source, key, f"the MLflow tracking server {uri} ({origin}) does "
                          f"not answer within {PROBE_TIMEOUT_S:g} s: {reason}. Start it, "
                          "correct the URI, or remove the `tracking` block.") from None


class MlflowRun:
    """The experiment's MLflow run; every call after the start goes through
    `call`, which turns the first failure into one warning paragraph and
    makes every later call a no-op (`lost`).

    Args:
        client: `mlflow.MlflowClient`.
        run_id: str.
        uri: str. The tracking URI (for the messages).
        multi_stage: bool. Metric names get a `stage<i>/` prefix.
    """

    def __init__(self, client, run_id, *, uri, multi_stage):
        self.client, self.run_id, self.uri = client, run_id, uri
        self.multi_stage, self.lost, self.step = multi_stage, False, None

    def prefix(self, stage_index):
        return f"stage{stage_index}/" if self.multi_stage else ""

    def call(self, what, fn, *args, **kwargs):
        """`fn(*args, **kwargs)` unless the tracking is lost; a failure warns once."""
        if self.lost:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # any failure of MLflow: training goes on
            self.lost = True
            first = (str(err).strip().splitlines() or [""])[0][:300]
            at = f" at step {self.step}" if self.step is not None else ""
            warn(f"MLflow tracking lost{at} ({what}: {type(err).__name__}: {first}). "
                 f"Training goes on without it: nothing more is sent to MLflow run "
                 f"{self.run_id} at {self.uri} by this process; log.csv, log_steps.csv "
                 "and TensorBoard keep every metric. The MLflow run stays RUNNING; "
                 "`-r` continues it once the server is back.")
            return None

    def log_metrics(self, values, step):
        from mlflow.entities import Metric

        self.step = step
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(step)) for k, v in values.items()]
        if metrics:
            self.call("log metrics", self.client.log_batch, self.run_id, metrics=metrics)

    def log_artifact(self, path, artifact_path=None):
        self.call(f"log artifact {os.path.basename(path)}", self.client.log_artifact,
                  self.run_id, path, artifact_path)

    def finish(self, status):
        self.call(f"end the run as {status}", self.client.set_terminated, self.run_id,
                  status)


def start_run(stages, source, experiment_dir, *, resume, log=print):
    """Starts (or with `-r` continues) the experiment's MLflow run; logs the
    params and `config.resolved.json`. None when the config has no
    `tracking` block. Call it from the chief only, after
    config.resolved.json is written.

    Raises:
        ConfigError: a bad block, MLflow not installed, the server
            unreachable, or any failure of MLflow while starting.
    """
    cfg = settings(stages, source)
    if cfg is None:
        return None
    try:
        from mlflow import MlflowClient
    except ImportError as err:
        raise ConfigError(source, "tracking", f"needs MLflow ({err}): pip install "
                          "'klassterfork[tracking]' (mlflow-skinny).") from None
    uri, key, origin = tracking_uri(cfg)
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    check_reachable(uri, source, key, origin)
    client = MlflowClient(tracking_uri=uri)
    try:
        run_id = _open_run(client, cfg, uri, experiment_dir, resume, source, log)
        run = MlflowRun(client, run_id, uri=uri, multi_stage=len(stages) > 1)
        _log_params(client, run_id, config_params(stages), log)
        client.log_artifact(run_id, os.path.join(experiment_dir, "config.resolved.json"))
    except ConfigError:
        raise
    except Exception as err:  # any MLflow failure while starting: a setup error
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise ConfigError(source, key, f"MLflow at {uri} ({origin}) failed while starting "
                          f"the run: {type(err).__name__}: {first}") from None
    return run


def _open_run(client, cfg, uri, experiment_dir, resume, source, log):
    """The run id: the one `RUN_FILE` keeps (with `-r`), else a new run."""
    path = os.path.join(experiment_dir, RUN_FILE)
    if os.path.exists(path):
        with open(path) as f:
            kept = json.load(f)
        if not resume:
            raise ConfigError(source, "meta.experiment_dir", f"{experiment_dir} already "
                              f"holds MLflow run {kept['run_id']}: resume with -r (continues "
                              "it), or choose another experiment_dir.")
        if kept["tracking_uri"] != uri:
            raise ConfigError(source, "tracking", f"this experiment's MLflow run "
                              f"{kept['run_id']} is at {kept['tracking_uri']} ({path}); the "
                              f"config now tracks to {uri}. Point tracking_uri back there.")
        client.get_run(kept["run_id"])  # raises when the server does not know it
        client.update_run(kept["run_id"], status="RUNNING")
        log(f"MLflow: continuing run {kept['run_id']} at {uri}")
        return kept["run_id"]
    name = cfg["experiment"]
    experiment = client.get_experiment_by_name(name)
    experiment_id = (experiment.experiment_id if experiment is not None
                     else client.create_experiment(name))
    run = client.create_run(experiment_id, run_name=cfg.get("run_name"))
    write_json_atomic(path, {"run_id": run.info.run_id, "tracking_uri": uri,
                             "experiment": name, "experiment_id": experiment_id})
    log(f"MLflow: run {run.info.run_id} in experiment {name!r} at {uri} (id kept in {path})")
    return run.info.run_id


def _log_params(client, run_id, params, log):
    """Logs the params the run lacks. MLflow params cannot change: a value
    that differs from the logged one (say `-r --set train_loop.epochs=4`)
    becomes the tag `resumed.<key>`, and a line says so."""
    from mlflow.entities import Param, RunTag

    long = sorted(k for k, v in params.items() if len(v) > MAX_PARAM_LENGTH)
    if long:
        log(f"MLflow: params longer than {MAX_PARAM_LENGTH} characters not logged (they "
            f"are in config.resolved.json): {', '.join(long)}")
    params = {k: v for k, v in params.items() if k not in long}
    logged = client.get_run(run_id).data.params
    changed = sorted(k for k in params if k in logged and logged[k] != params[k])
    if changed:
        log("MLflow: params changed since the run began, logged as tags resumed.<key>: "
            + ", ".join(f"{k} {logged[k]} -> {params[k]}" for k in changed))
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items() if k not in logged],
                     tags=[RunTag(f"resumed.{k}", params[k]) for k in changed])


def run_tracked(run, train):
    """`train()` (returns the exit status); the run ends FINISHED (exit 0),
    KILLED (preempted: `-r` continues it) or FAILED."""
    if run is None:
        return train()
    try:
        code = train()
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish(STATUS_OF_EXIT.get(code, "FAILED"))
    return code


def metric_name(key):
    """An epoch-log key as an MLflow metric: `val_top1` -> `val/top1`."""
    if key.startswith("val_") and "/" not in key:
        return "val/" + key[len("val_"):]
    return key


class MlflowHook(Hook):
    """Sends a stage's step and evaluation metrics and, when it finishes, its
    models and PNGs to the `MlflowRun` (chief only; after `FinalModelHook`).

    Args:
        run: `MlflowRun`.
        stage_index: int.
        every_steps: int. `train_loop.log_every_steps` (log_steps.csv's rows).
        current_lr: callable () -> float.
        dirs: dict. `trainer.stage_dirs` of the stage.
    """

    def __init__(self, run, *, stage_index, every_steps, current_lr, dirs):
        self.run, self.stage_index, self.every = run, stage_index, int(every_steps)
        self.current_lr, self.dirs = current_lr, dirs
        self.prefix = run.prefix(stage_index)

    def after_step(self, loop, logs):
        if loop.step % self.every:
            return
        count = logs["count"]
        values = {"loss": logs["loss"] / count, "top1": logs["top1"] / count,
                  "lr": self.current_lr(), "clips_per_s": logs["clips_per_s"]}
        self.run.log_metrics({self.prefix + k: v for k, v in values.items()}, loop.step)

    def after_epoch(self, loop, logs):
        values = {self.prefix + metric_name(k): v for k, v in logs.items()
                  if k.startswith("val") and isinstance(v, numbers.Real)}
        self.run.log_metrics(values, loop.step)

    def end(self, loop):
        if not loop.finished:
            return
        root = self.dirs["root"]
        paths = [self.dirs["model"], self.dirs["best"]]
        paths += sorted(glob.glob(os.path.join(root, "*.png")))
        for path in paths:
            if os.path.exists(path):
                self.run.log_artifact(path, f"stage{self.stage_index}")
