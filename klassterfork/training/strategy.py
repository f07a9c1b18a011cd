"""tf.distribute strategies from a config name, and chief/worker paths."""

import shutil
import tempfile

import tensorflow as tf

from klassterfork.training import cluster as cluster_lib

STRATEGIES = ("default", "auto", "mirrored", "multi_worker")


def split_cpu(num_devices):
    """Splits the CPU into `num_devices` logical devices (tests of mirroring).

    Must run before TensorFlow initialises its devices.
    """
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * int(num_devices)
    )


def make_strategy(name="default", devices=None, cluster="tf_config"):
    """Returns a `tf.distribute.Strategy`.

    Args:
        name: str. "default" (no distribution), "mirrored" (all local GPUs, or
            `devices`), "multi_worker" (the cluster `cluster` names), "auto"
            (mirrored when more than one GPU is visible).
        devices: optional list of device names for "mirrored".
        cluster: str. Where "multi_worker" finds its cluster: "tf_config",
            "slurm" or "kubernetes" (see `training/cluster.py`).
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"`strategy` must be one of {list(STRATEGIES)}. Received: strategy={name!r}"
        )
    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if devices is None and not tf.config.list_logical_devices("GPU"):
            cpus = tf.config.list_logical_devices("CPU")
            devices = [d.name for d in cpus]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=cluster_lib.resolver(cluster))


def task_info(strategy):
    """(task_type, task_id) of this process; (None, 0) when not multi-worker."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return None, 0
    return resolver.task_type, resolver.task_id


def is_chief(strategy):
    """True for the process that writes checkpoints, logs and models."""
    task_type, task_id = task_info(strategy)
    if task_type is None or task_type == "chief":
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def write_dir(path, strategy):
    """`path` on the chief; a throw-away temporary folder on other workers.

    Every worker must take part in saving a checkpoint (the save is a
    collective), but only the chief's copy is kept.
    """
    if is_chief(strategy):
        return path
    task_type, task_id = task_info(strategy)
    return tempfile.mkdtemp(prefix=f"kf_{task_type}_{task_id}_")


def remove_worker_dir(path, strategy):
    if not is_chief(strategy):
        shutil.rmtree(path, ignore_errors=True)
