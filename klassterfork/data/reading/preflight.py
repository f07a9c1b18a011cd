"""The data checked against its manifest and the config before step 1.

`check_dataset` runs before a stage builds its model (kf-train, and
`--dry-run` on the real data when it exists). Each finding is an error (a
`ConfigError`: the run would train on other data than the config and the
manifest say, or on frames it must invent) or a warning (the run is
correct, but the user should know), named by config file, key, line and the
numbers:

| finding | kind | why |
|---|---|---|
| a shard the manifest lists is missing | error | the manifest's count sets the epoch length: the rest would be repeated |
| a shard on disk the manifest does not list | error | its videos would be trained on, uncounted (e.g. left from an earlier conversion) |
| a shard's complete records differ from the manifest | error | the shard was rewritten or mixed up |
| a shard ends inside a record | warning | readable records are used, the rest skipped as bad records (`bad_records.jsonl`) |
| labels >= num_classes (manifest label map or sampled records) | error | the loss would index past the logits |
| clip span longer than every sampled video | error (warning with `short_video` set) | every clip would repeat frames |
| clip span longer than the median video | warning | most clips repeat frames (`short_video`) |
| crop_size larger than the stored frames (the manifest's `settings.short_side`, exact; else the median sampled record) | error | the crop would be clamped and upscaled |
| crop_size larger than the smallest sampled record only (named: file, video id) | warning | those crops are clamped and upscaled |
| no manifest beside the shards | warning | shard files, record counts and the label map are not checked |
| train and val manifests name different classes (`check_label_maps`) | error | the val labels would index other classes (zero-shot sets with `class_embeddings` are exempt) |

Costs: the record counts walk each shard's 12-byte record headers
(`resume.count_records`, no record body read); frame counts and sizes come
from `SAMPLE_RECORDS` records (their context and first JPEG header), not a
full pass. The converter's manifest (`shards: [{file, videos, frames}]`)
holds no byte sizes, so counts are compared, not sizes; a manifest without
`shards` (other writers), or no manifest at all, skips the shard checks and
says so.
"""

import os

import numpy as np
import tensorflow as tf

from klassterfork.config.loader import ConfigError
from klassterfork.data import records
from klassterfork.data.reading.resume import count_records

SAMPLE_RECORDS = 32  # records read for frame counts, sizes and labels
SAMPLE_SHARDS = 4  # spread over this many shards


def check_dataset(spec, info, source, key, *, explicit=(), num_classes=None,
                  num_classes_key="model", warn=print):
    """Checks one `datasets.<role>` block's data; raises on an error.

    Args:
        spec: `spec.TrainData` or `spec.EvalData` of the block (its
            defaults are the pipeline's).
        explicit: the option names the block sets itself (a clip longer
            than the videos is only a warning when `short_video` is set).
        info: `builders.DatasetInfo` (files, manifest).
        source: config Source; key: str, e.g. "datasets.train".
        num_classes: int or None. The model's classes, when the config sets them.
        num_classes_key: str. Where the config sets them (for the message).
        warn: callable(str) for warnings.

    Raises:
        ConfigError: on the first error of the table above.
    """
    _check_shards(info, source, key, warn)
    sample = _sample(info.files)
    _check_labels(info, sample, source, key, num_classes, num_classes_key)
    _check_clip(spec.sampling, "short_video" in explicit, sample, source, key, warn)
    _check_crop(*_crop_of(spec), sample, source, key, warn, info.manifest)


def _check_shards(info, source, key, warn):
    listed = info.manifest.get("shards")
    folder = os.path.dirname(info.files[0])
    if set(info.manifest) <= {"counts"}:  # none, or only the block's num_examples
        warn(f"{source.locate(key)}: {key}: no manifest beside the shards in {folder}; "
             f"shard files, record counts and the label map not checked "
             f"({len(info.files)} shard file(s) read as found).")
        return
    if not listed:
        warn(f"{source.locate(key)}: {key}: the manifest lists no shards; shard "
             "files and record counts not checked.")
        return
    on_disk = {os.path.basename(f) for f in info.files}
    expected = {s["file"]: s for s in listed}
    missing = sorted(set(expected) - on_disk)
    if missing:
        lost = sum(int(expected[m].get("videos", 0)) for m in missing)
        raise ConfigError(
            source, key, f"{len(missing)} shard(s) listed in the manifest are missing from "
            f"{folder}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
            f"({lost} of {info.num_examples} videos). The manifest's count sets the epoch "
            "length, so the rest would be repeated: restore the files or convert again."
        )
    extra = sorted(on_disk - set(expected))
    if extra:
        raise ConfigError(
            source, key, f"{len(extra)} shard(s) in {folder} are not in the manifest: "
            f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}. Their videos "
            "would be trained on uncounted (left from another conversion?): remove them."
        )
    for path in info.files:
        name = os.path.basename(path)
        want = expected[name].get("videos")
        if want is None:
            continue
        have, truncated = count_records(path)
        if truncated:
            warn(f"{source.locate(key)}: {key}: {path} ends inside a record after {have} "
                 f"complete record(s) (manifest: {want}); the rest are skipped as bad "
                 "records.")
        elif have != int(want):
            raise ConfigError(
                source, key, f"{path} holds {have} records, the manifest says {want}: "
                "the shard was rewritten or mixed up; convert again."
            )


def check_label_maps(blocks, source):
    """Raises when a validation set's manifest names other classes than the
    train set's (each split's own `label_names`).

    Args:
        blocks: dict `{role: (block, info)}` of a stage's datasets. Sets
            with `class_embeddings` (zero-shot: their classes differ on
            purpose) and sets whose manifest names no classes are skipped.
        source: config Source.

    Raises:
        ConfigError: located at `datasets.<role>`, naming the first
            difference.
    """
    train = blocks.get("train")
    names = train[1].label_names if train else None
    if not names:
        return
    for role, (block, info) in blocks.items():
        theirs = info.label_names
        if role == "train" or block.get("class_embeddings") or not theirs:
            continue
        if list(theirs) == list(names):
            continue
        i = next((i for i, (a, b) in enumerate(zip(names, theirs)) if a != b),
                 min(len(names), len(theirs)))
        first = (f"label {i} is {theirs[i]!r} there, {names[i]!r} in train"
                 if i < min(len(names), len(theirs)) else "one list extends the other")
        raise ConfigError(
            source, f"datasets.{role}", f"its manifest names {len(theirs)} classes, the "
            f"train manifest {len(names)}, in another order or set ({first}): its labels "
            "would be scored against other classes. Convert both splits with the same "
            "--labels file (or give the set class_embeddings for a zero-shot set).")


def _sample(files):
    """num_frames, short side, labels of up to SAMPLE_RECORDS records."""
    step = max(1, len(files) // SAMPLE_SHARDS)
    chosen = files[::step][:SAMPLE_SHARDS]
    per_shard = max(1, SAMPLE_RECORDS // len(chosen))
    frames, sides, labels, where = [], [], [], []
    for path in chosen:
        try:
            for serialized in tf.data.TFRecordDataset(path).take(per_shard):
                video = records.parse(serialized)
                frames.append(int(video["num_frames"]))
                labels.extend(int(x) for x in video["labels"].numpy())
                if len(video["frames"]):
                    h, w = tf.io.extract_jpeg_shape(video["frames"][0]).numpy()[:2]
                    sides.append(int(min(h, w)))
                    where.append((path, video["id"].numpy().decode("utf-8", "replace")))
        except (tf.errors.OpError, ValueError):
            continue  # an unreadable record is the bad-records stage's business
    return {"frames": frames, "sides": sides, "labels": labels, "where": where}


def _check_labels(info, sample, source, key, num_classes, num_classes_key):
    if num_classes is None:
        return
    names = info.label_names
    if names and len(names) > num_classes:
        raise ConfigError(
            source, num_classes_key, f"num_classes is {num_classes}, but the manifest of "
            f"{key} names {len(names)} classes (labels 0-{len(names) - 1}): set "
            f"num_classes: {len(names)} (or leave it out: the manifest sets it)."
        )
    if sample["labels"] and max(sample["labels"]) >= num_classes:
        raise ConfigError(
            source, num_classes_key, f"num_classes is {num_classes}, but {key} holds label "
            f"{max(sample['labels'])} (in {len(sample['labels'])} sampled records)."
        )


def _crop_of(spec):
    """(crop_size, resize_short_side or None) of a train or eval spec."""
    views = getattr(spec, "views", None)
    if views is not None:
        return views.crop_size, views.resize_short_side
    return spec.crop.crop_size, None


def _check_clip(sampling, short_video_set, sample, source, key, warn):
    if not sample["frames"] or sampling.num_segments:
        return
    step = sampling.frame_step
    step = min(step) if isinstance(step, (list, tuple)) else step
    span = (sampling.clip_len - 1) * step + 1
    median = float(np.median(sample["frames"]))
    if span <= median:
        return
    shorter = sum(f < span for f in sample["frames"])
    problem = (f"clip_len {sampling.clip_len} x frame_step {step} spans {span} frames, "
               f"longer than {shorter} of {len(sample['frames'])} sampled videos "
               f"(median {median:g} frames)")
    if short_video_set or span <= max(sample["frames"]):
        warn(f"{source.locate(key + '.clip_len')}: {key}.clip_len: {problem}; their clips "
             f"are padded by short_video: {sampling.short_video!r}.")
        return
    raise ConfigError(
        source, f"{key}.clip_len", f"{problem}: every clip would repeat frames. Lower "
        "clip_len or frame_step, or set short_video ('repeat' or 'loop') to accept it."
    )


def _check_crop(crop_size, resize_short_side, sample, source, key, warn, manifest):
    """Exact when the frames are resized (eval `resize_short_side`, or the
    converter's `settings.short_side`, to which every record is resized,
    small videos upscaled); otherwise from the sampled records."""
    where = f"{key}.crop_size"
    exact = resize_short_side or (manifest.get("settings") or {}).get("short_side")
    if exact:
        if crop_size > exact:
            what = ("resize_short_side" if resize_short_side
                    else "the manifest's settings.short_side")
            raise ConfigError(
                source, where, f"crop_size {crop_size} is larger than the frames' short "
                f"side {exact} px ({what}: every record has it): the crop would be "
                f"clamped and upscaled. Lower crop_size or convert with --short-side >= "
                f"{crop_size}.")
        return
    if not sample["sides"]:
        return
    sides, n = sample["sides"], len(sample["sides"])
    median, smallest = float(np.median(sides)), int(np.argmin(sides))
    path, video_id = sample["where"][smallest]
    named = (f"the smallest, {sides[smallest]} px, is video {video_id!r} in {path}; "
             f"{sum(s < crop_size for s in sides)} of {n} sampled records are smaller")
    if crop_size > median:
        raise ConfigError(
            source, where, f"crop_size {crop_size} is larger than the stored frames "
            f"(median short side {median:g} px in {n} sampled records; {named}): the "
            "crop would be clamped and upscaled. Lower crop_size or convert with "
            f"--short-side >= {crop_size}.")
    if crop_size > sides[smallest]:
        warn(f"{source.locate(where)}: {where}: crop_size {crop_size} is larger than "
             f"some stored frames ({named}; only {n} records were sampled, the manifest "
             "has no settings.short_side): their crops are clamped and upscaled.")
