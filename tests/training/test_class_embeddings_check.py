"""`builders.class_matrix`: an embedding file must be (num_classes, units)."""

import numpy as np
import pytest

from klassterfork.config import loader
from klassterfork.training import builders

CONFIG = """\
{
  datasets: {
    train: {
      dir: records/k700
      split: train
      class_embeddings: EMB
    }
  }
  model: {R2Plus1D: {head: {EmbeddingHead: {units: 300}}}}
}
"""


def _load(tmp_path, matrix):
    emb = tmp_path / "emb.npy"
    np.save(emb, matrix)
    text = CONFIG.replace("EMB", str(emb))
    stages, source = loader.load_text(text, str(tmp_path / "c.hjson"))
    return stages[0]["datasets"]["train"], source, str(emb)


def test_matching_shape_is_normalized_rows(tmp_path):
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(7, 300)).astype(np.float32)
    block, source, _ = _load(tmp_path, matrix)
    got = builders.class_matrix(
        block, source, "datasets.train", units=300, num_classes=7
    )
    want = matrix / np.sqrt((matrix.astype(np.float64) ** 2).sum(1, keepdims=True))
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((7, 50), dict(units=300, num_classes=7)),  # 50-d GloVe beside units: 300
        ((7, 50), dict(units=300)),  # class count unknown
        ((664, 300), dict(units=300, num_classes=700)),
        ((664, 300), dict(num_classes=700)),
    ],
)
def test_wrong_shape_is_a_located_error(tmp_path, shape, kwargs):
    block, source, path = _load(tmp_path, np.ones(shape, np.float32))
    with pytest.raises(loader.ConfigError) as info:
        builders.class_matrix(block, source, "datasets.train", **kwargs)
    msg = str(info.value)
    # Line 6 of CONFIG holds `class_embeddings:`.
    assert msg.startswith(
        f"{tmp_path / 'c.hjson'}:6: datasets.train.class_embeddings: "
    )
    assert path in msg
    want = (kwargs.get("num_classes", shape[0]), kwargs.get("units", shape[1]))
    assert f"expected shape {want}" in msg
    assert f"Received shape {shape}" in msg


def test_no_check_without_units_or_classes(tmp_path):
    block, source, _ = _load(tmp_path, np.ones((3, 5), np.float32))
    got = builders.class_matrix(block, source, "datasets.train")
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, np.full((3, 5), 1 / np.sqrt(5)), rtol=1e-6)


def test_embedding_units_reads_the_head_of_the_stage(tmp_path):
    stages, _ = loader.load_text(CONFIG.replace("EMB", "x.npy"), str(tmp_path / "c.hjson"))
    assert builders.embedding_units(stages[0]) == 300
    assert builders.embedding_units({"model": {"R2Plus1D": {"num_classes": 4}}}) is None


@pytest.mark.parametrize("shape", [(2, 50), (3, 8)])  # GloVe-50 beside units 8; 3 rows, 2 classes
def test_a_run_with_a_mismatched_file_stops_before_training(tmp_path, capsys, shape):
    import json

    from klassterfork.cli.train import main
    from tests.training.tiny_data import write_split

    write_split(str(tmp_path / "data"), "train", 8, seed=0, classes=(0, 1))
    np.save(tmp_path / "emb.npy", np.ones(shape, np.float32))
    config = {
        "meta": {"experiment_dir": str(tmp_path / "exp")},
        "datasets": {"train": {"dir": str(tmp_path / "data"), "split": "train",
                               "clip_len": 4, "crop_size": 32, "batch_size": 4,
                               "class_embeddings": str(tmp_path / "emb.npy")}},
        "model": {"R2Plus1D": {"num_classes": None, "blocks_per_stage": [1, 1],
                               "widths": [8, 8], "stem_width": 4,
                               "input_shape": [4, 32, 32, 3],
                               "head": {"EmbeddingHead": {"units": 8}}}},
        "loss": {"EmbeddingMSE": {}},
        "optimizer": {"Adam": {"learning_rate": 0.01}},
        "train_loop": {"epochs": 1, "progress": False},
    }
    (tmp_path / "c.hjson").write_text(json.dumps(config))
    assert main([str(tmp_path / "c.hjson")]) == 2
    err = capsys.readouterr().err
    assert "datasets.train.class_embeddings" in err and "Traceback" not in err
    assert f"expected shape (2, 8). Received shape {shape}" in err
    assert not (tmp_path / "exp" / "stage0" / "log.csv").exists()
