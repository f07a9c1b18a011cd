"""MLflow tracking (training/tracking.py) against a real `mlflow server`
(sqlite store, file artifacts) on 127.0.0.1: no mocks. The run is read back
with `MlflowClient` and compared with log_steps.csv / log.csv, which the
trainer writes on its own (the reference).

One server serves the module (its start-up takes seconds on 2 cores); the
last test kills it mid-run.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from klassterfork.config.loader import ConfigError, load_text
from klassterfork.training import tracking
from tests.training.tiny_data import tiny_config, write_split

mlflow = pytest.importorskip("mlflow")

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `mlflow server` (its own process group, so a test can SIGKILL
    it and its workers); yields (uri, Popen)."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = {**CLEAN_ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server",
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--default-artifact-root", (root / "artifacts").as_uri(),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
        start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # start-up polls, not a timing assertion
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(uri + "/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("mlflow server did not answer /health")
        yield uri, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    write_split(str(d), "train", 24, seed=0)  # batch 4: 6 steps per epoch
    write_split(str(d), "validation", 8, seed=1)
    return d


@pytest.fixture(autouse=True)
def no_mlflow_env(monkeypatch):
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(key)
    for key, value in tracking.HTTP_DEFAULTS.items():  # start_run's, undone after
        monkeypatch.setenv(key, value)


def write_config(tmp_path, data_dir, tracking_block, **loop):
    config = json.loads(tiny_config(data_dir, tmp_path / "exp", **loop))
    config["tracking"] = tracking_block
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "c.hjson"
    path.write_text(json.dumps(config))
    return path, tmp_path / "exp"


def csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_flatten_and_settings_by_hand():
    assert tracking.flatten({"a": {"b": 1, "c": [2, 3]}, "d": "x", "e": None, "f": {}}) == {
        "a.b": "1", "a.c": "[2, 3]", "d": "x", "e": "null", "f": "{}"}
    two = [{"model": {"M": {"w": 1}}}, {"model": {"M": {"w": 2}}}]
    assert tracking.config_params(two) == {"stage0.model.M.w": "1", "stage1.model.M.w": "2"}
    assert tracking.metric_name("val_top1") == "val/top1"
    assert tracking.metric_name("val_hmdb51/top1") == "val_hmdb51/top1"

    text = '{"meta": {},\n "tracking": {"mlflow": {"experiment": "e", "run_nme": "x"}}}'
    stages, source = load_text(text, "c.hjson")
    with pytest.raises(ConfigError, match=r"c.hjson:2: tracking.mlflow.run_nme: unknown key. "
                                          r"Accepted: experiment, tracking_uri, run_name"):
        tracking.settings(stages, source)
    stages, source = load_text('[{"tracking": {"mlflow": {"experiment": "a"}}},\n'
                               ' {"tracking": {"mlflow": {"experiment": "b"}}}]', "c.hjson")
    with pytest.raises(ConfigError, match="state `tracking` in the first stage only"):
        tracking.settings(stages, source)
    stages, source = load_text('{"tracking": {"mlflow": {"run_name": "r"}}}', "c.hjson")
    with pytest.raises(ConfigError, match="needs `experiment`"):
        tracking.settings(stages, source)


def test_unreachable_server_at_start_is_a_located_config_error(data_dir, tmp_path, capsys,
                                                              monkeypatch):
    from klassterfork.cli.train import main

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg, exp = write_config(tmp_path / "a", data_dir,
                            {"mlflow": {"experiment": "kf", "tracking_uri": dead}})
    assert main([str(cfg), "--set", "train_loop.epochs=1"]) == 2
    err = capsys.readouterr().err
    line = next(n for n, t in enumerate(cfg.read_text().splitlines(), 1) if "tracking_uri" in t)
    assert f"{cfg}:{line}: tracking.mlflow.tracking_uri: the MLflow tracking server {dead}" in err
    assert not os.path.exists(exp / "stage0" / "checkpoints")  # nothing trained

    # From MLFLOW_TRACKING_URI: located at `tracking`, naming the variable.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    cfg, exp = write_config(tmp_path / "b", data_dir, {"mlflow": {"experiment": "kf"}})
    assert main([str(cfg), "--set", "train_loop.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}:" in err and f": tracking: the MLflow tracking server {dead} " \
           "(MLFLOW_TRACKING_URI) does not answer" in err


def test_run_and_resume_extension_are_one_mlflow_run(server, data_dir, tmp_path, capsys):
    from klassterfork.cli.train import main

    uri, _ = server
    block = {"mlflow": {"experiment": "kf-extend", "tracking_uri": uri, "run_name": "tiny"}}
    cfg, exp = write_config(tmp_path, data_dir, block, epochs=1, log_every_steps=2)
    assert main([str(cfg)]) == 0
    assert main([str(cfg), "-r", "--set", "train_loop.epochs=2"]) == 0
    assert "MLflow tracking lost" not in capsys.readouterr().err

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("kf-extend")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == json.loads((exp / tracking.RUN_FILE).read_text())["run_id"]
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    params = run.data.params
    assert len(params) >= 10
    assert params["datasets.train.batch_size"] == "4"
    assert params["train_loop.epochs"] == "1"  # params are fixed once logged
    assert run.data.tags["resumed.train_loop.epochs"] == "2"

    # loss at every logged step of both parts, equal to log_steps.csv's rows
    steps = csv_rows(exp / "stage0" / "log_steps.csv")
    history = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    assert [m.step for m in history] == [2, 4, 6, 8, 10, 12]
    assert [int(r["step"]) for r in steps] == [2, 4, 6, 8, 10, 12]
    for metric, row in zip(history, steps):
        assert metric.value == pytest.approx(float(row["loss"]), rel=1e-6)
    lr = sorted(client.get_metric_history(run.info.run_id, "lr"), key=lambda m: m.step)
    assert [m.value for m in lr] == pytest.approx([float(r["lr"]) for r in steps])
    epochs = csv_rows(exp / "stage0" / "log.csv")
    val = sorted(client.get_metric_history(run.info.run_id, "val/top1"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in val] == [
        (int(r["step"]), pytest.approx(float(r["val_top1"]))) for r in epochs]

    top = {f.path for f in client.list_artifacts(run.info.run_id)}
    stage = {f.path for f in client.list_artifacts(run.info.run_id, "stage0")}
    assert "config.resolved.json" in top
    assert {"stage0/model.keras", "stage0/best.keras", "stage0/training_curves.png"} <= stage


def test_server_killed_mid_run_costs_no_training(server, data_dir, tmp_path, capsys,
                                                 monkeypatch):
    """Runs last in the module: it kills the module's server."""
    from klassterfork.cli.train import main

    uri, proc = server
    original = tracking.MlflowHook.after_step

    def after_step_then_kill(self, loop, logs):
        original(self, loop, logs)
        if loop.step == 2 and proc.poll() is None:  # step 2 reached the server
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    monkeypatch.setattr(tracking.MlflowHook, "after_step", after_step_then_kill)
    block = {"mlflow": {"experiment": "kf-killed", "tracking_uri": uri}}
    cfg, exp = write_config(tmp_path, data_dir, block, epochs=2, log_every_steps=2)
    assert main([str(cfg)]) == 0
    assert proc.poll() is not None  # the server really died during the run
    err = capsys.readouterr().err
    assert err.count("MLflow tracking lost") == 1
    assert "MLflow tracking lost at step 4 (log metrics" in err
    assert [int(r["step"]) for r in csv_rows(exp / "stage0" / "log_steps.csv")] == [
        2, 4, 6, 8, 10, 12]
    assert [int(r["step"]) for r in csv_rows(exp / "stage0" / "log.csv")] == [6, 12]
    assert (exp / "stage0" / "DONE").read_text().strip() == "12"
