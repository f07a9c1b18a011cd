"""Zero-shot end to end through runs/train.py on synthetic motion videos:
train an embedding head with MSE to class-name vectors on horizontal motion,
evaluate on held-out vertical-motion classes by cosine (issue 6)."""

import csv
import json
import os

import numpy as np
import pytest

from klassterfork.cli.train import main
from klassterfork.evaluation import zero_shot
from klassterfork.evaluation.predictions import read_predictions
from tests.training.tiny_data import ALL_LABELS, write_split

GLOVE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "wordvec",
                     "glove.6B.50d.classnames.txt")


def class_vectors(names):
    """GloVe mean-of-words embeddings when the shared subset exists, else fixed
    random unit vectors (the test is about the plumbing, not the words)."""
    if os.path.exists(GLOVE):
        from klassterfork.evaluation.wordvec import embed_class_names, load_word_vectors

        vectors = load_word_vectors(GLOVE, "glove")
        return embed_class_names(names, vectors).matrix
    rng = np.random.default_rng(0)
    m = rng.normal(size=(len(names), 50)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def test_embedding_training_and_zero_shot_eval_on_held_out_classes(tmp_path):
    data = tmp_path / "data"
    write_split(str(data / "seen"), "train", 24, seed=0, classes=(0, 1))
    write_split(str(data / "unseen"), "validation", 8, seed=1, classes=(2, 3))
    np.save(tmp_path / "seen.npy", class_vectors([ALL_LABELS[0], ALL_LABELS[1]]))
    np.save(tmp_path / "unseen.npy", class_vectors([ALL_LABELS[2], ALL_LABELS[3]]))
    exp = tmp_path / "exp"
    config = {
        "meta": {"experiment_dir": str(exp)},
        "datasets": {
            "train": {"dir": str(data / "seen"), "split": "train", "clip_len": 4,
                      "frame_step": 2, "crop_size": 32, "batch_size": 4, "flip": True,
                      "class_embeddings": str(tmp_path / "seen.npy")},
            "val_unseen": {"dir": str(data / "unseen"), "split": "validation", "clip_len": 4,
                           "frame_step": 2, "crop_size": 32, "num_clips": 2, "num_crops": 1,
                           "batch_size": 4, "class_embeddings": str(tmp_path / "unseen.npy")},
        },
        "model": {"R2Plus1D": {"num_classes": None, "blocks_per_stage": [1, 1],
                               "widths": [8, 16], "stem_width": 4,
                               "input_shape": [4, 32, 32, 3],
                               "head": {"EmbeddingHead": {"units": 50, "dropout": 0.05}}}},
        "loss": {"EmbeddingMSE": {}},
        "optimizer": {"Adam": {"learning_rate": 0.01}},
        "train_loop": {"epochs": 4, "seed": 0, "progress": False,
                       "best_metric": "val_unseen/top1"},
    }
    path = tmp_path / "zs.hjson"
    path.write_text(json.dumps(config))
    assert main([str(path)]) == 0

    with open(exp / "stage0" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert "val_unseen/top1" in rows[0] and "val_loss" not in rows[0]
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0]
    top1 = float(rows[-1]["val_unseen/top1"])
    assert 0.0 <= top1 <= 1.0

    # -e writes per-video cosine scores against the held-out class matrix;
    # the reported top-1 is the numpy reference's on those clip-averaged features.
    assert main([str(path), "-e"]) == 0
    preds = read_predictions(str(exp / "stage0" / "predictions_val_unseen"))
    assert preds["scores"].shape == (8, 2)
    assert np.all(np.abs(preds["scores"]) <= 1.0 + 1e-5)  # cosines
    labels = preds["labels"][:, 0]
    expected = zero_shot.top_k_accuracy(preds["scores"], labels, 1)
    with open(exp / "stage0" / "eval_metrics.json") as f:
        assert json.load(f)["val_unseen/top1"] == pytest.approx(expected)
