"""A tiny two-class motion dataset written straight to records (no converter),
so the trainer tests depend only on `records.write`."""

import json
import os

import numpy as np
import tensorflow as tf

from klassterfork.data import records

ALL_LABELS = ["moving left to right", "moving right to left", "moving up", "moving down"]
LABELS = ALL_LABELS[:2]  # the default two classes of `write_split`


FLIPPED = {0: 1, 1: 0, 2: 2, 3: 3}  # horizontal flip: left <-> right


def motion_video(label, rng, *, num_frames=8, size=40, box=12):
    """A bright square sliding right (0), left (1), up (2) or down (3) over noise."""
    frames = rng.integers(0, 60, size=(num_frames, size, size, 3), dtype=np.uint8)
    fixed = int(rng.integers(0, size - box))
    span = size - box
    for t in range(num_frames):
        p = round(span * t / (num_frames - 1))
        p = p if label in (0, 3) else span - p
        if label < 2:
            frames[t, fixed:fixed + box, p:p + box] = 230
        else:
            frames[t, p:p + box, fixed:fixed + box] = 230
    return frames


def write_split(out_dir, split, num_videos, *, seed, num_shards=2, num_frames=8,
                classes=(0, 1)):
    """Writes `{split}-*.tfrecord` + `{split}.manifest.json`; returns the paths.

    Videos cycle through `classes` (indices into LABELS); the split's label
    map is those classes in that order, so labels are 0..len(classes)-1.
    """
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = [
        os.path.join(out_dir, records.shard_name(split, i, num_shards))
        for i in range(num_shards)
    ]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    for i in range(num_videos):
        label = i % len(classes)
        video = motion_video(classes[label], rng, num_frames=num_frames)
        frames = [tf.io.encode_jpeg(f, quality=95).numpy() for f in video]
        writers[i % num_shards].write(records.write(
            video_id=f"{split}_{i}", frames=frames, labels=[label],
            label_text=ALL_LABELS[classes[label]], fps=12.0, height=40, width=40,
        ))
    for w in writers:
        w.close()
    manifest = {
        "split": split,
        "counts": {"written": num_videos},
        "label_names": [ALL_LABELS[c] for c in classes],
        "flip_label_map": [classes.index(FLIPPED[c]) if FLIPPED[c] in classes else -1
                           for c in classes],
    }
    with open(os.path.join(out_dir, f"{split}.manifest.json"), "w") as f:
        json.dump(manifest, f)
    return paths


def tiny_config(data_dir, experiment_dir, **loop):
    """An hjson config (as text) for a 2-stage-free tiny R(2+1)D run."""
    train_loop = {
        "epochs": 3, "checkpoint_every_steps": 2, "keep_checkpoints": 50,
        "seed": 3, "progress": False, **loop,
    }
    config = {
        "meta": {"experiment_dir": str(experiment_dir)},
        "datasets": {
            "train": {
                "dir": str(data_dir), "split": "train", "clip_len": 4, "frame_step": 2,
                "crop_size": 32, "batch_size": 4, "flip": True, "shuffle_buffer": 16,
            },
            "val": {
                "dir": str(data_dir), "split": "validation", "clip_len": 4,
                "frame_step": 2, "crop_size": 32, "num_clips": 2, "num_crops": 1,
                "batch_size": 4,
            },
        },
        "model": {"R2Plus1D": {
            "blocks_per_stage": [1, 1], "widths": [8, 16], "stem_width": 4,
            "dropout": 0.1, "input_shape": [4, 32, 32, 3],
        }},
        "optimizer": {"Adam": {"learning_rate": {"EpochPiecewiseConstant": {
            "boundaries": [2], "values": [0.01, 0.003]}}}},
        "train_loop": train_loop,
    }
    return json.dumps(config, indent=1)  # JSON is valid hjson
