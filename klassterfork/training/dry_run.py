"""`kf-train CONFIG --dry-run`: the real recipe on a tiny generated stand-in.

Every dataset block is pointed at a few generated videos (random frames
large enough for the block's crop), every stage runs 2 steps with a batch
of 2 and evaluates, and zero-shot class-embedding files are replaced by
random unit vectors of the head's width. The model, loss, optimizer,
schedule and pipeline options are the config's own, so a typo or a shape
mismatch in a shipped recipe fails here in seconds instead of on a cluster.
"""

import copy
import json
import os

import numpy as np
import tensorflow as tf

from klassterfork.data import records

DRY_CLASSES = 4
DRY_VIDEOS = 4
DRY_FRAMES = 16


def _find_key(value, key):
    """First value of `key` anywhere in nested dicts/lists, or None."""
    if isinstance(value, dict):
        if key in value:
            return value[key]
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _find_key(item, key)
            if found is not None:
                return found
    return None


def _frame_size(block):
    crop = int(block.get("crop_size", 112))
    short = max(int(block.get("resize_short_side") or 0), crop + crop // 7 + 1)
    return short, short * 4 // 3


def _write_split(out_dir, split, *, num_classes, height, width, seed, flow=False):
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    path = os.path.join(out_dir, records.shard_name(split, 0, 1))
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(DRY_VIDEOS):
            frames = rng.integers(0, 256, size=(DRY_FRAMES, height, width, 3), dtype=np.uint8)
            jpegs = [tf.io.encode_jpeg(f, quality=80).numpy() for f in frames]
            flows = {}
            if flow:  # one grey JPEG per frame for x and for y
                flows = {key: [tf.io.encode_jpeg(f[..., :1], quality=80).numpy()
                               for f in frames] for key in ("flow_x", "flow_y")}
                flows["flow_bound"] = 20.0
            label = i % min(num_classes, DRY_CLASSES)
            writer.write(records.write(
                video_id=f"dry_{split}_{i}", frames=jpegs, labels=[label],
                label_text=f"class_{label}", fps=12.0, height=height, width=width, **flows,
            ))
    manifest = {
        "split": split,
        "counts": {"written": DRY_VIDEOS},
        "label_names": [f"class_{c}" for c in range(num_classes)],
        "flip_label_map": list(range(num_classes)),
    }
    with open(os.path.join(out_dir, f"{split}.manifest.json"), "w") as f:
        json.dump(manifest, f)


def tiny_stages(stages, workdir):
    """Copies of `stages` that read tiny generated data and run 2 steps each.

    Args:
        stages: list of resolved stage dicts.
        workdir: str. Where the stand-in records and the experiment go.

    Returns:
        list of stage dicts.
    """
    out = []
    for index, stage in enumerate(stages):
        stage = copy.deepcopy(stage)
        stage.pop("tracking", None)  # a dry run sends nothing to MLflow
        stage.pop("init_weights", None)  # the recipe is checked, not the file
        for name in ("frozen_weights", "imagenet_weights"):
            # A dry run checks the recipe, not the pretrained files.
            for kwargs in (stage.get("model") or {}).values():
                if isinstance(kwargs, dict) and kwargs.get(name):
                    kwargs[name] = None
        num_classes = _find_key(stage.get("model"), "num_classes") or DRY_CLASSES
        units = _find_key(stage.get("model"), "units") or 300
        for key, block in (stage.get("datasets") or {}).items():
            split = block.get("split") or key
            data_dir = os.path.join(workdir, f"stage{index}_{key}")
            classes = DRY_CLASSES if block.get("class_embeddings") else int(num_classes)
            height, width = _frame_size(block)
            _write_split(data_dir, split, num_classes=classes, height=height,
                         width=width, seed=index, flow=block.get("modality") == "flow")
            block.pop("files", None)
            block.pop("num_examples", None)
            block.update(dir=data_dir, split=split)
            block["batch_size"] = min(int(block.get("batch_size", 2)), 2)
            if "num_clips" in block:
                block["num_clips"] = min(int(block["num_clips"]), 2)
            if block.get("class_embeddings"):
                rng = np.random.default_rng(index)
                matrix = rng.normal(size=(classes, int(units))).astype(np.float32)
                emb = os.path.join(data_dir, "class_embeddings.npy")
                np.save(emb, matrix / np.linalg.norm(matrix, axis=1, keepdims=True))
                block["class_embeddings"] = emb
        loop = stage.setdefault("train_loop", {})
        loop.update(epochs=1, steps_per_epoch=2, checkpoint_every_steps=1000,
                    eval_every_epochs=1, progress=False, plot=False, stop_after_steps=None)
        if loop.get("strategy") == "multi_worker":
            loop["strategy"] = "default"  # no cluster in a dry run
        loop.pop("logical_cpu_devices", None)
        stage.setdefault("meta", {})["experiment_dir"] = os.path.join(workdir, "experiment")
        out.append(stage)
    return out
