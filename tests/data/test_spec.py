"""The dataset spec, declared once (`data/spec.py`): what derives from it.

The option table in docs/ is generated from the fields; the pipelines take
the spec (at most 4 parameters); the old keyword calls still work and give
the same batches; config errors are located at the option's key; inference
and preflight read their defaults from the spec.
"""

import dataclasses
import inspect
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

from klassterfork.config import options as opts
from klassterfork.config.loader import ConfigError, load_text
from klassterfork.data import pipeline, spec
from klassterfork.evaluation import inference
from klassterfork.training import builders
from tests.data.test_pipeline import take, video_record, write_shards

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_docs_option_table_is_generated_from_the_fields():
    text = (ROOT / "docs" / "options.md").read_text()
    assert text == spec.options_markdown(), (
        "docs/options.md is stale: python -m klassterfork.data.spec > docs/options.md")
    for name in opts.accepted(spec.TrainData) + opts.accepted(spec.EvalData):
        assert f"| `{name}` |" in text


def test_every_option_has_a_doc_and_a_kind():
    for cls in (spec.TrainData, spec.EvalData):
        for name, _, field in opts.flat_fields(cls):
            assert field.metadata["doc"], name
            assert field.metadata["kind"] in opts.KINDS, name
        names = opts.accepted(cls)
        assert len(names) == len(set(names)), "flat names must be unique over the groups"


def test_pipelines_take_at_most_four_parameters():
    for fn in (pipeline.train_dataset, pipeline.eval_dataset):
        assert len(inspect.signature(fn).parameters) <= 4, fn


def test_old_keyword_call_gives_the_new_calls_batches_and_says_the_new_call(tmp_path):
    files = write_shards(tmp_path, [video_record(f"v{i}", 12, i % 3) for i in range(6)])
    old = dict(clip_len=4, crop_size=16, batch_size=2, seed=3, frame_step=2, flip_prob=0.5)
    with pytest.warns(DeprecationWarning, match=r"TrainData\.from_flat"):
        before = take(pipeline.train_dataset(files, **old), 3)
    new = spec.TrainData.from_flat(**{**old, "flip": "keep_labels"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        after = take(pipeline.train_dataset(files, new), 3)
    for (a_clips, a_labels), (b_clips, b_labels) in zip(before, after):
        np.testing.assert_array_equal(a_clips, b_clips)
        np.testing.assert_array_equal(a_labels, b_labels)
    # flip: false (the config default) never flips, whatever flip_prob says.
    never = dataclasses.replace(new, augment=dataclasses.replace(new.augment, flip=False))
    assert never.augment.flip_probability == 0.0 and not never.may_flip


def test_unresolved_manifest_flip_is_refused_by_the_pipeline(tmp_path):
    files = write_shards(tmp_path, [video_record("v0", 8, 0), video_record("v1", 8, 1)])
    manifest_flip = spec.TrainData.from_flat(clip_len=2, crop_size=16, batch_size=2,
                                             flip="manifest")
    with pytest.raises(ValueError, match="with_flip_map"):
        pipeline.train_dataset(files, manifest_flip)
    resolved = manifest_flip.with_flip_map([1, 0])
    assert resolved.augment.flip_label_map == [1, 0]


CONFIG = """{
  datasets: {
    train: {
      dir: records
      split: train
      clip_len: 8
      crop_size: 32
      batch_size: 4
      %s
    }
  }
}
"""


@pytest.mark.parametrize("line, key, at, message", [
    ("crop_sise: 30", "datasets.train.crop_sise", 9, "Did you mean: crop_size"),
    ("crop: square", "datasets.train.crop", 9, "must be one of ['random'"),
    ("flip_prob: 1.5", "datasets.train.flip_prob", 9, "must be in [0, 1]"),
    ("num_segments: 3", "datasets.train.clip_len", 6, "num_segments * new_length"),
    ("rand_augment: {magnitud: 9}", "datasets.train.rand_augment", 9, "magnitud"),
])
def test_block_errors_are_located_at_the_option(line, key, at, message):
    stages, source = load_text(CONFIG % line, "cfg.hjson")
    with pytest.raises(ConfigError) as info:
        builders.check_datasets(stages[0], source)
    assert str(info.value).startswith(f"cfg.hjson:{at}: {key}: "), str(info.value)
    assert message in str(info.value)


def test_inference_views_and_defaults_come_from_the_eval_spec():
    stage = {"datasets": {"val": {"clip_len": 8, "crop_size": 32, "num_clips": 2,
                                  "num_crops": 3, "batch_size": 4}}}
    transform = inference.eval_transform(stage)
    defaults = spec.EvalData.from_flat(clip_len=8, crop_size=32, num_clips=2, num_crops=3,
                                       batch_size=1)
    assert transform["view"]["frame_step"] == defaults.sampling.frame_step
    assert transform["view"]["short_video"] == defaults.sampling.short_video
    assert transform["norm"]["mode"] == defaults.standardize.standardize
    stage["datasets"]["val"]["num_segments"] = 4
    with pytest.raises(inference.PredictError, match="datasets.val.num_segments"):
        inference.eval_transform(stage)


def test_checking_a_config_starts_no_tensorflow_runtime():
    """MultiWorkerMirrored must configure its collectives before TensorFlow's
    runtime starts, and the config is checked before the strategy exists."""
    code = """
import json
from klassterfork.config.loader import load_text
from klassterfork.training import builders
from tensorflow.python.eager import context
cfg = {"datasets": {
    "train": {"dir": "r", "split": "train", "clip_len": 8, "crop_size": 32,
              "batch_size": 4, "frame_step": [1, 2], "standardize": "mean_std",
              "mean": [0.4] * 3, "std": [0.2] * 3, "rand_augment": {"num_layers": 2},
              "random_erasing": {"prob": 0.25}},
    "val": {"dir": "r", "split": "v", "clip_len": 8, "crop_size": 32, "batch_size": 2,
            "num_clips": 2, "num_crops": 3}},
    "model": {"R2Plus1D18": {}}}
stages, source = load_text(json.dumps(cfg), "x.hjson")
builders.validate_stage(stages[0], source)
print("runtime started:", context.context()._context_handle is not None)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "runtime started: False", out.stderr[-2000:]
