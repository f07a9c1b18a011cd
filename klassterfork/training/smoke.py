"""`kf-train CONFIG --smoke`: a few real steps before a three-day job.

Unlike `--dry-run` (generated stand-in data), a smoke run reads the records
the config names: every stage trains `SMOKE_STEPS` steps on its real train
split and evaluates on the first `SMOKE_VIDEOS` videos of each validation
split (copied, as they are, into a small shard of a temporary folder, with
the split's manifest beside it), with the model, optimizer, schedule and
pipeline options of the config. Everything it writes — checkpoints, logs,
the copied shards — lives in one temporary folder that is removed at the
end: the config's experiment folder is neither read nor written.
"""

import copy
import json
import os

import tensorflow as tf

from klassterfork.data import records
from klassterfork.training import builders

SMOKE_STEPS = 3
SMOKE_VIDEOS = 8


def smoke_stages(stages, source, workdir, *, steps=SMOKE_STEPS, videos=SMOKE_VIDEOS):
    """Copies of `stages` that train `steps` steps on the real train records
    and evaluate the first `videos` videos of each validation set.

    Args:
        stages: list of resolved stage dicts.
        source: config Source (for located errors when data is missing).
        workdir: str. The temporary folder (validation subsets, experiment).

    Returns:
        list of stage dicts.
    """
    out = []
    for index, stage in enumerate(stages):
        stage = copy.deepcopy(stage)
        for role, block in (stage.get("datasets") or {}).items():
            if role == "train":
                continue
            folder = os.path.join(workdir, f"stage{index}_{role}")
            _first_videos(block, source, f"datasets.{role}", folder, videos)
        stage.pop("tracking", None)  # a smoke run is not an experiment to track
        loop = stage.setdefault("train_loop", {})
        loop.update(epochs=1, steps_per_epoch=steps, checkpoint_every_steps=10**9,
                    eval_every_epochs=1, progress=False, plot=False, stop_after_steps=None)
        stage.setdefault("meta", {})["experiment_dir"] = os.path.join(workdir, "experiment")
        out.append(stage)
    return out


def _first_videos(block, source, key, folder, videos):
    """Points `block` at a shard of its split's first `videos` records."""
    info = builders.dataset_info(block, source, key)
    split = block.get("split") or "smoke"
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, records.shard_name(split, 0, 1))
    count = 0
    with tf.io.TFRecordWriter(path) as writer:
        for serialized in tf.data.TFRecordDataset(info.files).take(videos):
            writer.write(serialized.numpy())
            count += 1
    manifest = {**info.manifest, "counts": {"written": count}}
    manifest.pop("shards", None)  # the copy is one shard of `count` records
    with open(os.path.join(folder, f"{split}.manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    block.pop("files", None)
    block.pop("num_examples", None)
    block.update(dir=folder, split=split)
