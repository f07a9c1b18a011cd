"""The train pipeline over the records of `data/records.py`.

the record stage (`data/reading/resume.py`: per epoch, shards in an order
drawn from (seed, epoch) -> interleave (deterministic) -> block shuffle
keyed by (seed, epoch, block); resumable at any batch without re-reading
the epochs done) -> enumerate (the example index is the per-example seed)
-> parse -> sample clip indices -> gather only those JPEGs -> one crop
window per clip (from the first frame's JPEG header) -> decode of the
chosen frames, the window sliced -> resize -> flip with a label map ->
standardize -> batch -> erasing / mixing -> prefetch.

What it builds is read from a `spec.TrainData` (the options, declared once);
where it runs from a `Placement` (set by the trainer: input pipelines,
example keys, the bad-record log). The public entry point is
`pipeline.train_dataset`.

Randomness is stateless: example `i` of the (repeated) stream gets the key
`[seed, i]`, split into one seed per random decision, so the same `seed`
gives the same batches, and `start_batch=K` gives exactly batch K on (what
the trainer's resume uses).

Bad records (`data/reading/bad_records.py`): a truncated shard is found by
its headers when the pipeline is built, and its readable records are used;
a record that fails to parse or decode, or to read (a body that fails its
checksum: the shard is read past it), is named by `BadRecordLog.diagnose`
when the iterator raises, and every later build skips it (from the epoch it
was found in on, so resumes stay exact); `max_bad_records` bounds them. A
`skip_bad_records` pipeline drops them itself, so its resume holds the ones
it dropped in their place instead (`_stream_start`), as exact.

Distribution (`Placement(num_input_pipelines=P, input_pipeline_id=i)`, one
call per input pipeline, e.g. from
`strategy.distribute_datasets_from_function`): pipeline `i` reads either its
own shard files (`shard_policy="file"`: files i, i + P, ...) or every record
and keeps records i, i + P, ... of the shared interleaved stream before any
parsing (`shard_policy="data"`), so no pipeline decodes another's examples.
"auto" picks "file" when the files split evenly (see `shard_policy_for`).
Local example `j` of pipeline `i` draws from the key `[seed, j * P + i]`, so
no two pipelines share random draws, and with `shard_policy="data"` and no
example shuffle that key is the example's position in the single-pipeline
stream: P pipelines then produce exactly the clips of one.
"""

import dataclasses
import logging
import os

import tensorflow as tf

from klassterfork.config.options import OptionError
from klassterfork.data import records, transforms
from klassterfork.data.reading import bad_records as bad_records_lib
from klassterfork.data.reading import resume
from klassterfork.data.reading.clips import (
    AUTOTUNE, dataset_options, decode_clip, encoded_frames, first_image, first_label,
    flip_clip, graph_fn, list_files, stack_flow)
from klassterfork.data.reading.train_records import (
    _diagnoser, _example_namer, _examples, pipeline_seed, read_shards, shard_policy_for,
    stream_start)
from klassterfork.data.transforms import augment
from klassterfork.data.transforms.checks import check_choice
LOG = logging.getLogger(__name__)
# What keys an example's random draws (see `Placement`).
EXAMPLE_KEYS = ("position", "record")


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one train input pipeline runs; set by the trainer, not the config.

    Attributes:
        num_input_pipelines: int. Input pipelines of the job (P; workers
            under MultiWorkerMirroredStrategy); the spec's `batch_size` is
            then this pipeline's (per-replica) batch. Defaults to 1.
        input_pipeline_id: int in [0, P). Which pipeline this is.
        example_key: str. What an example's random draws (clip, crop, flip,
            augmentations; erasing and mixing per batch) are keyed by:
            "position", its place in this pipeline's stream, or "record":
            (shard file name, epoch, record, view), so pipelines that number
            their examples alike still draw apart (the tf.data service sets
            it: each worker numbers what it reads from 0). Either way a
            resume at `start_batch` is exact. Defaults to "position".
        bad_records: `bad_records.BadRecordLog`, a path to a
            `bad_records.jsonl`, or None (an in-memory log). The records it
            names are skipped; truncated shards found are added to it; the
            trainer calls its `diagnose` when the iterator raises.
        skip_bad_records: bool. Drop an example that fails to parse or
            decode inside the pipeline, before the batch (`ignore_errors`
            after the per-example map), and name it in `bad_records` from
            the gap it leaves in the example indices (a `tf.py_function` on
            the process that runs the pipeline replays that example
            eagerly). For multi-worker runs, where a failed step cannot be
            retried on one worker. A batch that met a bad record takes the
            next example instead; clean data gives the same batches as
            without it. Over the budget, the log's `over_budget` holds the
            `BadRecordsError` (the trainer stops with it). Defaults to False.
        bad_records_dir: str or None. For a pipeline that runs in another
            process (a tf.data service worker, where no `tf.py_function`
            can run): each example is decoded under a guard (a one-element
            dataset with `ignore_errors`, then a flagged stand-in when it
            came out empty), flagged examples are dropped with `filter`,
            and each is recorded as an empty file
            `e<epoch>-r<record>-<shard>.bad` in this folder (`tf.io.write_file`);
            `BadRecordLog.collect` names them. Defaults to None.
    """

    num_input_pipelines: int = 1
    input_pipeline_id: int = 0
    example_key: str = "position"
    bad_records: object = None
    skip_bad_records: bool = False
    bad_records_dir: str = None

    def __post_init__(self):
        if not (_is_int(self.num_input_pipelines) and self.num_input_pipelines >= 1):
            raise ValueError("`num_input_pipelines` must be an int >= 1. Received: "
                             f"num_input_pipelines={self.num_input_pipelines!r}")
        if not _is_int(self.input_pipeline_id) or not (
                0 <= self.input_pipeline_id < self.num_input_pipelines):
            raise ValueError(
                "`input_pipeline_id` must be an int in [0, num_input_pipelines). "
                f"Received: input_pipeline_id={self.input_pipeline_id!r}, "
                f"num_input_pipelines={self.num_input_pipelines}")
        check_choice(self.example_key, EXAMPLE_KEYS, "example_key")


@dataclasses.dataclass(frozen=True)
class _Build:
    """One build of the pipeline: the spec, where it runs, its seed, its start."""

    spec: object
    placement: Placement
    seed: int
    seeded: bool
    start_batch: int
    rand_augment: dict
    random_erasing: dict


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def train_dataset(files, spec, *, start_batch=0, placement=None):
    """The training pipeline: random clips, one random crop per clip, flips.

    Args:
        files: glob pattern, directory of `*.tfrecord`, or list of paths.
        spec: `spec.TrainData`. What to build (docs/options.md lists every
            option). `flip: manifest` must be resolved first
            (`spec.with_flip_map`).
        start_batch: int. Batches of THIS pipeline already consumed
            (resume). Batch `start_batch` is exactly the one an uninterrupted
            iterator would give next (when the spec sets a seed; without one
            the log line says the resume is not exact), and the cost does not
            grow with the epochs done: the shard order and shuffle of an
            epoch depend only on (seed, epoch), each open shard skips its
            own consumed records by their headers, and one shuffle block is
            read (`data/reading/resume.py`). Defaults to 0.
        placement: `Placement` or None (one pipeline, position keys, an
            in-memory bad-record log).

    Returns:
        `tf.data.Dataset` of `(clips, labels)`: float32 (B, T, H, W, 3)
        (uint8 with standardize="none"; (B, 1, S, S, 2T) for flow) and int32
        (B,) (float32 (B, C) soft labels with mixup / cutmix).

    Raises:
        ValueError: on a bad placement or start; `bad_records.BadRecordsError`
            when the bad records already known exceed the budget.
    """
    build = _prepare(spec, start_batch, placement or Placement())
    layout, log, budget = _layout(list_files(files), build)
    make_clip = _clip_fn(build, [os.path.basename(p) for p in layout.shards.paths])
    log.register(build.placement.input_pipeline_id, _diagnoser(
        layout, make_clip, batch_size=spec.batch_size,
        repeated_views=spec.augment.repeated_views, repeat=spec.reading.repeat), budget)

    start = _stream_start(layout, build)
    ds = _examples(layout, start_example=start, repeated_views=spec.augment.repeated_views,
                   repeat=spec.reading.repeat, seeded=build.seeded)
    if build.placement.bad_records_dir:
        ds = _flagging_bad_examples(ds, make_clip, build, build.placement.bad_records_dir,
                                    [os.path.basename(p) for p in layout.shards.paths])
        log.watch(build.placement.bad_records_dir, layout.shards.paths)
    elif build.placement.skip_bad_records:
        ds = _skipping_bad_examples(ds, make_clip, build, _example_namer(
            layout, make_clip, repeated_views=spec.augment.repeated_views,
            repeat=spec.reading.repeat), log, budget, start)
    else:
        ds = ds.map(graph_fn(make_clip),
                    num_parallel_calls=spec.reading.num_parallel_calls, deterministic=True)
    ds = ds.batch(spec.batch_size, drop_remainder=spec.reading.drop_remainder)
    ds = _batch_stages(ds, build)
    return ds.prefetch(AUTOTUNE).with_options(dataset_options())


def _prepare(spec, start_batch, placement):
    """The `_Build`: the seed drawn when the spec sets none, options checked."""
    if not (_is_int(start_batch) and start_batch >= 0):
        raise ValueError(f"`start_batch` must be an int >= 0. Received: "
                         f"start_batch={start_batch!r}")
    spec.augment.flip_label_map  # noqa: B018  (raises when `flip` is unresolved)
    if spec.mixing.mixes and not spec.mixing.num_classes:
        # Checked here, not in the spec: a config takes it from the manifest.
        raise OptionError("num_classes", "mixup/cutmix needs `num_classes`. Received: "
                                         f"num_classes={spec.mixing.num_classes!r}")
    seed = spec.reading.seed
    seeded = seed is not None
    if not seeded:
        seed = int.from_bytes(os.urandom(4), "little") >> 1
    return _Build(spec, placement, int(seed), seeded, start_batch,
                  spec.rand_augment_kwargs(run=True), spec.random_erasing_kwargs(run=True))


def _layout(paths, build):
    """The record stage's `resume.Layout` for this pipeline, the bad-record
    log (`bad_records.BadRecordLog`, from the placement's: one, a path or
    None) and the budget; raises `BadRecordsError` when the known bad
    records exceed it."""
    spec, place = build.spec, build.placement
    all_paths = paths
    log = place.bad_records
    if not isinstance(log, bad_records_lib.BadRecordLog):
        log = bad_records_lib.BadRecordLog(log)
    num_pipes, pipe_id = place.num_input_pipelines, place.input_pipeline_id
    policy = shard_policy_for(len(paths), num_pipes, spec.reading.shard_policy)
    own_seed = pipeline_seed(build.seed, pipe_id)
    if policy == "file":
        paths = paths[pipe_id::num_pipes]  # = Dataset.shard on the file list
    layout = resume.Layout(
        shards=resume.Shards((), ()),  # read below, once the layout can locate
        # "data": every pipeline must see the same stream, so the same order.
        file_seed=own_seed if policy == "file" else build.seed,
        shuffle_seed=own_seed + 1,
        cycle_length=spec.reading.cycle_length,
        shuffle_buffer=spec.reading.shuffle_buffer,
        num_shares=num_pipes if policy == "data" else 1,
        share=pipe_id if policy == "data" else 0,
        # These drop a bad example and go on: a shard must not stop at one.
        guarded=place.skip_bad_records or bool(place.bad_records_dir),
    )
    # A truncated shard found now is cut from the epoch the run starts in.
    start = build.start_batch * spec.batch_size // spec.augment.repeated_views
    layout = dataclasses.replace(layout, shards=read_shards(paths, log, epoch_of=(
        lambda shards: dataclasses.replace(layout, shards=shards).locate(start)[0]),
        # It drops them after the record stage, as the run that dropped them.
        hold=place.skip_bad_records and not place.bad_records_dir))
    budget = spec.reading.max_bad_records
    if budget is None:
        # A fraction of the WHOLE train set (every pipeline's shards), as the
        # log counts every worker's entries: the meaning does not depend on P.
        every = layout.shards.counts if len(paths) == len(all_paths) else [
            resume.count_records(p)[0] for p in all_paths]
        budget = bad_records_lib.default_budget(sum(every))
    log.check_budget(budget)
    return layout, log, budget


def _stream_start(layout, build):
    """The stream position of this pipeline's batch `start_batch`: with
    records held in place (`resume.Shards.hold`: dropped mid-run by a
    `skip_bad_records` pipeline), the examples it dropped before are counted,
    so batches, order and random draws are the dropping run's."""
    batch_start = build.start_batch * build.spec.batch_size
    start = stream_start(layout, batch_start, build.spec.augment.repeated_views)
    if start != batch_start:
        LOG.info("batch %d starts at example %d of this pipeline's stream: %d example(s) "
                 "of records held in place (dropped by the pipeline, as in the run that "
                 "found them) come before it", build.start_batch, start, start - batch_start)
    return start


def _flagging_bad_examples(ds, make_clip, build, out_dir, shard_names):
    """The per-example map with bad examples flagged, dropped and recorded as
    files in `out_dir` (see `Placement.bad_records_dir`); pure graph ops."""
    names = tf.constant(shard_names)
    spec = ds.map(graph_fn(make_clip)).element_spec  # traced only
    stand_in = tuple(tf.zeros([d or 0 for d in s.shape.as_list()], s.dtype) for s in spec)

    def guarded(index, record):
        epoch, file, record_index, _ = record
        good = tf.data.Dataset.from_tensors((index, record)).map(
            graph_fn(lambda i, r: (True, *make_clip(i, r)))).ignore_errors()

        def flag(_):
            path = tf.strings.join([
                out_dir, "/e", tf.strings.as_string(epoch), "-r",
                tf.strings.as_string(record_index), "-", tf.gather(names, file), ".bad"])
            with tf.control_dependencies([tf.io.write_file(path, "")]):
                return (tf.constant(False), *stand_in)

        return good.concatenate(tf.data.Dataset.from_tensors(0).map(graph_fn(flag))).take(1)

    parallel = build.spec.reading.num_parallel_calls
    ds = ds.interleave(graph_fn(guarded), cycle_length=parallel if parallel != AUTOTUNE
                       else None, block_length=1, num_parallel_calls=parallel,
                       deterministic=True)
    ds = ds.filter(lambda ok, *element: ok)
    return ds.map(lambda ok, *element: tuple(
        tf.ensure_shape(x, s.shape) for x, s in zip(element, spec)))


def _skipping_bad_examples(ds, make_clip, build, name_examples, log, budget, start):
    """The per-example map with bad examples dropped and named (see
    `Placement.skip_bad_records`): `ignore_errors` right after the map, then
    a scan that finds the gaps in the example indices and names them."""
    spec = build.spec

    def clip_and_index(index, record):
        return (*make_clip(index, record), index)

    def name(first, stop):
        found = log.add(name_examples(int(first), int(stop) - int(first)))
        if not found:
            LOG.warning("examples %d to %d were dropped by the pipeline but are not "
                        "new bad records (named before, or they decode on their own)",
                        int(first), int(stop) - 1)
        try:
            log.check_budget(budget)
        except bad_records_lib.BadRecordsError as err:
            log.over_budget = err
        return len(found)

    def find_gaps(expected, element):
        index = tf.cast(element[-1], tf.int64)
        named = tf.cond(index > expected, lambda: tf.py_function(
            name, [expected, index], tf.int64), lambda: tf.constant(0, tf.int64))
        with tf.control_dependencies([named]):
            index = tf.identity(index)
        return index + 1, element[:-1]

    ds = ds.map(graph_fn(clip_and_index), num_parallel_calls=spec.reading.num_parallel_calls,
                deterministic=True).ignore_errors()
    return ds.scan(tf.constant(start, tf.int64), graph_fn(find_gaps))


def _example_key(build, names, index, epoch, file, record_index):
    """int64 [2]: the key of every random draw of one example.

    example_key="position": example `index` of pipeline i draws from
    `[seed, index * P + i]` (unique over pipelines); "record": from
    `_record_key`, which the batch stages also use.
    """
    place = build.placement
    if place.example_key == "record":
        return _record_key(build.seed, tf.gather(names, file), epoch, record_index,
                           tf.cast(index, tf.int64) % build.spec.augment.repeated_views)
    unique = tf.cast(index, tf.int64) * place.num_input_pipelines + place.input_pipeline_id
    return tf.stack([tf.constant(build.seed, tf.int64), unique])


def _clip_fn(build, shard_names):
    """`(index, (epoch, file, record, serialized)) -> (clip, label)`: one
    random clip of a video (`(clip, label, key)` with example_key="record")."""
    spec = build.spec
    names = tf.constant(shard_names)

    def make_clip(index, record):
        epoch, file, record_index, serialized = record
        example = records.parse(serialized, with_flow=spec.modality == "flow")
        key = _example_key(build, names, index, epoch, file, record_index)
        seed_clip, seed_crop, seed_aug, seed_step = tf.unstack(
            tf.random.experimental.stateless_split(key, num=4))
        indices = transforms.train_clip_indices(example["num_frames"], spec.sampling,
                                                 seed_clip, seed_step)
        flip, reverse, label = transforms.choose_augmentations(
            first_label(example["labels"]), seed_aug,
            flip_label_map=spec.augment.flip_label_map,
            flip_prob=spec.augment.flip_probability,
            reverse_label_map=spec.augment.reverse_label_map,
            reverse_prob=spec.augment.reverse_prob,
            policy=spec.augment.augment_policy)
        if spec.may_reverse:
            # Time reversal is free on indices: reverse them before decoding.
            indices = tf.where(reverse, tf.reverse(indices, [0]), indices)
        clip = _crop_and_augment(build, encoded_frames(example, indices, spec.modality),
                                 seed_crop, seed_aug, flip)
        if placement_keys_records(build):
            return clip, label, key[1]
        return clip, label

    return make_clip


def placement_keys_records(build):
    return build.placement.example_key == "record"


def _crop_and_augment(build, encoded, seed_crop, seed_aug, flip):
    """The clip of `encoded` frames: one crop window, decoded, resized,
    flipped, RandAugment, flow stacked, standardized."""
    spec, modality = build.spec, build.spec.modality
    window = _train_window(
        tf.image.extract_jpeg_shape(first_image(encoded, modality)), seed_crop,
        crop=spec.crop.crop, crop_size=spec.crop.crop_size, crop_scale=spec.crop.crop_scale)
    clip = transforms.resize(decode_clip(encoded, window, modality),
                             crop_size=spec.crop.crop_size)
    if spec.may_flip:
        clip = tf.cond(flip, lambda: flip_clip(clip, modality), lambda: clip)
    if build.rand_augment is not None:
        # fold_in: a new stream, so the clip / crop / flip draws stay as
        # they are without RandAugment.
        clip = augment.rand_augment(
            clip, tf.random.experimental.stateless_fold_in(seed_aug, 1), **build.rand_augment)
    if modality == "flow":
        clip = stack_flow(clip)
    norm = spec.standardize
    if norm.standardize != "none":
        # Per clip, while its pixels are still in cache: on the batch the
        # same work cost ~0.45 ms more CPU per 16x112^2 clip (bench in
        # BENCHMARKS.md), more than copying float32 into the batch.
        clip = transforms.standardize(clip, norm.standardize, mean=norm.mean, std=norm.std)
    return clip


def _record_key(seed, shard_name, epoch, record_index, view):
    """int64 [2]: the draws' key of view `view` of record `record_index` of
    shard `shard_name` in `epoch` (the name, not the file's index: pipelines
    that list other files still agree)."""
    key = tf.stack([tf.constant(seed, tf.int64),
                    tf.strings.to_hash_bucket_fast(shard_name, 2**62)])
    for part in (epoch, record_index, view):
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(part, tf.int64))
    return key


def _batch_key(build, index, batch, offset):
    """The key of a batch's erasing / mixing: the batch index (unique over
    pipelines, counted from the run's start), or with example_key="record"
    the batch's first example's key; a resumed run erases and mixes alike."""
    seed = tf.constant(build.seed + offset, tf.int64)
    if placement_keys_records(build):
        return tf.stack([seed, batch[2][0]])
    place = build.placement
    batch_index = ((index + build.start_batch) * place.num_input_pipelines
                   + place.input_pipeline_id)
    return tf.stack([seed, batch_index])


def _batch_stages(ds, build):
    """Random erasing, mixup / cutmix: the batch-level stages."""
    mixing = build.spec.mixing
    if build.random_erasing is not None:

        def erase(index, batch):
            clips = augment.random_erasing(batch[0], _batch_key(build, index, batch, 3),
                                           **build.random_erasing)
            return (clips, *batch[1:])

        ds = ds.enumerate().map(erase, num_parallel_calls=AUTOTUNE, deterministic=True)
    if mixing.mixes:

        def mix(index, batch):
            mixed = transforms.mix_batch(
                batch[0], batch[1], _batch_key(build, index, batch, 2),
                num_classes=mixing.num_classes, mixup_alpha=mixing.mixup_alpha,
                cutmix_alpha=mixing.cutmix_alpha, switch_prob=mixing.mix_switch_prob,
                prob=mixing.mix_prob, label_smoothing=mixing.label_smoothing)
            return (*mixed, *batch[2:])

        ds = ds.enumerate().map(mix, num_parallel_calls=AUTOTUNE, deterministic=True)
    if placement_keys_records(build):
        ds = ds.map(lambda clips, labels, keys: (clips, labels))
    return ds


# crop name -> (image_size, seed, crop_size, crop_scale) -> window [y, x, h, w]
_CROP_WINDOWS = {
    "random": lambda size, seed, crop_size, scale: transforms.random_crop_window(
        size, seed, crop_size=crop_size, scale=scale
    ),
    "multi_scale": lambda size, seed, crop_size, scale: (
        transforms.multi_scale_crop_window(size, seed, crop_size=crop_size)
    ),
    "random_resized": lambda size, seed, crop_size, scale: (
        transforms.random_resized_crop_window(size, seed)
    ),
    "centre": lambda size, seed, crop_size, scale: transforms.spatial_crop_windows(
        size, crop_size=crop_size
    )[0],
}


def _train_window(image_size, seed, *, crop, crop_size, crop_scale):
    return _CROP_WINDOWS[crop](image_size, seed, crop_size, crop_scale)
