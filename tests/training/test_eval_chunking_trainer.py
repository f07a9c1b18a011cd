"""Trainer evaluation with `datasets.<val>.views_per_chunk`: the same scores
and metrics as the unchunked evaluation (classifier and zero-shot), and the
model never sees more than batch_size * views_per_chunk clips per call."""

import json

import numpy as np
import pytest
import tensorflow as tf

from klassterfork.config.loader import ConfigError, load_text
from klassterfork.evaluation.predictions import read_predictions
from klassterfork.training.trainer import Stage
from tests.training.tiny_data import write_split

# 4 clips x 3 crops = 12 views, chunks of 5: the last chunk of every video
# holds 2 views and 3 padding views.
VIEWS = {"clip_len": 4, "frame_step": 2, "crop_size": 32, "num_clips": 4,
         "num_crops": 3, "batch_size": 2}


def stage_config(data_dir, exp, matrix_path, views_per_chunk=5):
    block = {"dir": str(data_dir), "split": "validation", **VIEWS}
    config = {
        "meta": {"experiment_dir": str(exp)},
        "datasets": {
            "val": block,
            "val_chunked": {**block, "views_per_chunk": views_per_chunk},
            "val_zs": {**block, "class_embeddings": str(matrix_path)},
            "val_zs_chunked": {**block, "class_embeddings": str(matrix_path),
                               "views_per_chunk": views_per_chunk},
        },
        "model": {"R2Plus1D": {"blocks_per_stage": [1, 1], "widths": [8, 16],
                               "stem_width": 4, "dropout": 0.0,
                               "input_shape": [4, 32, 32, 3]}},
        "train_loop": {"seed": 1, "progress": False},
    }
    return json.dumps(config)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("chunked_eval")
    write_split(str(root / "data"), "validation", 5, seed=4)
    matrix = np.random.default_rng(0).normal(size=(2, 2)).astype(np.float32)
    np.save(root / "classes.npy", matrix)
    return root


def test_chunked_evaluation_equals_unchunked(setup):
    stages, source = load_text(stage_config(setup / "data", setup / "exp",
                                            setup / "classes.npy"))
    stage = Stage(stages[0], source, experiment_dir=str(setup / "exp"), stage_index=0,
                  strategy=tf.distribute.get_strategy())
    model, sizes = stage.model, []

    def counting_model(clips, training=False):
        # Records the number of clips of every executed model call.
        n = tf.py_function(lambda n: sizes.append(int(n)) or n, [tf.shape(clips)[0]],
                           tf.int32)
        with tf.control_dependencies([n]):
            return model(tf.identity(clips), training=training)

    stage.model = counting_model
    metrics = stage.evaluate(predictions_dir=str(setup))
    # Unchunked calls take B x V clips: 5 videos = 2 + 2 + 1 -> 24, 24, 12.
    # Chunked ones at most B x K = 2 x 5: 15 chunks = 7 x 2 + 1 -> 10 x 7, 5.
    unchunked, chunked = [24, 24, 12], [10] * 7 + [5]
    assert sorted(sizes) == sorted(2 * (unchunked + chunked))  # classifier + zero-shot
    for plain, chunks in (("val", "val_chunked"), ("val_zs", "val_zs_chunked")):
        a = read_predictions(str(setup / f"predictions_{plain}"))
        b = read_predictions(str(setup / f"predictions_{chunks}"))
        assert list(a["ids"]) == list(b["ids"])  # file order: 2 shards
        assert sorted(a["ids"]) == [f"validation_{i}" for i in range(5)]
        np.testing.assert_array_equal(a["labels"], b["labels"])
        np.testing.assert_allclose(b["scores"], a["scores"], atol=1e-6, rtol=0)
        assert np.ptp(a["scores"][:, 0]) > 1e-5  # the videos score differently
    probs = read_predictions(str(setup / "predictions_val"))["scores"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    for name in ("top1", "top5", "loss", "videos"):
        assert metrics[f"val_chunked/{name}"] == pytest.approx(metrics[f"val_{name}"],
                                                               abs=1e-6)
    for name in ("top1", "top5", "videos"):
        assert metrics[f"val_zs_chunked/{name}"] == metrics[f"val_zs/{name}"]


def test_bad_views_per_chunk_is_a_located_config_error(setup):
    stages, source = load_text(stage_config(setup / "data", setup / "exp2",
                                            setup / "classes.npy", views_per_chunk=13))
    stage = Stage(stages[0], source, experiment_dir=str(setup / "exp2"), stage_index=0,
                  strategy=tf.distribute.get_strategy())
    with pytest.raises(ConfigError, match=r"datasets.val_chunked.*views_per_chunk"):
        stage.evaluate()
