"""tf.data input pipelines over the records of `data/records.py`: the public entry points.

    from klassterfork.data import pipeline
    from klassterfork.data.spec import EvalData, TrainData

    spec = TrainData.from_flat(clip_len=16, crop_size=112, batch_size=8, seed=0)
    ds = pipeline.train_dataset("records/train-*.tfrecord", spec)
    val = pipeline.eval_dataset(files, EvalData.from_flat(
        clip_len=16, crop_size=112, num_clips=10, num_crops=3, batch_size=4))

`TrainData` / `EvalData` (`data/spec.py`) declare every option once, with
its type, default, accepted values and doc (docs/options.md). The pipelines
themselves live in `data/reading/`: `train_pipeline.py` (random clips, the
resumable record stage, bad records, input-pipeline placement),
`eval_pipeline.py` (every video once as `num_clips x num_crops` views) and
`clips.py` (what both share).

The calls of earlier releases, with the options as keyword arguments
(`train_dataset(files, clip_len=16, crop_size=112, batch_size=8, ...)`),
still work: the keywords are turned into the spec (and `Placement`) and a
`DeprecationWarning` shows the new call.
"""

import functools
import warnings

from klassterfork.config import options as opts
from klassterfork.data.reading import eval_pipeline, train_pipeline
from klassterfork.data.reading.clips import (  # noqa: F401  (public names)
    decode_frames, flip_left_right, list_files, stack_flow)
from klassterfork.data.reading.train_pipeline import Placement
from klassterfork.data.reading.train_records import (  # noqa: F401  (public names)
    pipeline_seed, read_shards, shard_policy_for)
from klassterfork.data.spec import (  # noqa: F401  (public names)
    CROPS, MODALITIES, SHARD_POLICIES, EvalData, TrainData)

PLACEMENT_KEYWORDS = ("num_input_pipelines", "input_pipeline_id", "example_key",
                      "bad_records", "skip_bad_records", "bad_records_dir")


def _old_train_call(files, **keywords):
    """The old keyword call's (files, spec, start_batch, placement)."""
    placement = {k: keywords.pop(k) for k in PLACEMENT_KEYWORDS if k in keywords}
    start_batch = keywords.pop("start_batch", 0)
    # The old API flipped with labels unchanged unless given a label map.
    label_map = keywords.pop("flip_label_map", None)
    keywords["flip"] = list(label_map) if label_map is not None else "keep_labels"
    spec = opts.from_flat(TrainData, keywords)
    return files, spec, start_batch, Placement(**placement)


def _accepts_old_keywords(convert, new_call):
    """Lets `fn(files, **options)` (the old API) still call `fn(files, spec, ...)`."""

    def decorate(fn):
        @functools.wraps(fn)
        def call(*args, **keywords):
            if len(args) >= 2 or "spec" in keywords:
                return fn(*args, **keywords)
            warnings.warn(f"{fn.__name__}(files, option=..., ...) is the old call; "
                          f"use {new_call}", DeprecationWarning, stacklevel=2)
            return fn(*convert(*args, **keywords))

        return call

    return decorate


@_accepts_old_keywords(_old_train_call, "train_dataset(files, TrainData.from_flat("
                       "clip_len=..., ...), start_batch=..., placement=Placement(...))")
def train_dataset(files, spec, start_batch=0, placement=None):
    """Random clips, one random crop per clip, flips: see
    `reading.train_pipeline.train_dataset` (its docstring is the reference).

    Args:
        files: glob pattern, directory of `*.tfrecord`, or list of paths.
        spec: `TrainData`.
        start_batch: int. Batches of this pipeline already consumed (resume).
        placement: `Placement` or None.

    Returns:
        `tf.data.Dataset` of `(clips, labels)`.
    """
    return train_pipeline.train_dataset(files, spec, start_batch=start_batch,
                                        placement=placement)


def _old_eval_call(files, with_ids=False, **keywords):
    return files, opts.from_flat(EvalData, keywords), with_ids


@_accepts_old_keywords(_old_eval_call, "eval_dataset(files, EvalData.from_flat("
                       "clip_len=..., ...), with_ids=...)")
def eval_dataset(files, spec, with_ids=False):
    """Every video once as `num_clips x num_crops` views: see
    `reading.eval_pipeline.eval_dataset` (its docstring is the reference).

    Args:
        files: glob pattern, directory or list of paths; read in order.
        spec: `EvalData`.
        with_ids: bool. Add the video ids as a third element.

    Returns:
        `tf.data.Dataset` of `(clips, labels[, ids][, chunks])`.
    """
    return eval_pipeline.eval_dataset(files, spec, with_ids=with_ids)
