"""tf.data input pipelines over the records of `data/records.py`.

train: the record stage (`data/reading/resume.py`: per epoch, shards in an order
drawn from (seed, epoch) -> interleave (deterministic) -> block shuffle
keyed by (seed, epoch, block); resumable at any batch without re-reading
the epochs done) -> enumerate (the example index is the per-example seed)
-> parse -> sample clip indices -> gather only those JPEGs -> one crop
window per clip (from the first frame's JPEG header) ->
decode of the chosen frames, the window sliced -> resize -> flip with a label
map -> standardize -> batch -> prefetch.

eval: `eval_dataset`, every video once as `num_clips x num_crops` views
(`data/reading/eval_pipeline.py`, re-exported here). What both share (shard list,
decoding only the needed frames and window, flips) is in `data/reading/clips.py`.
(design.md puts all three in this module; they were split when it passed
950 lines, so each reads as one pipeline. The public names stay here.)

Randomness is stateless: example `i` of the (repeated) stream gets the key
`[seed, i]`, split into one seed per random decision, so the same `seed`
gives the same batches, and `train_dataset(start_batch=K)` gives exactly
batch K on (what the trainer's resume uses); the iterator can also be
checkpointed: `tf.train.Checkpoint(iterator=iter(ds))`.

Bad records (`data/reading/bad_records.py`): a truncated shard is found by its
headers when the pipeline is built, and its readable records are used; a
record that fails to parse or decode is named by `BadRecordLog.diagnose`
when the iterator raises, and every later build skips it (from the epoch it
was found in on, so resumes stay exact); `max_bad_records` bounds them.

Distribution (`train_dataset(num_input_pipelines=P, input_pipeline_id=i)`,
one call per input pipeline, e.g. from
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

import logging
import os
import re

import numpy as np
import tensorflow as tf

from klassterfork.data.transforms import augment
from klassterfork.data import records, transforms
from klassterfork.data.reading import resume
from klassterfork.data.reading import bad_records as bad_records_lib
from klassterfork.data.transforms.checks import check_choice
from klassterfork.data.reading.clips import (  # noqa: F401  (decode_frames, flip_left_right: public)
    AUTOTUNE, dataset_options, decode_clip, decode_frames, encoded_frames, first_image,
    first_label, flip_clip, flip_left_right, graph_fn, list_files, stack_flow)
from klassterfork.data.reading.eval_pipeline import eval_dataset  # noqa: F401  (public name)
from klassterfork.data.spec import (  # noqa: F401  (CROPS, MODALITIES: public names)
    CROPS, MODALITIES, SHARD_POLICIES, TrainSpec)

LOG = logging.getLogger(__name__)


def shard_policy_for(num_files, num_input_pipelines, shard_policy="auto"):
    """How `num_files` shard files are split over the input pipelines.

    "auto" chooses "file" when every pipeline gets whole files and the split
    is even enough: the file count divides evenly (`num_files % P == 0`), or
    every pipeline gets at least 4 files (`num_files >= 4 * P`, so no
    pipeline reads more than 5/4 of another's share of balanced shards).
    Otherwise "data": every pipeline reads all records and keeps every P-th
    one before parsing (reading is cheap next to JPEG decoding).

    Args:
        num_files: int. Shard files of the split.
        num_input_pipelines: int. P.
        shard_policy: str. "auto", "file" or "data". Defaults to "auto".

    Returns:
        str. "file" or "data" ("file" when P = 1: nothing to split).

    Raises:
        ValueError: on an unknown policy, or "file" with fewer files than
            pipelines (a pipeline would get no data).
    """
    check_choice(shard_policy, SHARD_POLICIES, "shard_policy")
    if num_input_pipelines == 1:
        return "file"
    if shard_policy == "file" and num_files < num_input_pipelines:
        raise ValueError(
            "`shard_policy`='file' needs at least one shard file per input "
            f"pipeline. Received: {num_files} file(s) for "
            f"num_input_pipelines={num_input_pipelines}; use 'data' or 'auto'"
        )
    if shard_policy != "auto":
        return shard_policy
    even = num_files % num_input_pipelines == 0
    if even or num_files >= 4 * num_input_pipelines:
        return "file"
    return "data"


def pipeline_seed(seed, input_pipeline_id):
    """The shuffle seed of input pipeline `input_pipeline_id`.

    Pipeline 0 keeps `seed` (a single pipeline shuffles as it always did);
    the others get a seed mixed from (seed, id) by `np.random.SeedSequence`,
    so two workers do not shuffle alike.

    Returns:
        int in [0, 2**31).
    """
    if input_pipeline_id == 0:
        return int(seed)
    state = np.random.SeedSequence([int(seed), int(input_pipeline_id)])
    return int(state.generate_state(1, np.uint32)[0] >> 1)


def read_shards(paths, log=None):
    """`resume.Shards` of `paths`: record counts from the headers, bad records.

    A shard that ends inside a record is reported (file name, records
    readable) and added to `log` as cut there; the records `log` names are
    skipped.

    Args:
        paths: list of str.
        log: `bad_records.BadRecordLog` or None.

    Raises:
        ValueError: when the files hold no record at all.
    """
    log = log if log is not None else bad_records_lib.BadRecordLog()
    counts = []
    for path in paths:
        count, truncated = resume.count_records(path)
        if truncated:
            log.add([bad_records_lib.cut_entry(
                path, count, f"truncated: the file ends inside record {count} "
                f"({os.path.getsize(path)} bytes)")])
        counts.append(count)
    if not sum(counts):
        raise ValueError(f"`files` hold no records. Received: {len(paths)} file(s), "
                         f"e.g. {paths[0]!r}")
    skip, cut = log.for_paths(paths)
    return resume.Shards(tuple(paths), tuple(counts), skip, cut)


def _examples(layout, *, start_example, repeated_views, repeat, seeded=True):
    """(index, (epoch, file, record, serialized)) from local example
    `start_example` on.

    `index` counts this pipeline's examples over epochs (the per-example
    key); an epoch is `layout.records_per_epoch(epoch) * repeated_views`
    examples. The record stage (`resume.records`) starts each open shard
    at its own offset, so a resume reads one shuffle block, not the epochs
    already done.
    """
    start_record, view = divmod(start_example, repeated_views)
    ds, start = resume.records(layout, start_record=start_record, repeat=repeat)
    if start_example and start is not None:
        per_epoch = layout.records_per_epoch(start.epoch) * repeated_views
        exact = "exact" if seeded else (
            "NOT exact: no seed was given, so this run draws other clips and order")
        within = layout.locate(start_record)[1] * repeated_views + view
        LOG.info(
            "resume at example %d (epoch %d, example %d of %d): the open shards skip "
            "%d records by their headers, then one shuffle block is read and its "
            "first %d records dropped; %s", start_example, start.epoch, within,
            per_epoch, start.skipped, start.drop, exact)
    if repeated_views > 1:
        # k copies of each record in a row; the enumerate below gives every
        # copy its own key, hence its own clip, crop and flip.
        ds = ds.flat_map(lambda *x: tf.data.Dataset.from_tensors(x).repeat(repeated_views))
        ds = ds.skip(view)
    return ds.enumerate(start=start_example)


def _diagnoser(layout, make_clip, *, batch_size, repeated_views, repeat):
    """`fn(first_batch, num_batches) -> bad-record entries` (see
    `bad_records.BadRecordLog.diagnose`): replays those batches' examples
    and parses + decodes each eagerly with its own key."""

    def diagnose(first_batch, num_batches):
        ds = _examples(layout, start_example=first_batch * batch_size,
                       repeated_views=repeated_views, repeat=repeat)
        found, seen = [], set()
        it = iter(ds.take(num_batches * batch_size))
        while True:
            try:
                index, (epoch, f, r, serialized) = next(it)
            except StopIteration:
                break
            except tf.errors.OpError as err:  # the shard reader itself failed
                found += _unreadable_shards(layout, first_batch * batch_size
                                            // repeated_views, err)
                break
            f, r = int(f), int(r)
            if (f, r) in seen:
                continue
            try:
                make_clip(index, (epoch, f, r, serialized))
            except tf.errors.OpError as err:
                seen.add((f, r))
                found.append({
                    "shard": os.path.basename(layout.shards.paths[f]), "record": r,
                    "video_id": _video_id(serialized), "error": _first_line(err),
                    "epoch": int(epoch)})
        return found

    return diagnose


def _unreadable_shards(layout, start_record, err):
    """Cut entries for the shards of the current epoch that cannot be read to
    their end: each open (and next) shard is read from its planned offset."""
    epoch, record = layout.locate(start_record)
    start = resume.plan_start(layout, epoch, record)
    counts = layout.shards.counts_at(epoch)
    found = []
    for f, first in start.files[: 2 * layout.cycle_length]:
        path = layout.shards.paths[f]
        readable = first
        try:
            for _ in tf.data.TFRecordDataset(path).skip(first).take(counts[f] - first):
                readable += 1
        except tf.errors.OpError as shard_err:
            found.append(bad_records_lib.cut_entry(
                path, readable, _first_line(shard_err), epoch=epoch, known=counts[f]))
    if not found:
        raise err
    return found


def _video_id(serialized):
    try:
        return records.parse(serialized)["id"].numpy().decode("utf-8", "replace")
    except tf.errors.OpError:
        return None


def _first_line(err):
    """The error's message without TF's function-node and op decorations."""
    message = getattr(err, "message", str(err))
    message = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]", "", message).strip()
    return message.splitlines()[0][:300] if message else type(err).__name__


def train_dataset(
    files,
    *,
    clip_len,
    crop_size,
    batch_size,
    frame_step=1,
    seed=None,
    shuffle_buffer=256,
    flip_label_map=None,
    flip_prob=0.5,
    standardize="per_frame",
    mean=None,
    std=None,
    crop_scale=None,
    crop="random",
    num_segments=None,
    new_length=1,
    reverse_label_map=None,
    reverse_prob=0.0,
    augment_policy="independent",
    short_video="repeat",
    repeat=True,
    drop_remainder=True,
    num_parallel_calls=AUTOTUNE,
    cycle_length=8,
    start_batch=0,
    mixup_alpha=0.0,
    cutmix_alpha=0.0,
    mix_prob=1.0,
    mix_switch_prob=0.5,
    label_smoothing=0.0,
    num_classes=None,
    modality="rgb",
    repeated_views=1,
    rand_augment=None,
    random_erasing=None,
    num_input_pipelines=1,
    input_pipeline_id=0,
    shard_policy="auto",
    max_bad_records=None,
    example_key="position",
    bad_records=None,
):
    """The training pipeline: random clips, one random crop per clip, flips.

    Args:
        files: glob pattern, directory of `*.tfrecord`, or list of paths.
        clip_len: int. Frames per clip (T).
        crop_size: int. Output side (H = W).
        batch_size: int. Clips per batch (B).
        frame_step: int, or a sequence of numbers to draw one from per clip
            (fps jitter: (1, 2), or (1, 4 / 3, 2) for fps x {1, .75, .5}).
            Defaults to 1.
        seed: int or None. Seeds shard order, shuffling and every random
            transform; None draws one from the OS. Defaults to None.
        shuffle_buffer: int. Block size S of the example shuffle (0 = off):
            each run of S consecutive records of an epoch's interleaved
            stream comes out in a random order drawn from (seed, epoch,
            block), so a resume reads one block, not the stream so far
            (see `data/reading/resume.py`). Holds S encoded videos, as a shuffle
            buffer of S would. Defaults to 256.
        flip_label_map: sequence of int or None. `flip_label_map[label]` is
            the label after a horizontal flip, -1 = never flip that class;
            None flips every class keeping its label. Defaults to None.
        flip_prob: float. Flip probability. Defaults to 0.5.
        standardize: str. See `transforms.standardize`. Defaults to
            "per_frame".
        mean, std: per-channel floats in [0, 1] for "mean_std".
        crop_scale: (low, high) or None. None: a `crop_size` window at a
            random position, no resize (the C3D / R(2+1)D recipe: frames
            stored at short side 128, crops of 112). A pair: window side =
            s * short side, s uniform in the range, resized to `crop_size`
            (scale jitter; the resize costs ~40 % more CPU per clip).
            Defaults to None.
        crop: str. "random" (see `crop_scale`), "multi_scale" (TSN/TDN:
            `transforms.multi_scale_crop_window`), "random_resized"
            (Inception style), or "centre". Defaults to "random".
        num_segments: int or None. TSN segment sampling
            (`transforms.segment_indices`) instead of one contiguous clip;
            then `clip_len` must be `num_segments * new_length`. Defaults
            to None.
        new_length: int. Consecutive frames per segment (TDN: 5).
            Defaults to 1.
        reverse_label_map: sequence of int or None. Time reversal with a
            label map (-1 = never reverse the class). Defaults to None.
        reverse_prob: float. Time-reversal probability ("independent").
            Defaults to 0.
        augment_policy: "independent" (flip with `flip_prob`, reverse with
            `reverse_prob`) or "uniform" (20BN SSv2 baseline: uniform among
            "same" and the augmentations that apply to the label).
            Defaults to "independent".
        short_video: str. "repeat" the last frame or "loop". Defaults to
            "repeat".
        repeat: bool. Repeat forever. Defaults to True.
        drop_remainder: bool. Defaults to True.
        num_parallel_calls: int. Parallel clip decoders. Defaults to AUTOTUNE.
        cycle_length: int. Shards read at once. Defaults to 8.
        mixup_alpha, cutmix_alpha: float. Batch mixup / cutmix (VideoMAE:
            0.8, 1.0; see `transforms.mix_batch`); labels become soft
            (B, num_classes) float32. Defaults to 0.0 (off).
        mix_prob, mix_switch_prob: float. Chance to mix a batch; chance of
            cutmix when both are on. Defaults to 1.0, 0.5.
        label_smoothing: float. Smoothing of the mixed one-hots. Defaults to 0.
        num_classes: int. Required with mixup / cutmix.
        modality: str. "rgb", or "flow": `clip_len` consecutive stored flow
            pairs, one crop window, decoded and stacked into one (1, S, S,
            2 * clip_len) step (two-stream flow input). Defaults to "rgb".
        start_batch: int. Batches of THIS pipeline already consumed
            (resume). Batch `start_batch` is exactly the one an uninterrupted
            iterator would give next (when `seed` is set; without one the
            log line says the resume is not exact), and the cost does not
            grow with the epochs done: the shard order and shuffle of an
            epoch depend only on (seed, epoch), each open shard skips its
            own consumed records by their headers, and one shuffle block is
            read (`data/reading/resume.py`). Defaults to 0.
        repeated_views: int. Repeated augmentation (DeiT's RASampler,
            VideoMAE's `num_sample`): each video is emitted k times in a row,
            after the example shuffle and before the per-example keys, so a
            batch holds groups of k differently augmented views of one video.
            `batch_size` must be a multiple of k (groups never straddle two
            batches). An epoch (one pass of `repeat=False`) is then
            k x videos clips. Defaults to 1.
        num_input_pipelines: int. Input pipelines of the job (P; workers
            under MultiWorkerMirroredStrategy). `batch_size` is this
            pipeline's (per-replica) batch. Defaults to 1.
        input_pipeline_id: int in [0, P). Which pipeline this is.
            Defaults to 0.
        shard_policy: str. How the P pipelines split the data: "file",
            "data" or "auto" (see `shard_policy_for`). Either way each
            pipeline parses and decodes only its own examples, and each
            epoch the pipelines' example sets are disjoint with the whole
            split as their union. Defaults to "auto".
        rand_augment: dict or None. Clip-level RandAugment
            (`augment.rand_augment` keyword arguments, e.g. `{num_layers: 2,
            magnitude: 9, magnitude_std: 0.5}`; `ops: "increasing"` selects
            VideoMAE's `rand-m7-n4-mstd0.5-inc1` op list): one draw of ops and
            magnitudes per clip, applied alike to every frame, after the crop
            and flip. RGB only. Costs ~5-10 ms of CPU per 16x112^2 clip.
            Defaults to None (off).
        random_erasing: dict or None. `augment.random_erasing` keyword
            arguments (VideoMAE: `{prob: 0.25, mode: "pixel"}`): one box per
            clip for all its frames, on the standardized batch, before
            mixup. Needs float output (not standardize="none").
            Defaults to None (off).

        max_bad_records: int or None. Bad records (plus records lost in
            truncated shards) tolerated before the run stops with a
            paragraph naming them (see `data/reading/bad_records.py`). Defaults to
            None: 0.1 % of the records, at least 1.
        example_key: str. What an example's random draws (clip, crop, flip,
            augmentations; erasing and mixing per batch) are keyed by:
            "position", its place in this pipeline's stream (the stream of
            one seed is then reproducible whatever the files are called), or
            "record": (shard file name, epoch, record, view), so pipelines
            that number their examples alike still draw apart. The
            tf.data service sets "record": each worker numbers what it reads
            from 0. Either way a resume at `start_batch` is exact.
            Defaults to "position".
        bad_records: `bad_records.BadRecordLog`, a path to a
            `bad_records.jsonl`, or None. The records it names are skipped
            (from the epoch they were found in on); truncated shards found
            here are added to it; the trainer passes the stage's log and
            calls its `diagnose` when the iterator raises. Defaults to None
            (an in-memory log).

    Returns:
        `tf.data.Dataset` of `(clips, labels)`: float32 (B, T, H, W, 3)
        (uint8 with standardize="none") and int32 (B,).

    Raises:
        ValueError: on a bad option, naming it; `bad_records.BadRecordsError`
            when the bad records already known exceed `max_bad_records`.
    """
    # The parameters, minus the files and the log, are the spec's fields.
    options = dict(locals())
    del options["files"], options["bad_records"]
    spec = TrainSpec.create(**options)
    layout, log, budget = _layout(list_files(files), spec, bad_records)
    make_clip = _clip_fn(spec, [os.path.basename(p) for p in layout.shards.paths])
    log.register(spec.input_pipeline_id, _diagnoser(
        layout, make_clip, batch_size=spec.batch_size,
        repeated_views=spec.repeated_views, repeat=spec.repeat), budget)

    ds = _examples(layout, start_example=spec.start_batch * spec.batch_size,
                   repeated_views=spec.repeated_views, repeat=spec.repeat,
                   seeded=spec.seeded)
    ds = ds.map(graph_fn(make_clip),
                num_parallel_calls=spec.num_parallel_calls, deterministic=True)
    ds = ds.batch(spec.batch_size, drop_remainder=spec.drop_remainder)
    ds = _batch_stages(ds, spec)
    return ds.prefetch(AUTOTUNE).with_options(dataset_options())


def _layout(paths, spec, log):
    """The record stage's `resume.Layout` for this pipeline, the bad-record
    log (`bad_records.BadRecordLog`, from `log`: one, a path or None) and
    the budget; raises `BadRecordsError` when the known bad records exceed
    it."""
    if not isinstance(log, bad_records_lib.BadRecordLog):
        log = bad_records_lib.BadRecordLog(log)
    num_pipes, pipe_id = spec.num_input_pipelines, spec.input_pipeline_id
    policy = shard_policy_for(len(paths), num_pipes, spec.shard_policy)
    own_seed = pipeline_seed(spec.seed, pipe_id)
    if policy == "file":
        paths = paths[pipe_id::num_pipes]  # = Dataset.shard on the file list
    layout = resume.Layout(
        shards=read_shards(paths, log),
        # "data": every pipeline must see the same stream, so the same order.
        file_seed=own_seed if policy == "file" else spec.seed,
        shuffle_seed=own_seed + 1,
        cycle_length=spec.cycle_length,
        shuffle_buffer=spec.shuffle_buffer,
        num_shares=num_pipes if policy == "data" else 1,
        share=pipe_id if policy == "data" else 0,
    )
    budget = spec.max_bad_records
    if budget is None:
        budget = bad_records_lib.default_budget(sum(layout.shards.counts))
    log.check_budget(budget)
    return layout, log, budget


def _clip_fn(spec, shard_names):
    """`(index, (epoch, file, record, serialized)) -> (clip, label)`: one
    random clip of a video (`(clip, label, key)` with example_key="record").

    example_key="position": example `index` of pipeline i draws every random
    number from the key `[seed, index * P + i]` (unique over pipelines).
    "record": from `_record_key`, which the batch stages also use.
    """
    modality = spec.modality
    names = tf.constant(shard_names)

    def make_clip(index, record):
        epoch, file, record_index, serialized = record
        example = records.parse(serialized, with_flow=modality == "flow")
        if spec.example_key == "record":
            key = _record_key(spec.seed, tf.gather(names, file), epoch, record_index,
                              tf.cast(index, tf.int64) % spec.repeated_views)
        else:
            unique = (tf.cast(index, tf.int64) * spec.num_input_pipelines
                      + spec.input_pipeline_id)
            key = tf.stack([tf.constant(spec.seed, tf.int64), unique])
        seed_clip, seed_crop, seed_aug, seed_step = tf.unstack(
            tf.random.experimental.stateless_split(key, num=4)
        )
        indices = _clip_indices(example["num_frames"], spec, seed_clip, seed_step)
        flip, reverse, label = transforms.choose_augmentations(
            first_label(example["labels"]),
            seed_aug,
            flip_label_map=spec.flip_label_map,
            flip_prob=spec.flip_prob,
            reverse_label_map=spec.reverse_label_map,
            reverse_prob=spec.reverse_prob,
            policy=spec.augment_policy,
        )
        if spec.may_reverse:
            # Time reversal is free on indices: reverse them before decoding.
            indices = tf.where(reverse, tf.reverse(indices, [0]), indices)
        encoded = encoded_frames(example, indices, modality)
        window = _train_window(
            tf.image.extract_jpeg_shape(first_image(encoded, modality)),
            seed_crop,
            crop=spec.crop,
            crop_size=spec.crop_size,
            crop_scale=spec.crop_scale,
        )
        clip = transforms.resize(decode_clip(encoded, window, modality),
                                 crop_size=spec.crop_size)
        if spec.may_flip:
            clip = tf.cond(flip, lambda: flip_clip(clip, modality), lambda: clip)
        if spec.rand_augment is not None:
            # fold_in: a new stream, so the clip / crop / flip draws stay as
            # they are without RandAugment.
            clip = augment.rand_augment(
                clip, tf.random.experimental.stateless_fold_in(seed_aug, 1),
                **spec.rand_augment)
        if modality == "flow":
            clip = stack_flow(clip)
        if spec.standardize != "none":
            # Per clip, while its pixels are still in cache: on the batch the
            # same work cost ~0.45 ms more CPU per 16x112^2 clip (bench in
            # BENCHMARKS.md), more than copying float32 into the batch.
            clip = transforms.standardize(clip, spec.standardize, mean=spec.mean,
                                          std=spec.std)
        if spec.example_key == "record":
            return clip, label, key[1]
        return clip, label

    return make_clip


def _record_key(seed, shard_name, epoch, record_index, view):
    """int64 [2]: the draws' key of view `view` of record `record_index` of
    shard `shard_name` in `epoch` (the name, not the file's index: pipelines
    that list other files still agree)."""
    key = tf.stack([tf.constant(seed, tf.int64),
                    tf.strings.to_hash_bucket_fast(shard_name, 2**62)])
    for part in (epoch, record_index, view):
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(part, tf.int64))
    return key


def _clip_indices(num_frames, spec, seed_clip, seed_step):
    """The frame indices of one clip: TSN segments, fps-jittered or plain."""
    if spec.num_segments is not None:
        return transforms.segment_indices(
            num_frames, seed_clip, num_segments=spec.num_segments,
            new_length=spec.new_length)
    if spec.step_choices is not None:
        return transforms.stepped_clip_indices(
            num_frames, seed_clip, clip_len=spec.clip_len, short_video=spec.short_video,
            frame_step=transforms.random_frame_step(seed_step, spec.step_choices))
    return transforms.random_clip_indices(
        num_frames, seed_clip, clip_len=spec.clip_len, frame_step=spec.frame_step,
        short_video=spec.short_video)


def _batch_stages(ds, spec):
    """Random erasing, mixup / cutmix: the batch-level stages.

    Erasing and mixing are seeded by the batch index (unique over pipelines,
    counted from the run's start), so a resumed run erases and mixes alike.
    """
    def batch_key(index, batch, offset):
        if spec.example_key == "record":  # the batch's first example's key
            return tf.stack([tf.constant(spec.seed + offset, tf.int64), batch[2][0]])
        batch_index = ((index + spec.start_batch) * spec.num_input_pipelines
                       + spec.input_pipeline_id)
        return tf.stack([tf.constant(spec.seed + offset, tf.int64), batch_index])

    if spec.random_erasing is not None:

        def erase(index, batch):
            clips = augment.random_erasing(batch[0], batch_key(index, batch, 3),
                                           **spec.random_erasing)
            return (clips, *batch[1:])

        ds = ds.enumerate().map(erase, num_parallel_calls=AUTOTUNE, deterministic=True)
    if spec.mixes:

        def mix(index, batch):
            mixed = transforms.mix_batch(
                batch[0], batch[1], batch_key(index, batch, 2), num_classes=spec.num_classes,
                mixup_alpha=spec.mixup_alpha, cutmix_alpha=spec.cutmix_alpha,
                switch_prob=spec.mix_switch_prob, prob=spec.mix_prob,
                label_smoothing=spec.label_smoothing)
            return (*mixed, *batch[2:])

        ds = ds.enumerate().map(mix, num_parallel_calls=AUTOTUNE, deterministic=True)
    if spec.example_key == "record":
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
