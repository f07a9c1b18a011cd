"""Where a multi-worker run's cluster comes from: `train_loop.cluster`.

- "tf_config": TensorFlow's `TFConfigClusterResolver` (the `TF_CONFIG`
  environment variable; what `kf-train --workers N` sets for each process).
- "slurm": TensorFlow's `SlurmClusterResolver`, from the variables `srun`
  sets (`SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`, `SLURM_STEP_NODELIST`,
  `SLURM_STEP_TASKS_PER_NODE`); ports from `KF_CLUSTER_PORT` (default 8888,
  +1 per task on a node).
- "kubernetes": an indexed Job whose pods are reachable through a headless
  service: the pod's index is `JOB_COMPLETION_INDEX`, its host name
  `{job}-{index}`, so worker i is `{job}-{i}.{KF_CLUSTER_SERVICE}:{port}`
  (`KF_NUM_WORKERS` workers, port `KF_CLUSTER_PORT`, default 2222). Built
  as TensorFlow's `SimpleClusterResolver`.

See docs/clusters.md and the job files in docs/cluster/.
"""

import hashlib
import os

import numpy as np
import tensorflow as tf
from tensorflow.python.distribute.cluster_resolver import slurm_cluster_resolver

CLUSTERS = ("tf_config", "slurm", "kubernetes")
SLURM_PORT = 8888
KUBERNETES_PORT = 2222


class ClusterError(ValueError):
    """The environment does not describe the cluster `train_loop.cluster` names."""


def resolver(name, environ=None):
    """The `tf.distribute.cluster_resolver.ClusterResolver` of cluster `name`.

    Args:
        name: str. One of `CLUSTERS`.
        environ: mapping or None. The environment to read (Kubernetes; the
            TensorFlow resolvers read `os.environ`). Defaults to os.environ.

    Raises:
        ClusterError: unknown name, or an environment variable missing or
            malformed (the message names it and who sets it).
    """
    env = os.environ if environ is None else environ
    if name not in CLUSTERS:
        raise ClusterError(f"`train_loop.cluster` must be one of {list(CLUSTERS)}. "
                           f"Received: cluster={name!r}")
    if name == "tf_config":
        if "TF_CONFIG" not in env:
            raise ClusterError("train_loop.cluster 'tf_config' needs the TF_CONFIG "
                               "environment variable (kf-train --workers N sets it).")
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if name == "slurm":
        return _slurm(env)
    return _kubernetes(env)


def _require(env, names, cluster, who):
    missing = [n for n in names if not env.get(n)]
    if missing:
        raise ClusterError(f"train_loop.cluster '{cluster}' needs the environment "
                           f"variable(s) {', '.join(missing)} ({who}).")


def _port(env, default):
    value = env.get("KF_CLUSTER_PORT", str(default))
    if not value.isdigit():
        raise ClusterError("KF_CLUSTER_PORT must be a port number. "
                           f"Received: {value!r}")
    return int(value)


def _slurm(env):
    _require(env, ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST",
                   "SLURM_STEP_TASKS_PER_NODE"), "slurm", "set by srun inside sbatch")
    tasks_per_node = slurm_cluster_resolver.expand_tasks_per_node(
        env["SLURM_STEP_TASKS_PER_NODE"])
    try:
        gpus = slurm_cluster_resolver.get_num_gpus()
    except (RuntimeError, OSError):  # no CUDA_VISIBLE_DEVICES, no nvidia-smi
        gpus = 0
    kwargs = {}
    if gpus == 0:
        # CPU nodes: the resolver pairs each task with a slice of GPUs and
        # fails without any; one notional device per task gives each task
        # its port and leaves CUDA_VISIBLE_DEVICES alone.
        kwargs = {"gpus_per_node": max(tasks_per_node), "gpus_per_task": 1,
                  "auto_set_gpu": False}
    return tf.distribute.cluster_resolver.SlurmClusterResolver(
        port_base=_port(env, SLURM_PORT), **kwargs)


def _kubernetes(env):
    _require(env, ("JOB_COMPLETION_INDEX",), "kubernetes",
             "set by Kubernetes in the pods of a Job with completionMode: Indexed")
    _require(env, ("HOSTNAME", "KF_CLUSTER_SERVICE", "KF_NUM_WORKERS"), "kubernetes",
             "KF_CLUSTER_SERVICE: the headless service named in the pod's subdomain; "
             "KF_NUM_WORKERS: the Job's completions; see docs/cluster/kubernetes.yaml")
    index, count = env["JOB_COMPLETION_INDEX"], env["KF_NUM_WORKERS"]
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ClusterError(f"JOB_COMPLETION_INDEX must be in [0, KF_NUM_WORKERS). "
                           f"Received: JOB_COMPLETION_INDEX={index!r}, "
                           f"KF_NUM_WORKERS={count!r}")
    host, suffix = env["HOSTNAME"].split(".")[0], f"-{index}"
    if not host.endswith(suffix):
        raise ClusterError(f"HOSTNAME {env['HOSTNAME']!r} is not '<job>-{index}': the "
                           "pod must belong to an indexed Job (Kubernetes names its "
                           "pods so).")
    job = host[: -len(suffix)]
    service, port = env["KF_CLUSTER_SERVICE"], _port(env, KUBERNETES_PORT)
    workers = [f"{job}-{i}.{service}:{port}" for i in range(int(count))]
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"worker": workers}), task_type="worker",
        task_id=int(index), rpc_layer="grpc")


def weights_digest(model):
    """sha256 of every weight's bytes, in order: equal digests on two workers
    mean bitwise-equal weights."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(np.asarray(weight.numpy())).tobytes())
    return digest.hexdigest()
