"""Builds the pieces of one stage from its config dict: data, model, loss,
optimizer. Every config problem becomes a `ConfigError` naming file and line."""

import copy
import dataclasses
import difflib
import re
import inspect
import json
import os

import keras
import numpy as np

from klassterfork import files as kf_files
from klassterfork import models
from klassterfork.config.components import build_component, split_component
from klassterfork.config import options as opts
from klassterfork.config import values
from klassterfork.config.loader import ConfigError
from klassterfork.data import pipeline, spec as data_spec, transforms
from klassterfork.models.registry import MODELS
from klassterfork.training.losses import LOSSES
from klassterfork.training.optimizers import OPTIMIZERS
from klassterfork.training.schedules import SCHEDULES, ReduceOnPlateau

TRAIN_LOOP_DEFAULTS = {
    "epochs": 1,
    "strategy": "default",
    "devices": None,
    "logical_cpu_devices": None,
    "steps_per_epoch": None,
    "checkpoint_every_steps": 100,
    "keep_checkpoints": 3,
    "log_every_steps": 10,
    "eval_every_epochs": 1,
    "jit_compile": False,
    "deterministic": False,
    "seed": 0,
    "stop_after_steps": None,
    "progress": True,
    "mixed_precision": None,
    "sync_batchnorm": False,
    "freeze": [],
    "best_metric": "val_top1",
    "plot": True,
    # multi_worker only: where the cluster comes from (training/cluster.py).
    "cluster": "tf_config",
}
PRECISION_POLICIES = (None, "float32", "mixed_float16", "mixed_bfloat16")
METRICS = ("top1", "top5")
# Keys of a dataset block that say where the records are (the trainer's);
# the rest shape the pipeline. Both derive from `data/spec.py`.
DATASET_KEYS = tuple(f.name for f in dataclasses.fields(data_spec.Source))


def train_loop_config(stage, source):
    """The `train_loop` block with defaults filled and unknown keys rejected."""
    block = dict(stage.get("train_loop") or {})
    for key in block:
        if key not in TRAIN_LOOP_DEFAULTS:
            close = difflib.get_close_matches(key, TRAIN_LOOP_DEFAULTS, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(
                source, f"train_loop.{key}",
                f"unknown key.{hint} Accepted: {', '.join(TRAIN_LOOP_DEFAULTS)}",
            )
    loop = {**TRAIN_LOOP_DEFAULTS, **block}
    if loop["mixed_precision"] not in PRECISION_POLICIES:
        raise ConfigError(
            source, "train_loop.mixed_precision", f"must be one of {list(PRECISION_POLICIES)}. "
            f"Received: {loop['mixed_precision']!r}"
        )
    return loop


def metric_names(stage, source):
    names = stage.get("metrics") or list(METRICS)
    for i, name in enumerate(names):
        if name not in METRICS:
            raise ConfigError(
                source, "metrics", f"unknown metric {name!r} (item {i}). "
                f"Accepted: {', '.join(METRICS)}"
            )
    return list(names)


class DatasetInfo:
    """A split's shard files plus what its manifest says (size, labels, flip)."""

    def __init__(self, files, manifest):
        self.files = files
        self.manifest = manifest or {}

    @property
    def num_examples(self):
        counts = self.manifest.get("counts", {})
        for key in ("written", "videos_written", "num_videos"):
            if key in counts:
                return int(counts[key])
        if "num_videos" in self.manifest:
            return int(self.manifest["num_videos"])
        return None

    @property
    def label_names(self):
        for key in ("label_names", "labels", "label_map"):
            names = self.manifest.get(key)
            if isinstance(names, list):
                return names
        return None

    @property
    def flip_label_map(self):
        return self.manifest.get("flip_label_map")


def dataset_info(block, source, key):
    """Finds the shard files and manifest of a `datasets.<name>` block."""
    if "files" in block:
        pattern = block["files"]
        files = kf_files.glob(pattern) if isinstance(pattern, str) else list(pattern)
        manifest_path = None
        if "split" in block and files:
            manifest_path = os.path.join(
                os.path.dirname(files[0]), f"{block['split']}.manifest.json"
            )
    elif "dir" in block:
        split = block.get("split")
        if not split:
            raise ConfigError(source, f"{key}.dir", "`split` is required with `dir`.")
        files = kf_files.glob(os.path.join(block["dir"], f"{split}-*-of-*.tfrecord"))
        manifest_path = os.path.join(block["dir"], f"{split}.manifest.json")
    else:
        raise ConfigError(source, key, "a dataset needs `dir` + `split`, or `files`.")
    if not files:
        where = block.get("dir", block.get("files"))
        raise ConfigError(
            source, key, f"no TFRecord shards found for {where!r} "
            f"(split {block.get('split')!r}). Run kf-convert first."
        )
    manifest = None
    if manifest_path and kf_files.exists(manifest_path):
        with kf_files.open_file(manifest_path) as f:
            manifest = json.load(f)
    info = DatasetInfo(files, manifest)
    if "num_examples" in block:
        info.manifest.setdefault("counts", {})["written"] = block["num_examples"]
    return info


def class_matrix(block, source, key, *, units=None, num_classes=None):
    """The L2-normalized (C, D) class-name embeddings of a zero-shot dataset.

    `class_embeddings` names a `.npy` file written by
    `tools/embed_class_names.py`; row i embeds class i of the dataset's
    label map. Returns None when the block has none (a classification set).

    Args:
        units: int or None. The model head's output width (EmbeddingHead
            `units`); D must equal it. None skips the check.
        num_classes: int or None. The dataset's class count (the manifest's
            label names); C must equal it. None skips the check.

    Raises:
        ConfigError: at `{key}.class_embeddings`, for an unreadable file, a
            file that is not 2-D, or a (C, D) other than (num_classes, units).
    """
    path = block.get("class_embeddings")
    if not path:
        return None
    where = f"{key}.class_embeddings"
    try:
        matrix = np.load(path).astype(np.float32)
    except (OSError, ValueError) as err:
        raise ConfigError(source, where, f"cannot read {path!r}: {err}") from None
    if matrix.ndim != 2:
        raise ConfigError(source, where,
                          f"{path} must hold a (classes, dim) matrix. "
                          f"Received shape {matrix.shape}")
    expected = (matrix.shape[0] if num_classes is None else int(num_classes),
                matrix.shape[1] if units is None else int(units))
    if matrix.shape != expected:
        raise ConfigError(
            source, where,
            f"{path} must hold one row per class of the dataset (num_classes="
            f"{num_classes}) and one column per unit of the model head (units="
            f"{units}): expected shape {expected}. Received shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def embedding_units(stage):
    """The `units` of the stage's `EmbeddingHead` (`model.<Family>.head`), or
    None for a classifier head or a model block this cannot read."""
    block = stage.get("model")
    if not isinstance(block, dict) or len(block) != 1:
        return None
    kwargs = next(iter(block.values()))
    head = kwargs.get("head") if isinstance(kwargs, dict) else None
    if isinstance(head, dict) and isinstance(head.get("EmbeddingHead"), dict):
        return head["EmbeddingHead"].get("units")
    return None


def resolve_flip(spec, info, source, key):
    """`spec` with `flip: manifest / true / ssv2_tdn` resolved to the label map."""
    flip = spec.augment.flip
    if flip is True or flip == "manifest":
        if info.flip_label_map is None:
            raise ConfigError(
                source, f"{key}.flip", "the manifest declares no flip_label_map; "
                "give the map as a list (label after flipping per class, -1 = never flip).")
        return spec.with_flip_map(info.flip_label_map)
    if flip == "ssv2_tdn":
        return spec.with_flip_map(
            transforms.tdn_flip_label_map(len(info.label_names or []) or 174))
    return spec


# Train-pipeline values the trainer sets from the strategy and the step.
PLACEMENT_KEYS = ("start_batch",) + pipeline.PLACEMENT_KEYWORDS


def make_train_dataset(block, info, source, key, *, seed, placement=None):
    """`pipeline.train_dataset` from a `datasets.train` block.

    The block is a flat `spec.TrainData` (docs/options.md); `flip:
    manifest` takes the manifest's label map, mixup / cutmix the manifest's
    class count.

    Args:
        block: dict. The dataset block; `batch_size` is the global batch.
        info: `DatasetInfo`.
        source, key: for located `ConfigError`s.
        seed: int. Used unless the block sets `seed`.
        placement: dict or None. Set by the trainer or the tf.data service,
            not the config: this input pipeline's `batch_size` (per
            replica), `start_batch`, the `PLACEMENT_KEYS`, and spec
            overrides (`repeat`, `drop_remainder`). Defaults to None.

    Returns:
        `tf.data.Dataset` of (clips, labels) batches.

    Raises:
        ConfigError: on a bad option, or a block that sets a placement key.
    """
    for name in PLACEMENT_KEYS:
        if name in block:
            raise ConfigError(
                source, f"{key}.{name}", "is set by the trainer (from the strategy "
                "and the checkpoint step); remove it from the config.")
    placement = dict(placement or {})
    start_batch = placement.pop("start_batch", 0)
    where = {k: placement.pop(k) for k in pipeline.PLACEMENT_KEYWORDS if k in placement}
    spec = train_spec(block, info, source, key, seed=seed, overrides=placement)
    try:
        return pipeline.train_dataset(info.files, spec, start_batch=start_batch,
                                      placement=pipeline.Placement(**where))
    except (TypeError, ValueError) as err:
        raise ConfigError(source, key, str(err)) from None


def train_spec(block, info, source, key, *, seed, overrides=None):
    """The `spec.TrainData` of a `datasets.train` block, flips resolved."""
    extra = {"seed": seed}
    if (block.get("mixup_alpha") or block.get("cutmix_alpha")) and info.label_names:
        extra["num_classes"] = len(info.label_names)
    spec = data_spec.TrainData.from_block({**block, **(overrides or {})}, source, key,
                                          **extra)
    return resolve_flip(spec, info, source, key)


def make_model(stage, source, *, num_classes=None):
    block = stage.get("model")
    if block is None:
        raise ConfigError(source, "model", "the stage has no model. "
                          f"Accepted: {', '.join(models.available())}")
    name, kwargs = split_component(block, source, "model", MODELS)
    accepted = MODELS.accepted_args(name)
    if num_classes is not None and "num_classes" in accepted and "num_classes" not in kwargs:
        kwargs["num_classes"] = num_classes
    try:
        return models.build(name, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(source, f"model.{name}", str(err)) from None


def apply_freeze(model, patterns, source):
    """Sets `trainable=False` on layers whose name matches any regex in `patterns`.

    A frozen BatchNormalization also stops updating its statistics (Keras 3
    runs it in inference mode), as a frozen backbone should.
    """
    if not patterns:
        return []
    compiled = []
    for i, pattern in enumerate(patterns):
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise ConfigError(source, "train_loop.freeze", f"item {i}: bad regex "
                              f"{pattern!r}: {err}") from None
    frozen = []
    for layer in model._flatten_layers(include_self=False):
        if any(p.fullmatch(layer.name) for p in compiled):
            layer.trainable = False
            frozen.append(layer.name)
    if not frozen:
        raise ConfigError(source, "train_loop.freeze", f"no layer name matches {patterns}. "
                          f"Some names: {', '.join(l.name for l in model.layers[:8])}")
    return frozen


def synchronize_batchnorm(model):
    """SyncBN: batch statistics over the global batch (TF backend only)."""
    count = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True  # read at call time by Keras 3's BN
            count += 1
    return count


def make_loss(stage, source):
    block = stage.get("loss") or {"SparseCategoricalCrossentropy": {"from_logits": True}}
    name, kwargs = split_component(block, source, "loss", LOSSES)
    accepted = LOSSES.accepted_args(name)
    if "reduction" in accepted:
        kwargs["reduction"] = None  # the loop averages over the global batch
    try:
        return LOSSES[name](**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(source, f"loss.{name}", str(err)) from None


def make_optimizer(stage, source, *, steps_per_epoch, global_batch=None):
    block = stage.get("optimizer") or {"Adam": {}}
    name, kwargs = split_component(block, source, "optimizer", OPTIMIZERS)
    lr = kwargs.get("learning_rate")
    if isinstance(lr, (dict, str)):
        kwargs["learning_rate"] = build_component(
            lr, source, f"optimizer.{name}.learning_rate", SCHEDULES,
            steps_per_epoch=steps_per_epoch, global_batch=global_batch,
        )
    try:
        return OPTIMIZERS[name](**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(source, f"optimizer.{name}", str(err)) from None


def validate_stage(stage, source):
    """Checks names and arguments of a stage without building or reading data.

    Raises ConfigError on the first unknown component, argument or pipeline
    option. Nested schedules (e.g. `LinearScaled.schedule`) are checked too.
    """
    train_loop_config(stage, source)
    values.check_stage(stage, source)  # types and ranges of the loop/data values
    metric_names(stage, source)
    split_component(stage.get("model"), source, "model", MODELS)
    loss_name, _ = split_component(stage.get("loss") or {"SparseCategoricalCrossentropy": {}},
                                   source, "loss", LOSSES)
    train = (stage.get("datasets") or {}).get("train") or {}
    if (train.get("mixup_alpha") or train.get("cutmix_alpha")) and loss_name != "SoftTargetCrossentropy":
        raise ConfigError(source, f"loss.{loss_name}", "mixup/cutmix makes soft (B, classes) "
                          "labels: use loss {SoftTargetCrossentropy: {}}.")
    name, kwargs = split_component(stage.get("optimizer") or {"Adam": {}}, source,
                                   "optimizer", OPTIMIZERS)
    key, lr = f"optimizer.{name}.learning_rate", kwargs.get("learning_rate")
    while isinstance(lr, (dict, str)):
        sname, skwargs = split_component(lr, source, key, SCHEDULES)
        key, lr = f"{key}.{sname}.schedule", skwargs.get("schedule")
    check_datasets(stage, source)
    init_weights_config(stage, source)


def check_datasets(stage, source):
    """Every dataset block against its spec (`data/spec.py`): names, types,
    ranges and combinations, each error located at its key."""
    for role, block in (stage.get("datasets") or {}).items():
        if role != "train" and "service" in block:
            raise ConfigError(source, f"datasets.{role}.service", "only datasets.train "
                              "reads through the tf.data service; remove it here.")
        if not isinstance(block, dict):
            raise ConfigError(source, f"datasets.{role}", "must be a dict of dataset "
                              f"options (docs/options.md). Received: {block!r}")
        data_spec.spec_class(role).from_block(block, source, f"datasets.{role}")


def check_stage(stage, source):
    """The values of a stage: `train_loop` types and ranges, and every
    dataset block against its spec."""
    values.check_stage(stage, source)
    check_datasets(stage, source)


def filled_stages(stages, source):
    """The stages with every dataset block written out in full: each option
    of its spec (`data/spec.py`) with the value the run will use, defaults
    included (what `kf-train --print-config` shows)."""
    out = copy.deepcopy(stages)
    for stage in out:
        for role, block in (stage.get("datasets") or {}).items():
            spec = data_spec.spec_class(role).from_block(block, source, f"datasets.{role}")
            stage["datasets"][role] = opts.to_flat(spec)
    return out


INIT_WEIGHTS_KEYS = {"path": str, "exclude": list, "strict": bool}


def init_weights_config(stage, source):
    """The stage's `init_weights: {path, exclude, strict}` block checked, or
    None. (The file itself is read when the stage starts: training/trainer.py.)"""
    block = stage.get("init_weights")
    if block is None:
        return None
    if isinstance(block, str):
        block = {"path": block}
    if not isinstance(block, dict) or not block.get("path"):
        raise ConfigError(source, "init_weights", "must be {path: FILE, exclude: [regex, "
                          f"...], strict: false}} (or a path). Received: {block!r}")
    for key, value in block.items():
        kind = INIT_WEIGHTS_KEYS.get(key)
        if kind is None:
            raise ConfigError(source, f"init_weights.{key}", "unknown key. Accepted: "
                              f"{', '.join(INIT_WEIGHTS_KEYS)}")
        if not isinstance(value, kind):
            raise ConfigError(source, f"init_weights.{key}", f"must be a {kind.__name__}. "
                              f"Received: {value!r}")
    return {"exclude": [], "strict": False, **block}


def current_lr(optimizer):
    """The base learning rate now (per-variable multipliers not included)."""
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


def plateau_controller(optimizer):
    """The optimizer's ReduceOnPlateau schedule, or None."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    schedule = getattr(inner, "_learning_rate", None)
    return schedule if isinstance(schedule, ReduceOnPlateau) else None
