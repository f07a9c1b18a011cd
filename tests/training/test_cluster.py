"""Cluster start-up (issue 12): TF_CONFIG, Slurm and Kubernetes resolvers from
faked environments, and the shipped job files (docs/cluster/) parsed and
turned into the environment their scheduler would give each task."""

import json
import os
import re
import shlex

import pytest
import yaml

from klassterfork.training import cluster

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SBATCH = os.path.join(ROOT, "docs", "cluster", "slurm.sbatch")
KUBERNETES = os.path.join(ROOT, "docs", "cluster", "kubernetes.yaml")


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("SLURM_", "KF_", "TF_CONFIG", "JOB_COMPLETION")):
            monkeypatch.delenv(name)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi: CPU nodes
    return monkeypatch


def spec(resolver):
    return resolver.cluster_spec().as_dict()


def test_tf_config(clean_env):
    workers = ["10.0.0.1:2222", "10.0.0.2:2222", "10.0.0.3:2222"]
    clean_env.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 2}}))
    r = cluster.resolver("tf_config")
    assert spec(r) == {"worker": workers}
    assert (r.task_type, r.task_id) == ("worker", 2)


def test_slurm_two_tasks_per_node(clean_env):
    # 2 nodes x 2 tasks; this is task 3 = the second task of node02.
    for name, value in {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4",
                        "SLURM_STEP_NODELIST": "node[01-02]",
                        "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
                        "KF_CLUSTER_PORT": "9000"}.items():
        clean_env.setenv(name, value)
    r = cluster.resolver("slurm")
    assert spec(r) == {"worker": ["node01:9000", "node01:9001", "node02:9000",
                                  "node02:9001"]}
    r.cluster_spec()
    assert (r.task_type, r.task_id) == ("worker", 3)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # CPU nodes: left alone


def test_kubernetes_indexed_job(clean_env):
    for name, value in {"JOB_COMPLETION_INDEX": "2", "HOSTNAME": "kf-train-2",
                        "KF_CLUSTER_SERVICE": "kf-train",
                        "KF_NUM_WORKERS": "4"}.items():
        clean_env.setenv(name, value)
    r = cluster.resolver("kubernetes")
    assert spec(r) == {"worker": [f"kf-train-{i}.kf-train:2222" for i in range(4)]}
    assert (r.task_type, r.task_id, r.rpc_layer) == ("worker", 2, "grpc")


@pytest.mark.parametrize("env, match", [
    ({}, r"JOB_COMPLETION_INDEX \(set by Kubernetes"),
    ({"JOB_COMPLETION_INDEX": "0"}, r"HOSTNAME, KF_CLUSTER_SERVICE, KF_NUM_WORKERS"),
    ({"JOB_COMPLETION_INDEX": "1", "HOSTNAME": "other-0", "KF_CLUSTER_SERVICE": "s",
      "KF_NUM_WORKERS": "2"}, r"HOSTNAME 'other-0' is not '<job>-1'"),
    ({"JOB_COMPLETION_INDEX": "2", "HOSTNAME": "j-2", "KF_CLUSTER_SERVICE": "s",
      "KF_NUM_WORKERS": "2"}, r"JOB_COMPLETION_INDEX must be in \[0, KF_NUM_WORKERS\)"),
])
def test_kubernetes_errors_name_the_variable(clean_env, env, match):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(cluster.ClusterError, match=match):
        cluster.resolver("kubernetes")


def test_errors_for_missing_environment_and_unknown_name(clean_env):
    with pytest.raises(cluster.ClusterError, match="needs the TF_CONFIG"):
        cluster.resolver("tf_config")
    with pytest.raises(cluster.ClusterError, match="SLURM_PROCID.*set by srun"):
        cluster.resolver("slurm")
    with pytest.raises(cluster.ClusterError,
                       match=r"must be one of .*Received: cluster='k8s'"):
        cluster.resolver("k8s")


def sbatch_options(text):
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.M))


def test_slurm_job_file_gives_every_task_its_place(clean_env):
    text = open(SBATCH).read()
    options = sbatch_options(text)
    nodes, per_node = int(options["nodes"]), int(options["ntasks-per-node"])
    port = int(re.search(r"^export KF_CLUSTER_PORT=(\d+)", text, re.M).group(1))
    command = shlex.split(re.search(r"^exec srun (.*)$", text.replace("\\\n", ""),
                                    re.M).group(1))
    assert command[command.index("--set", command.index("kf-train")) + 1:].count(
        "train_loop.cluster=slurm") == 1
    assert "train_loop.strategy=multi_worker" in command
    hosts = [f"gpu{n:02d}" for n in range(1, nodes + 1)]
    expected = [f"{h}:{port + t}" for h in hosts for t in range(per_node)]
    # What srun sets in each task of that allocation.
    for rank in range(nodes * per_node):
        for name, value in {"SLURM_PROCID": str(rank),
                            "SLURM_STEP_NUM_TASKS": str(nodes * per_node),
                            "SLURM_STEP_NODELIST": f"gpu[01-{nodes:02d}]",
                            "SLURM_STEP_TASKS_PER_NODE": f"{per_node}(x{nodes})",
                            "KF_CLUSTER_PORT": str(port)}.items():
            clean_env.setenv(name, value)
        r = cluster.resolver("slurm")
        assert spec(r) == {"worker": expected}
        assert r.task_id == rank


def test_kubernetes_job_file_builds_the_cluster_its_service_names(clean_env):
    docs = list(yaml.safe_load_all(open(KUBERNETES)))
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    job = kinds[("Job", "kf-train")]
    headless = kinds[("Service", "kf-train")]
    assert job["spec"]["completionMode"] == "Indexed"
    assert headless["spec"]["clusterIP"] == "None"
    assert job["spec"]["template"]["spec"]["subdomain"] == headless["metadata"]["name"]
    assert headless["spec"]["selector"] == {"job-name": "kf-train"}
    trainer = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in trainer["env"]}
    assert int(env["KF_NUM_WORKERS"]) == job["spec"]["completions"]
    assert "train_loop.cluster=kubernetes" in trainer["command"]
    dispatcher = kinds[("Deployment", "kf-data-dispatcher")]["spec"]["template"]["spec"]
    port = dispatcher["containers"][0]["command"][3]
    assert f"datasets.train.service.address=grpc://kf-data-dispatcher:{port}" in \
        trainer["command"]
    assert "--work-dir" in dispatcher["containers"][0]["command"]
    worker = kinds[("Deployment", "kf-data-worker")]["spec"]["template"]["spec"]
    worker_command = worker["containers"][0]["command"][2]
    assert f"--dispatcher kf-data-dispatcher:{port}" in worker_command
    # Each pod of the indexed Job: Kubernetes sets its index and host name.
    count = job["spec"]["completions"]
    for index in range(count):
        for name, value in {**env, "JOB_COMPLETION_INDEX": str(index),
                            "HOSTNAME": f"{job['metadata']['name']}-{index}"}.items():
            clean_env.setenv(name, value)
        r = cluster.resolver("kubernetes")
        assert spec(r) == {"worker": [f"kf-train-{i}.kf-train:{env['KF_CLUSTER_PORT']}"
                                      for i in range(count)]}
        assert r.task_id == index
