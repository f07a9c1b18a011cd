"""The evaluation pipeline: every video once, in file order, as
`num_clips x num_crops` views.

records in file order -> parse -> `num_clips` evenly spaced clips x
`num_crops` spatial crops -> (B, V, T, H, W, C), no shuffling, no repeat, the
last partial batch kept; with `views_per_chunk=K`, chunks of K views of a
video (B, K, T, H, W, C) plus the video index and a view mask, so memory per
batch does not grow with V. Each unique frame of a video is decoded once,
even when clips overlap.

Public as `pipeline.eval_dataset`; the options come from a `spec.EvalData`.
"""

import logging
import os

import tensorflow as tf

from klassterfork.data import records, transforms
from klassterfork.data.reading import resume
from klassterfork.data.reading.clips import (
    AUTOTUNE, dataset_options, decode_clip, encoded_frames, first_image, first_label,
    graph_fn, list_files, stack_flow)

LOG = logging.getLogger(__name__)


def eval_dataset(files, spec, *, with_ids=False, skip_bad_records=False):
    """The evaluation pipeline: every video once, `num_clips * num_crops` views.

    Clips are evenly spaced (`transforms.even_clip_indices`); crops are the
    centre crop (`num_crops=1`) or three crops along the long side
    (`transforms.spatial_crop_windows`). Each unique frame is decoded once
    per video, even when clips overlap. View `v = clip * num_crops + crop`.
    With TSN segments, clip k of `num_clips` samples segment centres shifted
    by (k + 0.5) / num_clips of a segment.

    Args:
        files: glob pattern, directory or list of paths; read in order.
        spec: `spec.EvalData` (docs/options.md lists every option).
            `views_per_chunk = K` bounds memory: each video's V views are cut
            into ceil(V / K) chunks of K consecutive views (the last one
            padded with zero views), a batch holds B chunks, possibly of
            different videos; the unique frames are still decoded once per
            video. `flatten_views` yields single views.
        with_ids: bool. Add the video ids as a third element. Defaults to
            False.
        skip_bad_records: bool. A record that does not parse or decode is
            dropped before batching and the stream goes on (the other
            videos of its batch are kept); without `views_per_chunk` each
            element then ends with the records' positions in the files,
            int64 (B,), so the caller names the missing ones
            (`training/stage_eval.py`). Needs `with_ids` and no
            `flatten_views`. Defaults to False: a bad record raises.

    Returns:
        `tf.data.Dataset` of `(clips, labels[, ids])`: clips float32
        (B, V, T, H, W, 3), V = num_clips * num_crops (or (B, T, H, W, 3)
        with `flatten_views`), labels int32 (B,), ids string (B,).

        With `views_per_chunk = K`: `(clips, labels[, ids], chunks)`, one
        row per chunk: clips float32 (B, K, T, H, W, 3), labels and ids of
        the chunk's video, and `chunks` a dict of
        `video_index` int64 (B,): the video's position in the files (0, 1,
            ...; the same for all chunks of one video),
        `view_offset` int32 (B,): the first view of the chunk, a multiple
            of K, so chunk row k holds views `view_offset + k`,
        `view_mask` bool (B, K): False for the padding views.
        The video score is the mean over its V unmasked views (see
        `aggregate.ViewAccumulator`), as without chunks.
    """
    views = spec.views
    if skip_bad_records and (views.flatten_views or not with_ids):
        raise ValueError("`skip_bad_records` needs `with_ids=True` and no "
                         f"`flatten_views`. Received: with_ids={with_ids}, "
                         f"flatten_views={views.flatten_views}")
    paths = list_files(files)
    if skip_bad_records:
        ds = _readable_records(paths)
    else:
        ds = tf.data.TFRecordDataset(paths).enumerate()
    ds = _video_views(ds, spec, skip_bad_records=skip_bad_records)
    if views.flatten_views:
        ds = ds.flat_map(
            lambda clips, label, vid: tf.data.Dataset.from_tensor_slices(
                (clips, tf.fill([views.num_views], label), tf.fill([views.num_views], vid))
            )
        )
    if not with_ids:
        ds = ds.map(lambda clips, labels, ids, *chunk: (clips, labels, *chunk))
    ds = ds.batch(spec.batch_size, drop_remainder=False)
    norm = spec.standardize
    if norm.standardize != "none":  # "none": uint8 views as they are
        ds = ds.map(_standardizer(norm.standardize, norm.mean, norm.std),
                    num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE).with_options(dataset_options())


def _readable_records(paths):
    """(position, serialized) of the records of `paths` in file order, a
    position counted over the files as `missing_records` counts it (headers
    checked: `resume.count_records(verify=True)`). A record whose body fails
    its checksum comes out empty (it then fails to decode and is dropped)
    and the rest of its shard is read (`resume.read_shard_guarded`); the
    records after a broken header or a truncated end cannot be found and
    are not counted (`missing_records` logs that shard)."""
    counts = [resume.count_records(p, verify=True)[0] for p in paths]
    bases = [sum(counts[:i]) for i in range(len(paths))]

    def read(path, count, base):
        return resume.read_shard_guarded(path, 0, count).map(
            graph_fn(lambda record, serialized: (base + record, serialized)))

    return tf.data.Dataset.from_tensor_slices((
        tf.constant(paths, tf.string), tf.constant(counts, tf.int64),
        tf.constant(bases, tf.int64))).flat_map(graph_fn(read))


def _video_views(ds, spec, *, skip_bad_records=False):
    """(position, serialized) records -> (views, label, id) per video (plus
    the record's position with `skip_bad_records`), or with
    `views_per_chunk` the chunks of each video's views.

    `skip_bad_records`: a failed decode is dropped right after the decode
    map (`ignore_errors`, before any batch), so one bad record costs only
    itself; its position is what goes missing from the stream."""
    views = spec.views
    decode = _video_decoder(spec)
    tolerate = (lambda d: d.ignore_errors()) if skip_bad_records else (lambda d: d)

    def views_of(crops, position, view_ids):
        out = _gather_views(crops, position, view_ids, num_crops=views.num_crops)
        return stack_flow(out) if spec.modality == "flow" else out

    if views.views_per_chunk is None:
        def make_views(index, serialized):
            crops, position, label, vid = decode(serialized)
            out = views_of(crops, position, tf.range(views.num_views)), label, vid
            return (*out, index) if skip_bad_records else out

        return tolerate(ds.map(
            graph_fn(make_views), num_parallel_calls=spec.num_parallel_calls,
            deterministic=True))
    ds = tolerate(ds.map(
        graph_fn(lambda index, serialized: (*decode(serialized), index)),
        num_parallel_calls=spec.num_parallel_calls, deterministic=True))
    return ds.flat_map(graph_fn(
        lambda crops, position, label, vid, index: _view_chunks(
            lambda ids: views_of(crops, position, ids), label, vid, index,
            num_views=views.num_views, views_per_chunk=views.views_per_chunk)))


def _eval_indices(num_frames, sampling, num_clips):
    """int32 [num_clips, clip_len]: every clip's frame indices."""
    if sampling.num_segments is None:
        return transforms.even_clip_indices(
            num_frames, clip_len=sampling.clip_len, num_clips=num_clips,
            frame_step=sampling.frame_step, short_video=sampling.short_video)
    return tf.stack([
        transforms.segment_indices(num_frames, num_segments=sampling.num_segments,
                                   new_length=sampling.new_length, clip=k,
                                   num_clips=num_clips)
        for k in range(num_clips)])


def _video_decoder(spec):
    """`serialized -> (crops [num_crops, U, S, S, ch] of the U unique frames,
    positions [num_clips, T] into U, label, id)`."""
    views, size = spec.views, spec.views.crop_size

    def decode_video(serialized):
        example = records.parse(serialized, with_flow=spec.modality == "flow")
        indices = _eval_indices(example["num_frames"], spec.sampling, views.num_clips)
        unique, position = tf.unique(tf.reshape(indices, [-1]))
        encoded = encoded_frames(example, unique, spec.modality)
        windows = transforms.spatial_crop_windows(
            tf.image.extract_jpeg_shape(first_image(encoded, spec.modality)),
            crop_size=size, num_crops=views.num_crops,
            resize_short_side=views.resize_short_side)
        if views.num_crops == 1:
            # One window: decode only it.
            frames = decode_clip(encoded, windows[0], spec.modality)
            crops = [transforms.resize(frames, crop_size=size)]
        else:
            frames = decode_clip(encoded, None, spec.modality)
            crops = [transforms.crop_and_resize(frames, windows[j], crop_size=size)
                     for j in range(views.num_crops)]
        crops = tf.ensure_shape(tf.stack(crops),
                                [views.num_crops, None, size, size, spec.channels])
        position = tf.reshape(position, [views.num_clips, spec.sampling.clip_len])
        return crops, position, first_label(example["labels"]), example["id"]

    return decode_video


def _gather_views(crops, position, view_ids, *, num_crops):
    """Views `view_ids` of one video from its cropped unique frames.

    Args:
        crops: uint8 [num_crops, U, S, S, C], crop j of the U unique frames.
        position: int32 [num_clips, T]. Row k: clip k's frames as indices
            into U.
        view_ids: int32 [K]. View v is clip v // num_crops, crop
            v % num_crops.

    Returns:
        uint8 [K, T, S, S, C].
    """
    frame = tf.gather(position, view_ids // num_crops)  # [K, T]
    crop = tf.broadcast_to((view_ids % num_crops)[:, None], tf.shape(frame))
    return tf.gather_nd(crops, tf.stack([crop, frame], axis=-1))


def _view_chunks(views_of, label, vid, index, *, num_views, views_per_chunk):
    """The chunks of one video's views as a dataset (see `eval_dataset`).

    Args:
        views_of: callable int32 [K] view ids -> uint8 [K, ...] views.
        label, vid, index: the video's label, id and position in the files.
        num_views, views_per_chunk: V and K.

    Returns:
        `tf.data.Dataset` of ceil(V / K) elements `(views [K, ...], label,
        vid, {"video_index", "view_offset", "view_mask"})`; the views past
        V are zeros.
    """
    num_chunks = -(-num_views // views_per_chunk)

    def chunk(k):
        offset = tf.cast(k, tf.int32) * views_per_chunk
        view_ids = offset + tf.range(views_per_chunk)
        mask = view_ids < num_views
        # Gather the real views, then append zero views: a broadcast
        # `tf.where` over the chunk would cost ~10x the gather.
        views = views_of(view_ids[: tf.minimum(views_per_chunk, num_views - offset)])
        padding = tf.zeros(
            tf.concat([[views_per_chunk - tf.shape(views)[0]], tf.shape(views)[1:]], 0),
            views.dtype)
        views = tf.concat([views, padding], axis=0)
        views = tf.ensure_shape(views, [views_per_chunk] + views.shape[1:].as_list())
        info = {"video_index": index, "view_offset": offset, "view_mask": mask}
        return views, label, vid, info

    return tf.data.Dataset.range(num_chunks).map(graph_fn(chunk))


def _standardizer(mode, mean, std):
    @tf.autograph.experimental.do_not_convert
    def apply(clips, *rest):
        return (transforms.standardize(clips, mode, mean=mean, std=std), *rest)

    return apply


def missing_records(files, spec, seen, *, dataset_key):
    """Names the records that `eval_dataset(..., skip_bad_records=True)` dropped.

    Every record position of `files` not in `seen` is read again on its own,
    parsed and decoded eagerly with the same decoder, and described with
    the error that dropped it (or, when it decodes now, says so).

    Args:
        files: as `eval_dataset`.
        spec: the same `spec.EvalData`.
        seen: set of int. The positions (in file order) that came out.
        dataset_key: str. The set's key under `datasets` (`val`, ...),
            stored as the entry's `set`.

    Returns:
        list of dicts, `bad_records.jsonl` entries: `shard`, `record`,
        `video_id`, `error`, `epoch` (0) and `set`.
    """
    from klassterfork.data.reading.train_records import _first_line, _video_id, known_video_id

    decode = _video_decoder(spec)
    found, position = [], 0
    for path in list_files(files):
        # Verified headers: the positions `_readable_records` counts.
        count, truncated = resume.count_records(path, verify=True)
        missing = [r for r in range(count) if position + r not in seen]
        position += count
        for record in missing:
            entry = {"shard": os.path.basename(path), "record": record, "video_id": None,
                     "epoch": 0, "set": dataset_key}
            try:
                serialized = next(iter(tf.data.TFRecordDataset(path).skip(record).take(1)))
                entry["video_id"] = _video_id(serialized)
                decode(serialized)
                entry["error"] = "dropped by the evaluation pipeline; decodes on its own"
            except tf.errors.OpError as err:
                entry["error"] = _first_line(err)
                if isinstance(err, tf.errors.DataLossError):  # its body is not to be trusted
                    entry["video_id"] = known_video_id(path, record)
            found.append(entry)
        if truncated:
            LOG.warning("datasets.%s: %s cannot be read past record %d (it ends inside "
                        "a record, or a length header is corrupt): the rest is not read",
                        dataset_key, path, count)
    return found
