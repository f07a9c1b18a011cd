"""What a training stage reads: its train input function under a
`tf.distribute` strategy, its steps per epoch from the manifest, and the
data checks made before anything is built."""

from klassterfork.config.loader import ConfigError
from klassterfork.data import spec as data_spec
from klassterfork.data.reading import preflight
from klassterfork.training import builders


def train_input_fn(block, info, source, key, *, global_batch, seed, start_step,
                   bad_records=None):
    """The `dataset_fn` of `strategy.distribute_datasets_from_function`.

    Called once per input pipeline (one per worker) with its
    `tf.distribute.InputContext`, it builds that pipeline's share of the
    train set (`pipeline.train_dataset` with `num_input_pipelines`,
    `input_pipeline_id` and `shard_policy`, config key
    `datasets.train.shard_policy`), batched per replica. A global step takes
    one batch per replica, i.e. `num_replicas_in_sync / num_input_pipelines`
    batches from every pipeline, so resuming at `start_step` skips
    `start_step` times that many batches of each pipeline. Batch-level
    mixup / cutmix therefore mixes within a per-replica batch (as timm and
    VideoMAE do per GPU).

    Returns:
        callable `InputContext -> tf.data.Dataset` of (B / replicas, ...)
        batches.
    """

    def dataset_fn(context):
        batches_per_step = context.num_replicas_in_sync // context.num_input_pipelines
        placement = {
            "batch_size": context.get_per_replica_batch_size(global_batch),
            "start_batch": start_step * batches_per_step,
            "num_input_pipelines": context.num_input_pipelines,
            "input_pipeline_id": context.input_pipeline_id,
        }
        if bad_records is not None:  # skipped records, named (data/reading/bad_records.py)
            placement["bad_records"] = bad_records
            # Several workers: a failed step cannot be retried on one of them
            # (the peers wait in its collectives): drop bad records in the
            # pipeline, before the batch (`Placement.skip_bad_records`).
            placement["skip_bad_records"] = context.num_input_pipelines > 1
        return builders.make_train_dataset(
            block, info, source, key, seed=seed, placement=placement
        )

    return dataset_fn


def steps_from_manifest(info, block, source):
    """Steps per epoch: every video once, with all its repeated views.

    With `datasets.train.repeated_views: k` an epoch is k x videos clips
    (VideoMAE's `num_sample`: each video, k views per visit), so
    steps = videos * k // global batch.
    """
    count = info.num_examples
    if count is None:
        raise ConfigError(
            source, "datasets.train", "the manifest gives no video count: set "
            "train_loop.steps_per_epoch or datasets.train.num_examples."
        )
    spec = builders.train_spec(block, info, source, "datasets.train", seed=0)
    views, batch = spec.augment.repeated_views, spec.batch_size
    steps = count * views // batch
    if steps < 1:
        raise ConfigError(
            source, "datasets.train.batch_size",
            f"batch_size {batch} is larger than the {count} training "
            f"videos x {views} view(s).",
        )
    return steps


def check_data(stage, source, *, warn=print, missing_ok=False):
    """Checks every dataset of a stage against its manifest and the config
    (`data/reading/preflight.py`) before anything is built.

    Returns:
        list of str: the dataset keys whose data was not found (only with
        `missing_ok`, for `--dry-run`; otherwise that raises).
    """
    model = stage.get("model")
    num_classes, classes_key = None, "model"
    if isinstance(model, dict) and len(model) == 1:
        (name, kwargs), = model.items()
        if isinstance(kwargs, dict) and kwargs.get("num_classes") is not None:
            num_classes, classes_key = int(kwargs["num_classes"]), f"model.{name}.num_classes"
    missing, found = [], {}
    for role, block in (stage.get("datasets") or {}).items():
        key = f"datasets.{role}"
        try:
            info = builders.dataset_info(block, source, key)
        except ConfigError as err:
            if not missing_ok:
                raise
            missing.append(f"{key} ({err.problem})")
            continue
        preflight.check_dataset(
            dataset_spec(role, block, info, source), info, source, key, explicit=set(block),
            warn=warn, num_classes_key=classes_key,
            num_classes=None if block.get("class_embeddings") else num_classes,
        )
        found[role] = (block, info)
    preflight.check_label_maps(found, source)  # train vs val classes
    return missing


def dataset_spec(role, block, info, source):
    """The `TrainData` / `EvalData` of a `datasets.<role>` block."""
    key = f"datasets.{role}"
    if role == "train":
        return builders.train_spec(block, info, source, key, seed=0)
    return data_spec.EvalData.from_block(block, source, key)


def planned_steps(stage, source):
    """`train_loop.epochs` x steps per epoch of a stage, from its config and
    manifest alone (no model built); None for a stage without a train set."""
    loop = builders.train_loop_config(stage, source)
    block = (stage.get("datasets") or {}).get("train")
    if block is None:
        return None
    spe = loop["steps_per_epoch"] or steps_from_manifest(
        builders.dataset_info(block, source, "datasets.train"), block, source)
    return int(loop["epochs"]) * int(spe)
